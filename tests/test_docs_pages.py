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
