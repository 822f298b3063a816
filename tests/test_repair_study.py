"""The WR study end to end at smoke size: results.jsonl / summary.json / table.md, resumability,
the `repair-jax repair` CLI and its errors, the experiment scripts' --smoke modes and the notebook."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from repair_jax.cli import main
from repair_jax.runs import train_run
from repair_jax.data import load_dataset
from repair_jax.errors import UserError
from repair_jax.models import create_model, init_variables
from repair_jax.repair import RepairConfig, Targets, run_study
from repair_jax.repair import read_study_records
from repair_jax.stats import InsufficientSeedsWarning
from repair_jax.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"method", "rho", "seed", "accuracy", "target_error", "error_kind", "confusion_matrix", "wall_time"}


@pytest.fixture(scope="module")
def tiny_study():
    ds = load_dataset("digits")
    ds = dataclasses.replace(ds, train=ds.train.subset(np.arange(256)))
    model = create_model("cnn", 10, width=2, dense=8)
    v = init_variables(model, jax.random.PRNGKey(0), ds.input_shape)
    cfg = RepairConfig(epochs=1, lr=1e-3, seeds=2, rhos=(0.5,), methods=("orig", "orig-ft", "w-bn", "w-os"))
    return model, v, ds, cfg


def test_study_outputs_and_resume(tiny_study, tmp_path):
    model, v, ds, cfg = tiny_study
    out = tmp_path / "study"
    with pytest.warns(InsufficientSeedsWarning, match="2 seed"):  # 2 vs 2 runs: p >= 0.121 always
        s = run_study(model, v, ds, Targets(((3, 5),)), out, cfg, progress=False, plots=False)
    recs = read_study_records(out)
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
    # no fine-tuned method can be significant with 2 seeds: recorded, and never called repaired
    assert s["significance"]["rank_sum_attainable"] is False
    assert not any(r["repaired"] for r in s["rows"] if r["method"] == "w-bn")
    # resuming skips every finished run; a torn last line costs only that run and is cut
    n = len(recs)
    with pytest.warns(InsufficientSeedsWarning):
        run_study(model, v, ds, Targets(((3, 5),)), out, cfg, progress=False, plots=False)
    assert len(read_study_records(out)) == n
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])
    with pytest.warns(InsufficientSeedsWarning):
        run_study(model, v, ds, Targets(((3, 5),)), out, cfg, progress=False, plots=False)
    assert len(read_study_records(out)) == n
    assert all(json.loads(line) for line in (out / "results.jsonl").read_text().splitlines())


def test_study_refuses_another_configuration(tiny_study, tmp_path):
    """An old --out of another target, learning rate or model is refused with the differing field;
    force restarts it; more seeds or methods resume it."""
    model, v, ds, cfg = tiny_study
    cfg = dataclasses.replace(cfg, methods=("orig", "orig-ft", "w-os"), seeds=1)
    out = tmp_path / "study"
    study = lambda *a, **k: run_study(*a, progress=False, plots=False, **k)
    with pytest.warns(InsufficientSeedsWarning):
        study(model, v, ds, Targets(((3, 5),)), out, cfg)
    with pytest.raises(UserError, match=r"targets\.groups\.0\.1 is 5 there and 8 now"):
        study(model, v, ds, Targets(((3, 8),)), out, cfg)
    with pytest.raises(UserError, match=r"repair\.lr is 0\.001 there and 0\.01 now"):
        study(model, v, ds, Targets(((3, 5),)), out, dataclasses.replace(cfg, lr=1e-2))
    other = init_variables(model, jax.random.PRNGKey(1), ds.input_shape)
    with pytest.raises(UserError, match=r"model\.variables_sha256"):
        study(model, other, ds, Targets(((3, 5),)), out, cfg)
    with pytest.warns(InsufficientSeedsWarning):
        study(model, other, ds, Targets(((3, 5),)), out, cfg, force=True)
    with pytest.raises(UserError, match=r"model\.variables_sha256"):  # now bound to the other weights
        study(model, v, ds, Targets(((3, 5),)), out, cfg)
    with pytest.raises(UserError, match="not a directory"):
        study(model, v, ds, Targets(((3, 5),)), out / "results.jsonl", cfg)


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
    assert {r["method"] for r in read_study_records(out)} == {"orig", "orig-ft", "w-os"}
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


def test_notebook_executes_at_smoke_size(tmp_path, run_notebook):
    _, text = run_notebook("weighted_repair.ipynb", REPAIR_OUT=tmp_path)
    assert "| w-bn(0.5) |" in text and "best rank sum" in text and "w-os(0.001): accuracy" in text


def test_repaired_verdict_absolute_and_relative_lambda2():
    """'repaired' = error -lambda1 or more vs orig-ft, accuracy loss within lambda2 (points, or a
    fraction of orig-ft's accuracy: Zhong et al. 2022, Sec. 2.2.3), error p < 0.05."""
    from types import SimpleNamespace

    from repair_jax.repair import format_table, summarize_study

    def recs(accs, errs):
        return [{"accuracy": a, "target_error": e} for a, e in zip(accs, errs)]

    # orig-ft: accuracy 0.80, error 0.100; w-os: deterministic, error -30% (one-sample t-test of the
    # 5 orig-ft runs against 0.070: p < 1e-5), accuracy -0.9 points: inside 1 point, outside 1% of 0.80
    runs = {("orig", None): recs([0.81], [0.1]),
            ("orig-ft", None): recs([0.799, 0.800, 0.801, 0.800, 0.800], [0.099, 0.100, 0.101, 0.100, 0.100]),
            ("w-os", 0.3): recs([0.791], [0.070])}
    ds = SimpleNamespace(class_names=[str(i) for i in range(10)], name="toy", multilabel=False)
    verdict = {}
    for relative in (False, True):
        cfg = RepairConfig(seeds=5, lambda2=0.01, lambda2_relative=relative)
        s = summarize_study(runs, {}, {}, Targets(((3, 5),)), ds, cfg)
        row = next(r for r in s["rows"] if r["method"] == "w-os")
        assert row["err_p"] < 0.05 and np.isclose(row["error_reduction_vs_orig_ft"], 0.3)
        verdict[relative] = row["repaired"]
        assert ("1% of orig-ft's accuracy" in format_table(s)) == relative
    assert verdict == {False: True, True: False}


def _toy_summary(runs, seeds):
    from types import SimpleNamespace

    from repair_jax.repair import format_table, summarize_study

    ds = SimpleNamespace(class_names=[str(i) for i in range(10)], name="toy", multilabel=False)
    s = summarize_study(runs, {}, {}, Targets(((3, 5),)), ds, RepairConfig(seeds=seeds))
    return {r["label"]: r for r in s["rows"]}, s, format_table(s)


def test_deterministic_method_is_one_value_not_several_samples():
    """w-os runs once: its value is compared with orig-ft's runs by a one-sample t-test, not repeated
    as 3 samples of a rank-sum test (which would give p = 0.0495 whatever orig-ft's spread)."""
    import scipy.stats

    recs = lambda accs, errs: [{"accuracy": a, "target_error": e} for a, e in zip(accs, errs)]
    base_err = [0.05, 0.10, 0.15]
    runs = {("orig", None): recs([0.80], [0.1]), ("orig-ft", None): recs([0.80, 0.80, 0.80], base_err),
            ("w-os", 0.3): recs([0.80], [0.04])}
    rows, s, table = _toy_summary(runs, seeds=3)
    row = rows["w-os(0.3)"]
    assert row["runs"] == 1 and row["deterministic"]
    assert row["err_p"] == pytest.approx(scipy.stats.ttest_1samp(base_err, 0.04).pvalue)
    assert row["err_p"] > 0.05 and row["repaired"] is False and row["verdict"] == "no"
    assert row["err_a12"] == 0.0  # below every orig-ft run
    assert "ttest_1samp" in s["significance"]["deterministic_test"] and "(t)" in table
    # orig-ft's runs all equal: no test is possible -> 'untested', not repaired
    runs[("orig-ft", None)] = recs([0.80] * 3, [0.1] * 3)
    rows, _, table = _toy_summary(runs, seeds=3)
    assert rows["w-os(0.3)"]["err_p"] is None and rows["w-os(0.3)"]["verdict"] == "untested"
    assert "| untested |" in table and "nan" not in table


def test_two_seeds_warn_and_claim_no_significance():
    """With 2 seeds the rank-sum test cannot reach p < 0.05 (min p = ranksums of [0,1] vs [2,3]):
    a warning, a record in the summary, and a fully separated fine-tuned method is 'untested'."""
    import scipy.stats

    recs = lambda accs, errs: [{"accuracy": a, "target_error": e} for a, e in zip(accs, errs)]
    runs = {("orig", None): recs([0.80], [0.1]), ("orig-ft", None): recs([0.80, 0.80], [0.10, 0.11]),
            ("w-loss", 0.5): recs([0.80, 0.80], [0.01, 0.02])}
    with pytest.warns(InsufficientSeedsWarning, match="cannot reach p < 0.05"):
        rows, s, table = _toy_summary(runs, seeds=2)
    sig = s["significance"]
    assert sig["rank_sum_attainable"] is False
    assert sig["rank_sum_min_p"] == pytest.approx(scipy.stats.ranksums([0, 1], [2, 3]).pvalue)
    assert rows["w-loss(0.5)"]["verdict"] == "untested" and rows["w-loss(0.5)"]["repaired"] is False
    assert "cannot reach p < 0.05" in table



def test_study_plot_names_need_no_shell_quoting(tmp_path, digits):
    """Issue 12 point 6: "confusion_w-os(0.5).png" needed quoting in a shell; names are plain now."""
    import re

    import jax

    from repair_jax.models import create_model, init_variables
    from repair_jax.repair import RepairConfig, Targets, run_study

    model = create_model("cnn", 10, width=2, dense=8)
    variables = init_variables(model, jax.random.PRNGKey(0), digits.input_shape)
    cfg = RepairConfig(epochs=1, seeds=1, rhos=(0.5,), methods=("orig", "orig-ft", "w-os"))
    with pytest.warns(Warning):  # one seed: no significance test possible (warned, never claimed)
        run_study(model, variables, digits, Targets(((3, 5),)), tmp_path / "s", cfg, progress=False)
    pngs = sorted(p.name for p in (tmp_path / "s").glob("*.png"))
    assert "confusion_w-os_0.5.png" in pngs
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in pngs)


def test_progress_never_counts_past_its_total(tiny_study, tmp_path, capsys):
    """Issue 26: `make quickstart` printed "repair runs: 34/27"; every run is counted once, and the last
    line reads total/total."""
    import re

    model, v, ds, cfg = tiny_study
    with pytest.warns(InsufficientSeedsWarning):
        run_study(model, v, ds, Targets(((3, 5),)), tmp_path / "s", cfg, progress=True, plots=False)
    counts = [tuple(map(int, m)) for m in re.findall(r"repair runs: (\d+)/(\d+)", capsys.readouterr().err)]
    assert counts and all(done <= total for done, total in counts), counts
    assert counts[-1][0] == counts[-1][1] and [d for d, _ in counts] == list(range(1, len(counts) + 1))
