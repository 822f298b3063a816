"""The accelerator suite (benchmarks/gpu.py, issue 27): its rehearsal runs every part end to end on the CPU at
small size, so that the rare GPU call does not fail on a typo; bad input is one line and exit status 2."""

import json
import sys

import jax
import pytest

from benchmarks.__main__ import main
from benchmarks.gpu import COMMITTED, PARTS, _run_child, torch_status

RECORD_FIELDS = ("benchmark", "status", "call", "time_limit_s", "figures", "suite", "rehearsal", "device_kind",
                 "backend", "jax_version", "torch", "fashion_mnist_dir", "packages", "machine", "wall_time", "date")


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="refuses only where there is no accelerator")
def test_gpu_suite_refuses_on_cpu_with_one_line(tmp_path, capsys):
    assert main(["--gpu", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs a GPU or TPU" in err and "--rehearse" in err
    assert not list(tmp_path.iterdir())


def _exit_status(argv) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's own errors (repair_jax.cli.common.Parser: one line, exit 2)
        return e.code


@pytest.mark.parametrize("argv, message", [
    (["--gpu", "--rehearse", "--out", str(COMMITTED)], "--out other than"),
    (["--gpu", "--rehearse", "--only", "influence,nope"], "unknown GPU suite part"),
    (["--gpu", "--rehearse", "--budget", "0"], "--budget must be > 0"),
    (["--rehearse"], "go with --gpu"),
    (["--gpu", "--rehearse", "--quick"], "does not go with --gpu"),
])
def test_gpu_suite_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert _exit_status(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_gpu_suite_data_dir_without_idx_files_is_refused(tmp_path, capsys):
    assert main(["--gpu", "--rehearse", "--data-dir", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no Fashion-MNIST IDX files" in err


def test_a_part_that_fails_or_hangs_is_recorded_not_raised():
    status, reason = _run_child([sys.executable, "-c", "raise SystemExit('boom in a part')"], 60)
    assert status == "failed" and reason.splitlines()[0] == "boom in a part"
    status, reason = _run_child([sys.executable, "-c", "import time; time.sleep(120)"], 1)
    assert status == "timeout" and "time limit" in reason


@pytest.mark.slow
def test_gpu_suite_rehearsal_writes_every_part(tmp_path, capsys):
    """The whole suite at rehearsal size, each part in its own process, as the GPU call runs it."""
    assert main(["--gpu", "--rehearse", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "GPU suite (rehearsal" in printed
    torch_device, _ = torch_status(rehearse=True)
    for name in PARTS:
        rec = json.loads((tmp_path / f"{name}_gpu.json").read_text())
        assert rec["status"] == "ok", (name, rec.get("reason"))
        assert set(RECORD_FIELDS) <= set(rec), (name, set(RECORD_FIELDS) - set(rec))
        assert rec["benchmark"] == name and rec["rehearsal"] and rec["device_kind"] and rec["figures"]
        assert rec["jax_version"] == jax.__version__ == rec["packages"]["jax"]
        if PARTS[name].torch:
            assert rec["torch"]["available"] == (torch_device is not None)
            assert rec["call"]["torch_device"] == torch_device
    figures = {name: json.loads((tmp_path / f"{name}_gpu.json").read_text())["figures"] for name in PARTS}
    assert figures["influence_projection"]["scale"]["fit_s"] > 0
    assert figures["influence_projection"]["memory"] == "not measured (memory=False)"
    ekfac = figures["influence_ekfac"]
    assert "mlp_vs_cg" not in ekfac
    assert ekfac["mlp_n1300"]["n_train"] == 1300 and ekfac["mlp_n1300"]["fit_points"].startswith("train, val and pool")
    for case in ("mlp", "cnn", "resnet18"):
        row = figures["per_example_grads"][case]
        assert row["ours_s"] > 0 and "torch_error" not in row
        assert ("ours_over_torch_func" in row) == (torch_device is not None)
    for model in ("cnn", "resnet18"):
        row = figures["train_throughput"]["models"][model]
        assert row["examples_per_s"] > 0 and "torch_error" not in row
        assert ("ours_over_torch_examples_per_s" in row) == (torch_device is not None)
    assert figures["irepair"]["irepair_over_retrain_wall_time"] > 0
    assert figures["hypergradient"]["full_update"]["seconds_incl_compile"] > 0


def test_influence_parts_without_fashion_mnist_are_skipped_with_their_reason(tmp_path, monkeypatch):
    """On an accelerator without the IDX files the two influence parts write why they did not run (their CPU
    figures are on the real data); nothing runs, so the backend can be pretended here."""
    import repair_jax.data
    from benchmarks.gpu import run_suite

    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(repair_jax.data, "find_fashion_mnist_dir", lambda data_dir=None: None)
    records = run_suite(tmp_path, only=["influence_projection", "influence_ekfac"])
    for name in ("influence_projection", "influence_ekfac"):
        rec = json.loads((tmp_path / f"{name}_gpu.json").read_text())
        assert rec == json.loads(json.dumps(records[name]))
        assert rec["status"] == "skipped" and "Fashion-MNIST IDX files not found" in rec["reason"]
        assert rec["figures"] == {} and rec["backend"] == "gpu" and not rec["rehearsal"]


def test_budget_spent_skips_and_a_part_over_its_limit_is_stopped(tmp_path):
    """Each part's limit keeps the later parts' shares: with 1.5 s for two equal shares the first has
    under a second (skipped), the second is stopped at its limit; both still write their records."""
    from benchmarks.gpu import run_suite

    records = run_suite(tmp_path, rehearse=True, only=["irepair", "hypergradient"], budget_s=1.5)
    assert records["irepair"]["status"] == "skipped" and "budget" in records["irepair"]["reason"]
    assert records["hypergradient"]["status"] == "timeout"
    assert {p.name for p in tmp_path.iterdir()} == {"irepair_gpu.json", "hypergradient_gpu.json"}


def test_a_part_that_fails_with_torch_runs_again_without_it(tmp_path, monkeypatch):
    """A torch that takes the process down (two CUDA libraries in one process) costs torch's figures only."""
    import benchmarks.gpu as suite

    calls = []

    def fake_part(name, call, limit, env):
        calls.append(call)
        if call["torch_device"] is not None:
            return "failed", "Segmentation fault\n...", {}
        return "ok", "", {"ours": 1.0}

    monkeypatch.setattr(suite, "_run_part", fake_part)
    monkeypatch.setattr(suite, "torch_status", lambda rehearse: ("cuda", {"available": True, "device": "cuda"}))
    rec = suite.run_suite(tmp_path, rehearse=True, only=["per_example_grads"])["per_example_grads"]
    assert [c["torch_device"] for c in calls] == ["cuda", None]
    assert rec["status"] == "ok" and rec["figures"] == {"ours": 1.0} and rec["call"]["torch_device"] is None
    assert rec["torch"]["failure"].startswith("the part failed with torch") and "Segmentation fault" in rec["torch"]["failure"]
