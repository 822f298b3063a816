"""The CLI contract: train -> run.json + checkpoint, diagnose -> diagnosis.json + PNG, bad input -> exit 2."""

import functools
import json
import subprocess
import sys

import numpy as np
import pytest

from repair_jax.cli import main
from repair_jax.runs import load_run


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
    assert set(d["per_class"]) == {"precision", "recall", "f1", "auroc", "disparate_impact", "disparate_impact_soft"}
    from sklearn import metrics as skm
    run = load_run(run_dir)
    pred = np.asarray(run.classifier().logits(run.dataset().test.x)).argmax(1)
    y = run.dataset().test.y
    assert d["f1_weighted"] == pytest.approx(skm.f1_score(y, pred, average="weighted", zero_division=0), abs=1e-6)
    assert d["recall_macro"] == pytest.approx(skm.recall_score(y, pred, average="macro", zero_division=0), abs=1e-6)
    assert len(d["roc_curves"]) == 10 and set(d["roc_curves"][3]) == {"fpr", "tpr", "thresholds"}
    assert (out / "confusion_matrix.png").stat().st_size > 1000
    assert (out / "roc_curves.png").stat().st_size > 1000
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


def test_help_on_every_subcommand_shows_every_default_and_the_common_flags(capsys):
    """Issue 12 point 6 (every default in --help) and point 1 (--force and --no-progress everywhere)."""
    from repair_jax.cli import SUBCOMMANDS, build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in SUBCOMMANDS:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        text = " ".join(capsys.readouterr().out.split())  # undo the line wrapping
        assert e.value.code == 0 and "usage" in text
        assert "--force" in text and "--no-progress" in text, name
        for action in sub.choices[name]._actions:
            if action.default not in (None, False, "==SUPPRESS==") and not action.required:
                assert f"(default: {action.default})" in text, (name, action.dest)


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
    assert "explain" in BENCHMARKS  # a quick run takes minutes (compiles); its agreement check: test_benchmark_explain.py
    for name, module in BENCHMARKS.items():
        assert callable(importlib.import_module(module).run), name
    res = run_benchmarks(tmp_path, only=["train_throughput"], quick=True)
    rec = json.loads((tmp_path / "train_throughput.json").read_text())
    assert rec["figures"]["models"]["mlp"]["examples_per_s"] > 0
    assert 0 <= rec["figures"]["models"]["cnn"]["input_pipeline_share"] < 1
    assert res["train_throughput"]["benchmark"] == "train_throughput"


def test_cpu_convolution_formulations_are_one_model():
    """The convolution study times three writings of one CNN: their logits and batch gradients agree."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    from benchmarks.cpu_convolution import FORMULATIONS, _data, _forward, _params

    params = _params()
    x, y = _data(4)
    out, grads = {}, {}
    for form in FORMULATIONS:
        xs = jnp.asarray(np.transpose(x, (0, 3, 1, 2)) if form == "nchw" else x)
        logits = _forward(form)
        out[form] = np.asarray(logits(params, xs))
        grads[form] = np.asarray(ravel_pytree(jax.grad(lambda p: jnp.sum(logits(p, xs) ** 2))(params))[0])
    for form in FORMULATIONS[1:]:
        np.testing.assert_allclose(out[form], out["flax_nhwc"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(grads[form], grads["flax_nhwc"], rtol=1e-4, atol=1e-4 * np.abs(grads["flax_nhwc"]).max())


# ----------------------------------------------------------------------------- issue 12: data safety

def _main_err(args):
    """Runs the CLI in this process: (exit code, the non-empty stderr lines)."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            rc = main(args)
        except SystemExit as e:  # argparse's own errors
            rc = e.code
    return rc, [ln for ln in err.getvalue().splitlines() if ln.strip()]


def test_diagnose_never_replaces_what_it_did_not_create(run_dir, tmp_path):
    """Point 1: `diagnose --out DIR` keeps an existing DIR without --force, and never replaces its own run."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    rc, err = _main_err(["diagnose", "--run", str(run_dir), "--out", str(out)])
    assert rc == 2 and len(err) == 1 and "--force" in err[0] and (out / "keep.txt").exists()
    before = (run_dir / "checkpoint.msgpack").read_bytes()
    rc, err = _main_err(["diagnose", "--run", str(run_dir), "--out", str(run_dir), "--force"])
    assert rc == 2 and "would replace the input" in err[0]
    rc, err = _main_err(["diagnose", "--run", str(run_dir), "--out", str(run_dir.parent), "--force"])
    assert rc == 2 and "would replace the input" in err[0]
    assert (run_dir / "checkpoint.msgpack").read_bytes() == before
    from repair_jax.diagnosis import diagnose_run
    from repair_jax.errors import UserError
    with pytest.raises(UserError, match="not empty"):  # the library default is not to replace either
        diagnose_run(run_dir, out)
    assert main(["diagnose", "--run", str(run_dir), "--out", str(out), "--force"]) == 0
    assert (out / "diagnosis.json").is_file() and not (out / "keep.txt").exists()


def _read_only_dir(tmp_path):
    """A directory this user cannot create files in (as root, chmod does not stop writes: /sys does)."""
    import os
    if os.geteuid() == 0:
        return "/sys"
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    return str(ro)


@pytest.mark.parametrize("args, message", [
    (["train", "--dataset", "npz:{tmp}/empty.npz"], "holds no examples"),
    (["train", "--dataset", "npz:{tmp}/float.npz"], "labels must be whole class indices"),
    (["train", "--out", "{tmp}/file.txt/a"], "which is a file"),
    (["train", "--out", "{ro}/a"], "cannot create files"),
    (["train", "--seed", "-1"], "--seed"),
    (["train", "--seed", "1e20"], "whole number"),
    (["train", "--init-seed", str(2**32)], "4294967295"),
    (["train", "--dataset", "mnist", "--data-dir", "{tmp}/tfds"], "not prepared"),
    (["train", "--lr", "1e6", "--epochs", "1"], "diverged at epoch 1"),
    (["train", "--train-limit", "5"], "smaller than the 10 classes"),
    (["repair", "--run", "{run}", "--pair", "1,2", "--out", "{tmp}/file.txt"], "is a file"),
    (["repair", "--run", "{tmp}/missing", "--pair", "1,2", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["repair", "--run", "{run}", "--pairs", "1,2;3,4;2,1"], "given twice"),
    (["irepair", "--run", "{tmp}/missing", "--class", "1", "--repair-size", "2", "--ub", "0"], "--ub must be >= 1"),
    # issue 26: a class named twice, a split left empty, a run given twice, a bad index with a nested --out
    (["irepair", "--run", "{run}", "--classes", "1", "1", "--repair-size", "2"], "names class 1 more than once"),
    (["train", "--dataset", "npz:{tmp}/small.npz", "--epochs", "1"], "the val split is empty"),
    (["compare", "{run}", "{run}/"], "is given twice"),
    (["explain", "--run", "{run}", "--index", "100000", "--methods", "grad", "--out", "{tmp}/a/b/c"],
     "index 100000 is out of range"),
    (["diagnose", "--run", "{tmp}/corrupt_ckpt", "--out", "{tmp}/a/b"], "corrupt"),
])
def test_every_bad_input_is_one_line_exit_2_before_any_work(run_dir, tmp_path, args, message):
    """Point 5: one line, exit 2, no traceback, nothing written; flags are checked before a run is loaded
    (the `{tmp}/missing` run would be reported otherwise)."""
    (tmp_path / "file.txt").write_text("not a directory")
    (tmp_path / "tfds").mkdir()
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 3, 3), np.float32), y=np.zeros(0, np.int64))
    x = np.random.default_rng(0).random((40, 3, 3)).astype(np.float32)
    np.savez(tmp_path / "float.npz", x=x, y=np.repeat(np.arange(4), 10) + 0.5)
    np.savez(tmp_path / "small.npz", x=x[:12], y=np.repeat(np.arange(4), 3))  # 3 per class: no validation example
    import shutil
    shutil.copytree(run_dir, tmp_path / "corrupt_ckpt")
    (tmp_path / "corrupt_ckpt" / "checkpoint.msgpack").write_bytes(b"\x00" * 8)
    subst = {"{tmp}": str(tmp_path), "{run}": str(run_dir), "{ro}": _read_only_dir(tmp_path)}
    args = [functools.reduce(lambda a, kv: a.replace(*kv), subst.items(), a) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "a")]
    rc, err = _main_err([*args, "--no-progress"])
    assert rc == 2 and len(err) == 1 and message in err[0], err
    assert err[0].startswith(f"repair-jax {args[0]}: error:")
    assert not (tmp_path / "a").exists() and (tmp_path / "file.txt").read_text() == "not a directory"  # nor a/b
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".")]


def test_files_and_directories_follow_the_umask(tmp_path):
    """Point 6: under umask 022 a run directory is 0755 and its files 0644 (mkstemp/mkdtemp give 0600/0700)."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        assert main(["train", "--epochs", "0", "--model-kwargs", '{"hidden": [4]}', "--out", str(tmp_path / "r"),
                     "--no-progress"]) == 0
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)
    assert mode(tmp_path / "r") == 0o755
    assert mode(tmp_path / "r" / "run.json") == 0o644 and mode(tmp_path / "r" / "checkpoint.msgpack") == 0o644


def test_safe_filenames_need_no_shell_quoting():
    """Point 6: plot names built from method labels such as ``w-os(0.1)``."""
    import shlex

    from repair_jax.io import safe_filename
    assert safe_filename("w-os(0.1)") == "w-os_0.1"
    assert safe_filename("orig-ft") == "orig-ft"
    for label in ("w-os(0.1)", "a b/c", "T-shirt/top", "x;rm -rf", "(", "ä"):
        name = safe_filename(label) + ".png"
        assert shlex.quote(name) == name and "/" not in name


def test_run_json_records_the_three_seeds(run_dir):
    info = json.loads((run_dir / "run.json").read_text())
    assert {k: info["config"][k] for k in ("seed", "split_seed", "init_seed", "order_seed")} == {
        "seed": 0, "split_seed": 0, "init_seed": 0, "order_seed": 0}


def test_library_imports_neither_benchmarks_nor_experiments():
    """The library is installable alone: no module of repair_jax imports benchmarks or experiments
    (not even inside a function), and only repair_jax* is installed."""
    import ast
    import pathlib
    import tomllib

    root = pathlib.Path(__file__).resolve().parents[1]
    for path in (root / "repair_jax").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in ("benchmarks", "experiments"), (path, name)
    find = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert find["include"] == ["repair_jax*"]


def _env_without_jax_cache(**extra):
    import os

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE", "REPAIR_JAX_COMPILATION_CACHE"))}
    env.update(extra)
    return env


def test_a_subcommand_imports_only_its_own_stack(run_dir, tmp_path):
    """Issue 26 part 2: `diagnose` builds the parser of its own flags only: the explanation stack (1.8 s
    to import) is not imported, nor scikit-learn or scipy.stats (digits are read from scikit-learn's file)."""
    code = ("import sys; from repair_jax.cli import main; "
            f"rc = main(['diagnose', '--run', {str(run_dir)!r}, '--out', {str(tmp_path / 'd')!r}, '--no-progress']); "
            "print(rc, sorted(m for m in ('repair_jax.explain', 'sklearn', 'scipy.stats') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env=_env_without_jax_cache(REPAIR_JAX_COMPILATION_CACHE="off"))
    assert r.stdout.strip().splitlines()[-1] == "0 []", r.stdout + r.stderr


def test_the_compilation_cache_is_on_by_default_and_can_be_moved_or_disabled(run_dir, tmp_path, monkeypatch):
    """The CLI keeps compiled programs in the user cache directory (XDG_CACHE_HOME/repair_jax/xla), in
    REPAIR_JAX_COMPILATION_CACHE when set, nowhere with `off`; an unusable directory is one note, not an error."""
    from repair_jax.compilation_cache import cache_dir_setting

    monkeypatch.delenv("REPAIR_JAX_COMPILATION_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir_setting() == tmp_path / "xdg" / "repair_jax" / "xla"
    for off in ("off", "0", ""):
        monkeypatch.setenv("REPAIR_JAX_COMPILATION_CACHE", off)
        assert cache_dir_setting() is None
    diagnose = [sys.executable, "-m", "repair_jax", "diagnose", "--run", str(run_dir), "--no-progress", "--out"]
    for name, extra, cache in (("default", {}, tmp_path / "xdg" / "repair_jax" / "xla"),
                               ("moved", {"REPAIR_JAX_COMPILATION_CACHE": str(tmp_path / "c")}, tmp_path / "c")):
        env = _env_without_jax_cache(XDG_CACHE_HOME=str(tmp_path / "xdg"), **extra)
        r = subprocess.run([*diagnose, str(tmp_path / name)], capture_output=True, text=True, timeout=300, env=env)
        assert r.returncode == 0, r.stderr
        assert any(cache.iterdir()), name  # compiled programs were written
    import shutil

    shutil.rmtree(tmp_path / "xdg")
    env = _env_without_jax_cache(XDG_CACHE_HOME=str(tmp_path / "xdg"), REPAIR_JAX_COMPILATION_CACHE="off")
    r = subprocess.run([*diagnose, str(tmp_path / "off")], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and not (tmp_path / "xdg" / "repair_jax").exists()  # (matplotlib keeps its own there)
    env = _env_without_jax_cache(REPAIR_JAX_COMPILATION_CACHE=str(tmp_path / "file.txt" / "c"))
    (tmp_path / "file.txt").write_text("a file")
    r = subprocess.run([*diagnose, str(tmp_path / "bad")], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and "note: compilation cache off: cannot use" in r.stderr
