"""The model-guiding, influence and Ch. 6 experiment configs at smoke size (load_config +
run_experiment into tmp_path): the result files and a property of their numbers; a resumed guiding
sweep refuses another configuration; bad configs are refused before anything is written."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from repair_jax.errors import UserError
from repair_jax.experiment import load_config, run_experiment
from repair_jax.guiding.bilevel import BilevelConfig
from repair_jax.studies.guiding import CreditStudy, FullGuidingRun, GuidingData, NoisyLabelsStudy, SpuriousStudy
from repair_jax.studies.influence import InfluenceLooStudy, InfluenceRankingStudy, LabelFlipSensitivityStudy

NOISY = "guiding_noisy_labels"
DIGITS = GuidingData("digits", None, 3, (8,))


def _run(name: str, out):
    return run_experiment(load_config(name, smoke=True), out, progress=False)


def _read(path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def noisy_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("noisy") / "o"
    return out, _run(NOISY, out)


@pytest.mark.slow
def test_noisy_labels_smoke(noisy_sweep):
    out, summary = noisy_sweep
    rows = _read(out / "summary.json")["rows"]
    config = load_config(NOISY, smoke=True)
    assert [(r["dataset"], r["seed"]) for r in rows] == [(d.name, s) for d in config.datasets for s in config.seeds]
    for r in rows:
        assert r["n_flipped"] == round(config.noise * r["n_train"])
        for key in ("detect_auroc", "fix_auroc"):
            assert all(0 <= v <= 1 for v in r[key].values())
        # after 3 epochs on 300 points the network's loss already ranks the flipped labels above chance
        assert r["detect_auroc"]["training_loss"] > 0.5
    assert "Table 5.1 analogue" in (out / "tables.md").read_text() == summary["tables"]
    assert _read(out / "experiment.json")["config"]["fields"]["noise"] == config.noise


@pytest.mark.slow
def test_noisy_labels_resume_same_config_trains_nothing_and_other_config_is_refused(noisy_sweep):
    from repair_jax.studies.guiding import run_noisy_labels

    out, summary = noisy_sweep
    config = load_config(NOISY, smoke=True)
    log = (out / "rows.jsonl").read_text()
    assert run_experiment(config, out, progress=False)["rows"] == summary["rows"]
    assert (out / "rows.jsonl").read_text() == log
    other = dataclasses.replace(config, bilevel=dataclasses.replace(config.bilevel, gamma=2.0))
    with pytest.raises(UserError, match="gamma"):
        run_experiment(other, out, progress=False)
    with pytest.raises(UserError, match=r"bilevel\.gamma is 1\.0 there and 2\.0 now"):
        run_noisy_labels(other, out, progress=False)  # the rows log itself, without experiment.json
    assert (out / "rows.jsonl").read_text() == log


@pytest.mark.slow
def test_noisy_labels_fi0_smoke(tmp_path):
    _run(NOISY + "_fi0", tmp_path)
    fields = _read(tmp_path / "experiment.json")["config"]["fields"]
    assert fields["bilevel"]["fi_weight"] == 0.0 and [d["name"] for d in fields["datasets"]] == ["digits"]
    (row,) = _read(tmp_path / "summary.json")["rows"]
    assert row["detect_auroc"]["training_loss"] > 0.5


@pytest.mark.slow
def test_spurious_smoke(tmp_path, fashion_mnist_idx):  # Fashion-MNIST: the small IDX files of conftest
    _run("guiding_spurious", tmp_path)
    rows = _read(tmp_path / "summary.json")["rows"]
    assert [r["dataset"] for r in rows] == ["fashion_mnist"]  # the smoke sweep: the config's first data set
    for r in rows:
        assert set(r["worst_group_accuracy"]) == {"model_guiding", "group_dro", "ssa", "erm"}  # Table 5.4's columns
        for m, worst in r["worst_group_accuracy"].items():  # the worst group is at most the average
            assert 0 <= worst <= r["test_accuracy"][m] + 1e-9
        assert r["F_spu_size"] <= 50
    assert "Table 5.4 analogue" in (tmp_path / "tables.md").read_text()


@pytest.mark.slow
def test_credit_smoke(tmp_path):
    _run("guiding_credit", tmp_path)
    (row,) = _read(tmp_path / "summary.json")["rows"]
    # guiding with the expert's "gender is irrelevant" annotation shrinks the spurious gender weight
    assert abs(row["gender_weight"]["guided"]) < abs(row["gender_weight"]["carved"])
    assert row["noisy_auroc"]["model_guiding"] > 0.7
    assert "credit-limit" in (tmp_path / "tables.md").read_text()


@pytest.mark.slow
def test_full_guiding_smoke(tmp_path):
    _run("guiding_full_fashion_mnist", tmp_path)
    r = _read(tmp_path / "result.json")
    assert abs(r["n_flipped"] / r["n_train"] - 0.2) < 0.01
    assert r["detect_auroc"]["model_guiding"] > 0.7
    assert (tmp_path / "run" / "run.json").is_file() and (tmp_path / "result.md").is_file()


def test_full_guiding_missing_run_is_one_line(tmp_path):
    with pytest.raises(UserError, match="no run.json"):
        run_experiment(FullGuidingRun(run=str(tmp_path / "missing")), tmp_path / "o", progress=False)


@pytest.mark.slow
def test_influence_loo_smoke(tmp_path):
    _run("influence_loo", tmp_path)
    results = _read(tmp_path / "loo.json")["results"]
    logistic = results[0]
    assert logistic["model"] == "logistic_regression" and len(logistic["test_points"][0]["actual"]) == 4
    # softmax regression is strongly convex: influence predicts leave-one-out retraining closely
    assert logistic["pearson_all"] > 0.9
    assert (tmp_path / "loo.png").is_file() and "Pearson" in (tmp_path / "loo.md").read_text()


@pytest.mark.slow
def test_influence_ranking_smoke(tmp_path):
    _run("influence_ranking", tmp_path)
    r = _read(tmp_path / "ranking.json")
    (seed,) = r["per_seed"]
    assert seed["flipped"] == round(0.1 * seed["n_train"])
    # the training loss ranks mislabelled points far above the random rate
    assert r["summary"]["Loss"]["mean"] > 2 * r["flip_fraction"]
    assert r["summary"]["IF-Norm"]["std"] == 0.0  # one seed
    assert (tmp_path / "ranking.png").is_file()


def test_ranking_flips_pair_and_heavy_ink_variants_on_digits():
    """Pair flips move each flipped label to the next class; heavy-ink flips touch heavy-ink training points only;
    both flip as many points as uniform flips, which stay repair_jax.data.flip_labels (the committed setting)."""
    from repair_jax.data import flip_labels, load_dataset
    from repair_jax.studies.influence import ink, ink_groups, ranking_flips, ranking_group

    ds = load_dataset("digits", seed=3, train_limit=400)
    y = np.asarray(ds.train.y)
    uniform = ranking_flips(InfluenceRankingStudy(), ds, 3)
    expected = flip_labels(y, 0.1, ds.num_classes, 3)
    assert np.array_equal(uniform[0], expected[0]) and np.array_equal(uniform[1], expected[1])
    y_pair, pair = ranking_flips(InfluenceRankingStudy(flip="pair"), ds, 3)
    assert pair.sum() == uniform[1].sum() == 40
    assert np.array_equal(y_pair[pair], (y[pair] + 1) % 10) and np.array_equal(y_pair[~pair], y[~pair])
    y_heavy, heavy = ranking_flips(InfluenceRankingStudy(flip="heavy-ink"), ds, 3)
    assert heavy.sum() == 40 and np.all(ink(ds.train.x[heavy]) > ink_groups(ds)[0])
    assert np.all(y_heavy[heavy] != y[heavy]) and np.array_equal(y_heavy[~heavy], y[~heavy])
    with pytest.raises(UserError, match="eligible"):
        ranking_flips(InfluenceRankingStudy(flip="heavy-ink", fraction=0.5), ds, 3)
    name, mask = ranking_group(InfluenceRankingStudy(group="all"), ds)
    assert mask.sum() == len(ds.test) and name == "all test digits"
    light = ranking_group(InfluenceRankingStudy(group="light-ink"), ds)[1]
    assert light.sum() + ranking_group(InfluenceRankingStudy(), ds)[1].sum() == len(ds.test)


def test_ranking_ablation_refuses_duplicate_settings():
    from repair_jax.studies.influence_ranking_ablation import InfluenceRankingAblation, RankingSetting

    one = RankingSetting("a", "none", InfluenceRankingStudy())
    with pytest.raises(UserError, match="unique"):
        InfluenceRankingAblation(settings=(one, one)).validate()


@pytest.mark.slow
def test_influence_ranking_ablation_smoke(tmp_path):
    """Every (setting, seed) once in the log; the summary's paired comparison recomputed from the rows; the loss
    ranks the flipped labels above chance; a resumed run adds nothing."""
    import scipy.stats

    from repair_jax.io import RESUMABLE_HEADER, read_jsonl

    name = "influence_ranking_ablation"
    config = load_config(name, smoke=True)
    summary = _run(name, tmp_path)
    rows = [r for r in read_jsonl(tmp_path / "rows.jsonl") if RESUMABLE_HEADER not in r]
    assert [(r["setting"], r["seed"]) for r in rows] == config.cells()
    for r in rows:
        assert r["flipped"] == round(0.1 * r["n_train"]) and set(r["auroc"]) == set(r["top_flipped_fraction"])
        assert r["auroc"]["abs(IF-Calib)"] != r["auroc"]["IF-Calib"]  # the magnitude ranks another order
        assert r["auroc"]["Loss"] > 0.5 and all(0 <= v <= 1 for v in r["auroc"].values())
    saved = _read(tmp_path / "ablation.json")["settings"]
    assert [s["setting"] for s in saved] == [s.name for s in config.settings]
    for s in saved:
        mine = [r for r in rows if r["setting"] == s["setting"]]
        calib = [r["auroc"]["IF-Calib"] for r in mine]
        loss = [r["auroc"]["Loss"] for r in mine]
        c = s["vs_loss"]["IF-Calib"]["auroc"]
        assert c["mean_diff"] == pytest.approx(np.mean(calib) - np.mean(loss))
        assert c["p"] == pytest.approx(scipy.stats.ttest_rel(calib, loss).pvalue)
        expected = "tie" if c["p"] >= 0.05 else "IF-Calib > Loss" if c["mean_diff"] > 0 else "IF-Calib < Loss"
        assert c["order"] == expected
        assert f"| {s['setting']} |" in summary["tables"]
    log = (tmp_path / "rows.jsonl").read_text()
    run_experiment(config, tmp_path, progress=False)
    assert (tmp_path / "rows.jsonl").read_text() == log


@pytest.mark.slow
def test_label_flip_sensitivity_smoke(tmp_path):
    config = load_config("label_flip_sensitivity", smoke=True)
    run_experiment(config, tmp_path, progress=False)
    records = _read(tmp_path / "sensitivity.json")["records"]
    assert len(records) == 2 * len(config.models) * len(config.seeds) * len(config.fractions)
    for r in records:
        assert all(0 <= e <= 1 for e in r["ece"].values())
        if r["fraction"] == 0:  # the baseline itself
            assert all(v == 0 for v in r["pct_change"].values())
        assert 0 <= r["balanced_accuracy"] <= 1 and sum(r["group_sizes"].values()) > 0
    for key in {(r["model"], r["seed"]) for r in records}:  # the test stage keeps the model fit on clean labels
        clean = [r for r in records if (r["model"], r["seed"]) == key and (r["stage"] == "test" or r["fraction"] == 0)]
        assert len({r["balanced_accuracy"] for r in clean}) == 1
    text = (tmp_path / "sensitivity.md").read_text()
    assert "% change of group ECE" in text and "Balanced accuracy on the clean test labels" in text
    checks = _read(tmp_path / "preconditions.json")["checks"]
    assert [c["name"] for c in checks] == ["flipped fractions changed the labels", "no degenerate model",
                                           "minority group smaller than the majority"]
    assert all(c["passed"] is not None for c in checks)  # every check measured on the new records


def test_one_flip_labels_seed_or_generator():
    """The library flip_labels: an int seed and a fresh generator of that seed flip the same labels;
    successive calls on one generator draw in turn (the Ch. 6 sensitivity study's form)."""
    from repair_jax.data import flip_labels

    y = np.arange(200) % 10
    a, fa = flip_labels(y, 0.3, 10, 7)
    b, fb = flip_labels(y, 0.3, 10, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert fa.sum() == 60 and np.all(a[fa] != y[fa]) and np.all(a[~fa] == y[~fa])
    rng = np.random.default_rng(7)
    flip_labels(y, 0.3, 10, rng)
    assert not np.array_equal(flip_labels(y, 0.3, 10, rng)[1], fa)


def test_fix_auroc_against_sklearn():
    from sklearn.metrics import roc_auc_score

    from repair_jax.studies.guiding import fix_auroc

    rng = np.random.default_rng(0)
    n, k = 40, 4
    y_true = rng.integers(0, k, n)
    y_noisy = (y_true + rng.integers(1, k, n)) % k
    flipped = rng.uniform(size=n) < 0.5
    scores = rng.normal(size=(n, k))
    pairs = [(i, c) for i in np.flatnonzero(flipped) for c in range(k) if c != y_noisy[i]]
    expected = roc_auc_score([c == y_true[i] for i, c in pairs], [scores[i, c] for i, c in pairs])
    assert fix_auroc(scores, y_noisy, y_true, flipped) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("make, message", [
    (lambda: CreditStudy(bilevel=BilevelConfig(gamma=-1)), "gamma, fi_weight and audit_weight must be >= 0"),
    (lambda: CreditStudy(audit_size=0), "audit_size must be >= 1"),
    (lambda: NoisyLabelsStudy(datasets=(DIGITS,), noise=1.5), "noise must lie in (0, 1)"),
    (lambda: NoisyLabelsStudy(datasets=(DIGITS,), seeds=(0, 0)), "duplicated"),
    (lambda: NoisyLabelsStudy(datasets=(GuidingData("digits", None, 3, (8,), lr=-1),)), "learning rate must be positive"),
    (lambda: SpuriousStudy(datasets=(DIGITS,)), "spurious_class"),
    (lambda: SpuriousStudy(datasets=(dataclasses.replace(DIGITS, spurious_class="8"),), bilevel=BilevelConfig(l2=0)),
     "lower-level L2 must be > 0"),
    (lambda: FullGuidingRun(noise=0), "noise must lie in (0, 1)"),
    (lambda: InfluenceRankingStudy(fraction=1.5), "fraction must lie in (0, 1)"),
    (lambda: InfluenceRankingStudy(flip="one-class"), "flip must be one of uniform, pair, heavy-ink"),
    (lambda: InfluenceRankingStudy(group="minority"), "group must be one of heavy-ink, light-ink, all"),
    (lambda: InfluenceLooStudy(models=(), k=3), "at least one model"),
    (lambda: InfluenceLooStudy(models=(), k=0), "k must be >= 1"),
    (lambda: LabelFlipSensitivityStudy(seeds=()), "seeds must be a non-empty"),
    (lambda: LabelFlipSensitivityStudy(fractions=(0.1, 0.2)), "fractions must start at 0"),
])
def test_bad_configs_are_refused_when_built(make, message):
    """A bad config is one UserError when it is built, before run_experiment writes or trains anything."""
    with pytest.raises(UserError) as e:
        make()
    assert message in str(e.value)
