"""Bias-report metrics (Sharma n.d.): class-wise DI, macro/weighted averages, ROC points, compare_runs."""

import dataclasses

import jax
import numpy as np
import pytest
from sklearn import metrics as skm

from repair_jax import metrics
from repair_jax.errors import UserError


def test_disparate_impact_hand_computation():
    cm = np.array([[5, 1, 0], [2, 6, 2], [0, 1, 3]])
    # class 0: TPR 5/6, FP 2 of the 14 others -> (5/6) / (2/14); class 1: (6/10) / (2/10);
    # class 2: (3/4) / (2/12)
    want = [(5 / 6) / (2 / 14), (6 / 10) / (2 / 10), (3 / 4) / (2 / 16)]
    np.testing.assert_allclose(metrics.disparate_impact(cm), want, rtol=1e-6)


def test_disparate_impact_undefined_is_zero():
    cm = np.array([[3, 0, 0], [1, 0, 0], [0, 0, 0]])  # class 0 has FPR 1/1; class 1 never predicted
    di = np.asarray(metrics.disparate_impact(cm))
    assert np.all(np.isfinite(di))
    np.testing.assert_allclose(di, [1.0, 0.0, 0.0])


def test_disparate_impact_soft_matches_loop(rng):
    y = rng.integers(0, 4, 50)
    probs = rng.dirichlet(np.ones(4), 50)
    want = [probs[y == k, k].mean() / probs[y != k, k].mean() for k in range(4)]
    np.testing.assert_allclose(metrics.disparate_impact_soft(y, probs, 4), want, rtol=1e-5)


def test_averaged_metrics_match_sklearn(rng):
    y = rng.integers(0, 5, 300)
    logits = rng.normal(size=(300, 5)) + 2.0 * np.eye(5)[y] * rng.uniform(0, 1, (300, 1))
    got = metrics.averaged_metrics(y, logits, 5)
    probs = np.asarray(jax.nn.softmax(logits))
    pred = logits.argmax(1)
    for avg in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(y, pred, average=avg, zero_division=0)
        np.testing.assert_allclose([got[f"precision_{avg}"], got[f"recall_{avg}"], got[f"f1_{avg}"]],
                                   [p, r, f], rtol=1e-5)
        np.testing.assert_allclose(got[f"auroc_{avg}"],
                                   skm.roc_auc_score(y, probs, multi_class="ovr", average=avg), rtol=1e-5)
    cm = skm.confusion_matrix(y, pred)
    np.testing.assert_allclose(got["disparate_impact"], metrics.disparate_impact(cm), rtol=1e-6)
    full = metrics.bias_summary(y, logits, 5)
    p, r, f, _ = skm.precision_recall_fscore_support(y, pred, zero_division=0)
    for name, want in (("precision", p), ("recall", r), ("f1", f),
                       ("auroc", [skm.roc_auc_score(y == k, probs[:, k]) for k in range(5)])):
        np.testing.assert_allclose(full["per_class"][name], want, rtol=1e-5)
    np.testing.assert_allclose(full["dob"], np.std(r), rtol=1e-5)
    np.testing.assert_allclose(full["precision_std"], np.std(p), rtol=1e-5)
    np.testing.assert_array_equal(full["confusion_matrix"], cm)
    assert full["f1_weighted"] == got["f1_weighted"]


@pytest.mark.parametrize("drop", [True, False])
def test_roc_curve_matches_sklearn(rng, drop):
    y = rng.integers(0, 2, 120)
    scores = np.round(rng.uniform(size=120) + 0.3 * y, 1)  # rounded: many ties
    got = metrics.roc_curve(y, scores, drop_intermediate=drop)
    fpr, tpr, thr = skm.roc_curve(y, scores, drop_intermediate=drop)
    np.testing.assert_allclose(got["fpr"], fpr)
    np.testing.assert_allclose(got["tpr"], tpr)
    np.testing.assert_allclose(got["thresholds"][1:], thr[1:])
    assert np.isinf(got["thresholds"][0]) and np.isinf(thr[0])


def test_roc_curves_ovr_and_plot(rng, tmp_path):
    from repair_jax.bias import plot_roc_curves

    y = rng.integers(0, 3, 60)
    probs = rng.dirichlet(np.ones(3), 60)
    curves = metrics.roc_curves_ovr(y, probs, 3)
    for k, c in enumerate(curves):
        fpr, tpr, _ = skm.roc_curve(y == k, probs[:, k])
        np.testing.assert_allclose(c["fpr"], fpr)
        np.testing.assert_allclose(c["tpr"], tpr)
        np.testing.assert_allclose(np.trapezoid(c["tpr"], c["fpr"]), skm.roc_auc_score(y == k, probs[:, k]))
    plot_roc_curves(curves, ["a", "b", "c"], tmp_path / "roc.png")
    assert (tmp_path / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- compare

@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, trained_digits_mlp):
    """The session's digits MLP written as two run directories of the same name under two parents."""
    from repair_jax.runs import write_run
    from repair_jax.train import TrainConfig

    _, state, ds = trained_digits_mlp
    base = tmp_path_factory.mktemp("runs")
    cfg = TrainConfig(model="mlp", model_kwargs={"hidden": (64,)}, epochs=10, seed=0)
    info = {"config": dataclasses.asdict(cfg), "class_names": list(ds.class_names),
            "input_shape": list(ds.input_shape)}
    for parent in ("a", "b"):
        (base / parent / "run").mkdir(parents=True)
        write_run(base / parent / "run", info, {"params": state.params, "batch_stats": state.batch_stats})
    return base, state, ds


def test_compare_runs_writes_tables_and_figures(two_runs, tmp_path):
    from repair_jax.bias import compare_runs
    from repair_jax.io import read_json
    from repair_jax.train import predict

    base, state, ds = two_runs
    runs = [base / "a" / "run", base / "b" / "run"]
    rec = compare_runs(runs, tmp_path / "cmp")
    out = tmp_path / "cmp"
    names = [str(p) for p in runs]  # same directory name: the rows are named by their paths
    assert [r["name"] for r in read_json(out / "comparison.json")["rows"]] == names
    assert {p.name for p in out.iterdir()} == {"comparison.json", "comparison.md", "comparison.png",
                                               *(f"roc_{i}_{n.replace('/', '_')}.png" for i, n in enumerate(names))}
    logits, _ = predict(state, ds.test.x)
    pred = logits.argmax(1)
    for row in read_json(out / "comparison.json")["rows"]:
        np.testing.assert_allclose(row["accuracy"], np.mean(pred == ds.test.y), rtol=1e-6)
        np.testing.assert_allclose(row["f1_macro"], skm.f1_score(ds.test.y, pred, average="macro"), rtol=1e-5)
    md = (out / "comparison.md").read_text()
    assert "## Average metrics" in md and "## Class-wise disparate_impact" in md
    assert sum(line.startswith(f"| {names[0]} |") for line in md.splitlines()) == 1  # one average row
    assert len(rec["rows"]) == 2


def test_compare_cli_and_bad_input(two_runs, tmp_path, capsys):
    from repair_jax.cli import main

    base, _, _ = two_runs
    argv = ["compare", str(base / "a" / "run"), "--out", str(tmp_path / "c"), "--no-progress"]
    assert main(argv) == 0
    assert "comparison.json" in capsys.readouterr().out
    assert main(argv) == 2  # an existing output needs --force
    assert "not empty" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "nope"), "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and err.count("\n") == 1
    assert main(["compare", str(base / "a" / "run"), "--out", str(base / "a")]) == 2  # would replace an input
