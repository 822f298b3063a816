"""The generated docs pages (docs/_ext/generate_pages.py) show the committed result files' numbers
unchanged: every Markdown table of ``experiments/results/`` verbatim, every scalar of
``benchmarks/results/*.json`` in its row (issue 13: "the results page's numbers equal the result files'")."""

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def pages(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("generate_pages", ROOT / "docs" / "_ext" / "generate_pages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "OUT", tmp_path)  # figures copied / plotted here, not into docs/
    return module


def test_results_page_holds_every_result_table_verbatim(pages):
    page = pages.results_page()
    directories = sorted(p for p in (ROOT / "experiments" / "results").iterdir() if p.is_dir())
    assert directories
    for directory in directories:
        assert f"\n## {directory.name}\n" in page
        for md in directory.rglob("*.md"):
            if md.name == "README.md":
                continue
            for line in md.read_text().splitlines():
                if line.startswith("|"):  # table rows: the numbers
                    assert line in page, f"{md.relative_to(ROOT)}: row missing from the results page: {line}"
        experiment = directory / "experiment.json"
        if experiment.is_file():
            command = json.loads(experiment.read_text()).get("command")
            assert command is None or f"`{command}`" in page


def test_benchmarks_page_shows_every_figure_of_every_json(pages):
    page = pages.benchmarks_page()
    files = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
    assert files
    for path in files:
        assert f"\n## {path.stem}\n" in page
        for key, value in pages._flatten(json.loads(path.read_text()).get("figures", {})):
            assert f"| {key} | {value} |" in page, f"{path.name}: {key} = {value} missing"
    # a number is shown as the file has it, to 4 significant digits
    assert pages._fmt(0.123456) == "0.1235" and re.search(r"\| [\w.]+ \| [-0-9.e+]+ \|", page)


def test_gpu_section_shows_each_gpu_figure_next_to_its_cpu_figure(pages, tmp_path, monkeypatch):
    """Issue 27: the accelerator suite's `<name>_gpu.json` next to `<name>.json`, with the speed-up; a time
    of another size or data set is not given a ratio; a part that did not run says why."""
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    cpu = {"dataset": "fashion_mnist", "fit_s": 8.0, "row": {"n": 100, "ours_s": 1.0, "examples_per_s": 50.0},
           "big": {"n_train": 6000, "seconds": 3.0}, "ratio": 0.5}
    gpu = {"dataset": "fashion_mnist", "fit_s": 2.0, "row": {"n": 100, "ours_s": 0.5, "examples_per_s": 200.0},
           "big": {"n_train": 60000, "seconds": 1.0}, "ratio": 0.7}
    (results / "a.json").write_text(json.dumps({"figures": cpu, "date": "d1"}))
    (results / "a_gpu.json").write_text(json.dumps({"figures": gpu, "status": "ok", "device_kind": "H100"}))
    (results / "b.json").write_text(json.dumps({"figures": {"x_s": 1.0}}))
    (results / "b_gpu.json").write_text(json.dumps({"figures": {}, "status": "skipped", "reason": "no data\nmore"}))
    monkeypatch.setattr(pages, "ROOT", tmp_path)
    section = pages.gpu_section()
    assert "| fit_s | 8 | 2 | 4x |" in section
    assert "| row.ours_s | 1 | 0.5 | 2x |" in section
    assert "| row.examples_per_s | 50 | 200 | 4x |" in section  # a rate: GPU / CPU
    assert "| big.seconds | 3 | 1 | not comparable: n_train 6000 (CPU) vs 60000 (GPU) |" in section
    assert "| ratio |" not in section  # a ratio is neither a time nor a rate
    assert "**b**" in section and "the GPU part skipped: no data" in section
    rows = pages.gpu_against_cpu({"dataset": "digits", "t_s": 1.0}, {"dataset": "fashion_mnist", "t_s": 0.1})
    assert rows == [["t_s", 1.0, 0.1, "not comparable: data set digits (CPU) vs fashion_mnist (GPU)"]]
