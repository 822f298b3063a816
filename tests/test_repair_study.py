"""The WR study end to end at smoke size: results.jsonl / summary.json / table.md, resumability,
the `repair-jax repair` CLI and its errors, the experiment scripts' --smoke modes and the notebook."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import jax
import numpy as np
import pytest

from repair_jax.cli import main, train_run
from repair_jax.data import load_dataset
from repair_jax.io import read_jsonl
from repair_jax.models import create_model, init_variables
from repair_jax.repair import RepairConfig, Targets, run_study
from repair_jax.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"method", "rho", "seed", "accuracy", "target_error", "error_kind", "confusion_matrix", "wall_time"}


def test_study_outputs_and_resume(tmp_path):
    ds = load_dataset("digits")
    ds = dataclasses.replace(ds, train=ds.train.subset(np.arange(256)))
    model = create_model("cnn", 10, width=2, dense=8)
    v = init_variables(model, jax.random.PRNGKey(0), ds.input_shape)
    cfg = RepairConfig(epochs=1, lr=1e-3, seeds=2, rhos=(0.5,), methods=("orig", "orig-ft", "w-bn", "w-os"))
    out = tmp_path / "study"
    s = run_study(model, v, ds, Targets(((3, 5),)), out, cfg, progress=False, plots=False)
    recs = read_jsonl(out / "results.jsonl")
    assert all(KEYS <= set(r) for r in recs)
    assert {r["method"] for r in recs} == {"orig", "orig-ft", "w-bn", "w-os"}
    assert {r["error_kind"] for r in recs} == {"type1conf"}
    # orig-ft and the selected w-bn ran with seeds 0 and 1; orig and w-os once (deterministic)
    assert sorted(r["seed"] for r in recs if r["method"] == "orig-ft") == [0, 1]
    assert len([r for r in recs if r["method"] == "w-os"]) >= 1
    labels = [r["label"] for r in s["rows"]]
    assert labels[:2] == ["orig", "orig-ft"] and "w-bn(0.5)" in labels
    assert json.loads((out / "summary.json").read_text())["rows"][0]["method"] == "orig"
    assert "| w-bn(0.5) |" in (out / "table.md").read_text()
    # resuming skips every finished run; a torn last line costs only that run
    n = len(recs)
    run_study(model, v, ds, Targets(((3, 5),)), out, cfg, progress=False, plots=False)
    assert len(read_jsonl(out / "results.jsonl")) == n
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])
    run_study(model, v, ds, Targets(((3, 5),)), out, cfg, progress=False, plots=False)
    assert len(read_jsonl(out / "results.jsonl")) == n


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "mlp"
    train_run(TrainConfig(dataset="digits", model="mlp", model_kwargs={"hidden": [16]}, epochs=0), out,
              progress=False)
    return out


def test_cli_repair_and_errors(mlp_run, tmp_path, capsys):
    out = tmp_path / "rep"
    rc = main(["repair", "--run", str(mlp_run), "--pair", "3,5", "--methods", "w-os", "--seeds", "2",
               "--epochs", "1", "--rhos", "0.5", "--out", str(out), "--no-progress"])
    assert rc == 0
    assert "| w-os(" in capsys.readouterr().out
    assert {r["method"] for r in read_jsonl(out / "results.jsonl")} == {"orig", "orig-ft", "w-os"}
    bad = [["--pair", "3,5", "--methods", "w-bn"],          # MLP has no BatchNorm
           ["--pair", "3,cat"],                             # unknown class name
           ["--pair", "3,5", "--triplet", "1,2,3"],         # two target kinds
           ["--pair", "3,3"],                               # same class twice
           ["--pair", "3,5", "--rhos", "1.5"],              # rho outside [0, 1]
           ["--pair", "3,5", "--methods", "w-xyz"]]
    for extra in bad:
        rc = main(["repair", "--run", str(mlp_run), *extra, "--out", str(tmp_path / "x"), "--no-progress"])
        assert rc == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("repair-jax repair: error:") and "Traceback" not in err


def test_cifar_experiment_smoke_on_mock_data(tmp_path):
    from experiments.wr_cifar import main as cifar_main

    rc = cifar_main(["--smoke", "--setting", "cifar10_resnet18", "--studies", "pair", "--methods", "w-os",
                     "--seeds", "1", "--out", str(tmp_path / "o"), "--no-progress"])
    assert rc == 0
    recs = read_jsonl(tmp_path / "o" / "cifar10_resnet18" / "pair" / "results.jsonl")
    assert {r["method"] for r in recs} == {"orig", "orig-ft", "w-os"}
    assert "| orig-ft |" in (tmp_path / "o" / "cifar10_resnet18" / "tables.md").read_text()
    assert cifar_main(["--smoke", "--setting", "nope"]) == 2


def test_multilabel_study_smoke_on_digits_multilabel(tmp_path):
    """The WR study end to end on the multi-label composites: BCE model, type2conf targets, mAP."""
    from experiments.wr_fashion_mnist import main as wr_main

    out = tmp_path / "ml"
    assert wr_main(["--smoke", "--dataset", "digits_multilabel", "--settings", "pair", "--methods", "w-os",
                    "--out", str(out), "--no-progress"]) == 0
    recs = read_jsonl(out / "pair" / "results.jsonl")
    assert {r["method"] for r in recs} == {"orig", "orig-ft", "w-os"}
    assert {r["error_kind"] for r in recs} == {"type2conf"}
    table = (out / "tables.md").read_text()
    assert "test mAP" in table and "| mAP |" in table


def test_notebook_executes_at_smoke_size(tmp_path):
    import nbclient
    import nbformat

    nb = nbformat.read(ROOT / "notebooks" / "weighted_repair.ipynb", as_version=4)
    os.environ["REPAIR_SMOKE"], os.environ["REPAIR_OUT"] = "1", str(tmp_path)
    try:
        nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(ROOT)}}).execute()
    finally:
        os.environ.pop("REPAIR_SMOKE"), os.environ.pop("REPAIR_OUT")
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "| w-bn(0.5) |" in text and "best rank sum" in text
