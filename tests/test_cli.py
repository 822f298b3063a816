"""The CLI contract: train -> run.json + checkpoint, diagnose -> diagnosis.json + PNG, bad input -> exit 2."""

import json
import subprocess
import sys

import numpy as np
import pytest

from repair_jax.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    rc = main(["train", "--dataset", "digits", "--model", "mlp", "--model-kwargs", '{"hidden": [32]}',
               "--epochs", "10", "--lr", "0.003", "--seed", "0", "--out", str(out), "--no-progress"])
    assert rc == 0
    return out


def test_train_writes_run_json_and_checkpoint(run_dir):
    info = json.loads((run_dir / "run.json").read_text())
    assert info["config"]["model"] == "mlp" and info["class_names"] == [str(i) for i in range(10)]
    assert len(info["history"]) == 10 and 0.8 < info["test_accuracy"] <= 1.0
    assert (run_dir / "checkpoint.msgpack").is_file()
    assert not [p for p in run_dir.parent.iterdir() if p.name.endswith(".tmp")]


def test_diagnose_contract(run_dir, tmp_path, capsys):
    out = tmp_path / "diag"
    assert main(["diagnose", "--run", str(run_dir), "--out", str(out), "--top", "3"]) == 0
    d = json.loads((out / "diagnosis.json").read_text())
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "dob", "class_names", "confusion_matrix",
                "top_pairs", "top_triplets", "per_class"):
        assert key in d
    cm = np.array(d["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 359
    assert d["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert len(d["top_pairs"]) == 3 and set(d["top_pairs"][0]) == {"classes", "type1conf"}
    vals = [p["type1conf"] for p in d["top_pairs"]]
    assert vals == sorted(vals, reverse=True)
    assert set(d["top_triplets"][0]) == {"classes", "cd"}
    assert set(d["per_class"]) == {"precision", "recall", "f1", "auroc"}
    assert (out / "confusion_matrix.png").stat().st_size > 1000
    assert "most confused pairs" in capsys.readouterr().out


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "repair_jax", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["train", "--dataset", "imagenet", "--out", "{tmp}/a"], "unknown dataset"),
    (["train", "--model", "transformer", "--out", "{tmp}/a"], "unknown model"),
    (["train", "--epochs", "-1", "--out", "{tmp}/a"], "epochs"),
    (["train", "--model-kwargs", "{bad", "--out", "{tmp}/a"], "not valid JSON"),
    (["diagnose", "--run", "{tmp}/missing", "--out", "{tmp}/a"], "run directory not found"),
    (["diagnose", "--run", "{tmp}/corrupt", "--out", "{tmp}/a"], "run.json"),
    (["train", "--dataset", "npz:{tmp}/nan.npz", "--out", "{tmp}/a"], "NaN"),
    (["train", "--bogus-flag", "--out", "{tmp}/a"], "unrecognized arguments"),
])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path, args, message):
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "run.json").write_text("{not json")
    x = np.random.default_rng(0).random((40, 3, 3)).astype(np.float32)
    x[0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.repeat(np.arange(4), 10))
    r = _cli(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if "WARNING" not in ln and ln.strip()]
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "a").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_corrupt_checkpoint_is_an_error(run_dir, tmp_path):
    import shutil
    bad = tmp_path / "run"
    shutil.copytree(run_dir, bad)
    ck = bad / "checkpoint.msgpack"
    ck.write_bytes(ck.read_bytes()[:-10])
    r = _cli("diagnose", "--run", str(bad), "--out", str(tmp_path / "d"))
    assert r.returncode == 2 and "corrupt" in r.stderr and not (tmp_path / "d").exists()


def test_existing_output_needs_force(run_dir, tmp_path):
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    r = _cli("train", "--epochs", "0", "--out", str(out))
    assert r.returncode == 2 and "--force" in r.stderr and (out / "keep.txt").exists()


def test_help_on_every_subcommand(capsys):
    from repair_jax.cli import SUBCOMMANDS
    for name in SUBCOMMANDS:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0 and "usage" in capsys.readouterr().out


def test_append_jsonl_survives_a_torn_last_line(tmp_path):
    from repair_jax.io import append_jsonl, read_jsonl
    p = tmp_path / "r.jsonl"
    append_jsonl(p, {"a": 1})
    with open(p, "a") as f:
        f.write('{"a": 2, "b": ')  # a kill in the middle of a write
    assert read_jsonl(p) == [{"a": 1}]
    append_jsonl(p, {"a": 3})
    assert read_jsonl(p) == [{"a": 1}, {"a": 3}]
    assert p.read_text().count("\n") == 2


def test_benchmarks_are_registered_and_train_throughput_runs(tmp_path):
    import importlib

    from benchmarks.__main__ import BENCHMARKS, run_benchmarks
    for name, module in BENCHMARKS.items():
        assert callable(importlib.import_module(module).run), name
    res = run_benchmarks(tmp_path, only=["train_throughput"], quick=True)
    rec = json.loads((tmp_path / "train_throughput.json").read_text())
    assert rec["figures"]["models"]["mlp"]["examples_per_s"] > 0
    assert 0 <= rec["figures"]["models"]["cnn"]["input_pipeline_share"] < 1
    assert res["train_throughput"]["benchmark"] == "train_throughput"


@pytest.mark.parametrize("script, args, message", [
    ("wr_fashion_mnist", ["--width", "0"], "model option width must be a positive number"),
    ("wr_fashion_mnist", ["--ft-lr", "-1"], "learning rate must be positive"),
    ("wr_fashion_mnist", ["--seeds", "0"], "seeds must be >= 1"),
    ("wr_fashion_mnist", ["--settings", "pairs"], "--settings must be"),
    ("wr_fashion_mnist", ["--methods", "w-zz"], "unknown method"),
    ("wr_cifar", ["--setting", "cifar10_resnet18", "--methods", "w-zz"], "unknown method"),
    ("wr_cifar", ["--setting", "cifar10_resnet18", "--studies", "pairs"], "has no study pairs"),
    ("wr_cifar", ["--setting", "cifar10_resnet18", "--seeds", "0"], "seeds must be >= 1"),
    ("guiding_noisy_labels", ["--gamma", "-1"], "gamma, fi_weight and audit_weight must be >= 0"),
    ("guiding_spurious", ["--l2", "0"], "lower-level L2 must be > 0"),
    ("guiding_credit", ["--audit-size", "0"], "--audit-size must be >= 1"),
    ("irepair_table1", ["--correct-size", "0"], "--correct-size must be >= 1"),
    ("irepair_scenarios", ["--lr", "-1"], "learning rate must be positive"),
    ("irepair_rq2_rq3", ["--gamma", "-1"], "gamma must be >= 0"),
    ("influence_loo", ["--k", "0"], "--k must be >= 1"),
    ("influence_ranking", ["--fraction", "1.5"], "--fraction must lie in (0, 1)"),
    ("label_flip_sensitivity", ["--seeds", "0"], "--seeds must be >= 1"),
])
def test_experiment_scripts_reject_bad_options_before_any_work(tmp_path, capsys, script, args, message):
    """Every experiment script: a bad option is one line on stderr and exit 2 before any (possibly
    hours-long) training, and nothing is written."""
    import importlib

    main_ = importlib.import_module(f"experiments.{script}").main
    out = tmp_path / "o"
    assert main_([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{script}: error:") and message in err and "Traceback" not in err
    assert not out.exists()
