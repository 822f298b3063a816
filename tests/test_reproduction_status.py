"""The preconditions as code (repair_jax.studies.preconditions) and the reproduction status page generated from the
committed result files (repair_jax.studies.status, docs/reproduction.md)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from repair_jax import stats
from repair_jax.studies import preconditions as pre
from repair_jax.studies import status

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"


# ----------------------------------------------------------------------------- the checks

def test_exact_rank_sum_3_vs_3_cannot_reach_005_4_vs_4_can():
    assert pre.smallest_attainable_p("exact_rank_sum", 3) == pytest.approx(2 / math.comb(6, 3)) == 0.1
    assert not pre.enough_seeds("exact_rank_sum", 3)["passed"]
    assert pre.smallest_attainable_p("exact_rank_sum", 4) == pytest.approx(2 / 70)
    assert pre.enough_seeds("exact_rank_sum", 4)["passed"]


def test_rank_sum_as_run_is_the_sweeps_formula():
    # the normal approximation the WR study runs (scipy.stats.ranksums): 2 vs 2 cannot, 3 vs 3 just can (0.0495)
    assert pre.smallest_attainable_p("rank_sum", 2) == stats.min_rank_sum_p(2, 2) > 0.05
    assert not pre.enough_seeds("rank_sum", 2)["passed"]
    assert pre.smallest_attainable_p("rank_sum", 3) == pytest.approx(0.0495, abs=1e-4)
    from scipy.stats import mannwhitneyu

    # the exact formula against scipy's exact test on fully separated samples
    for n in (3, 4, 5):
        p = mannwhitneyu(np.arange(n), np.arange(n, 2 * n), method="exact").pvalue
        assert stats.min_exact_rank_sum_p(n, n) == pytest.approx(p)


@pytest.mark.parametrize("test", ["t", "welch_t", "paired_t"])
def test_t_tests_need_two_runs(test):
    assert not pre.enough_seeds(test, 1)["passed"]
    assert pre.enough_seeds(test, 2)["passed"]
    with pytest.raises(ValueError, match="unknown test"):
        pre.smallest_attainable_p("anova", 3)


def test_one_class_predictions_fail_the_degeneracy_check():
    assert not pre.no_one_class_predictions(np.zeros(100, int))["passed"]
    assert not pre.no_one_class_predictions(np.r_[np.zeros(97, int), [1, 2, 3]])["passed"]
    assert pre.no_one_class_predictions(np.arange(100) % 10)["passed"]
    with pytest.raises(ValueError):
        pre.top_class_share(np.zeros((2, 2)))


def test_chance_balanced_accuracy_fails_the_degeneracy_check():
    check = pre.no_degenerate_model({"a": 0.74, "b": 0.1}, num_classes=10)
    assert not check["passed"] and "b" in check["detail"] and check["value"] == 0.1
    assert pre.no_degenerate_model({"a": 0.74, "b": 0.2}, num_classes=10)["passed"]


def test_spurious_and_normal_model_conditions():
    assert pre.spurious_models_condition([0.9, 0.95])["passed"]
    assert not pre.spurious_models_condition([0.9, 0.8])["passed"]
    assert pre.normal_model_condition([0.05, 0.02])["passed"]
    assert not pre.normal_model_condition([0.05, 0.2])["passed"]
    assert pre.spurious_models_condition([])["passed"] is None
    from repair_jax.studies import explain_spurious

    assert (explain_spurious.SPURIOUS_THRESHOLD, explain_spurious.NORMAL_THRESHOLD) == (0.85, 0.1)


def test_flipped_label_memorisation_threshold_is_the_theses_94_percent():
    assert pre.implied_flipped_fit(0.942, 0.1) == pytest.approx(0.42)
    assert pre.flipped_label_memorisation(0.5)["passed"]
    assert not pre.flipped_label_memorisation(0.037)["passed"]
    unmeasured = pre.flipped_label_memorisation(None)
    assert unmeasured["passed"] is None and pre.overall([unmeasured]) == "not measured"


def test_status_line_and_overall():
    ok, bad = pre.enough_seeds("t", 3), pre.enough_seeds("t", 1)
    assert pre.status_line([ok]) == "**Preconditions: PASS**"
    assert pre.status_line([ok, bad]) == "**Preconditions: FAIL** (enough seeds for the test)"
    assert pre.status_line([]) is None
    text = "| a |\n"
    once = pre.with_status_line(text, pre.status_line([bad]))
    assert pre.with_status_line(once, pre.status_line([ok])) == "**Preconditions: PASS**\n\n| a |\n"
    assert pre.without_status_line(once) == text


def test_write_preconditions_on_a_study_directory(tmp_path):
    header = {"resumable_config": {}}
    recs = [{"seed": 0, "signal": s, "spurious_score": 0.9, "normal_max_score": 0.05} for s in ("tag", "stripe")]
    (tmp_path / "results.jsonl").write_text("\n".join(json.dumps(r) for r in [header, *recs]) + "\n")
    (tmp_path / "results.md").write_text("| table |\n")
    checks = pre.write_preconditions(tmp_path, "repair_jax.explain.study.SpuriousConceptStudy")
    assert [c["passed"] for c in checks] == [True, True]
    assert json.loads((tmp_path / "preconditions.json").read_text())["status"] == "PASS"
    assert (tmp_path / "results.md").read_text().startswith("**Preconditions: PASS**\n\n| table |")
    assert pre.write_preconditions(tmp_path, "CascadingRandomizationStudy") == []  # none defined: nothing written


def test_spurious_models_only_checks_the_pairs_in_the_tables(tmp_path):
    """With the thesis's definitions applied before averaging, the pairs left out do not fail the model
    conditions, but a signal left without any spurious model does."""
    rec = lambda seed, s, score: {"seed": seed, "signal": s, "spurious_score": score, "normal_max_score": 0.01,
                                  "spurious_ok": score > 0.85, "normal_ok": True}
    header = {"resumable_config": {"models": {"signals": ["tag", "stripe"], "spurious_models_only": True}}}
    write = lambda recs: (tmp_path / "results.jsonl").write_text(
        "\n".join(json.dumps(r) for r in [header, *recs]) + "\n")
    write([rec(0, "tag", 0.9), rec(0, "stripe", 0.95), rec(1, "stripe", 0.5)])
    checks = pre.write_preconditions(tmp_path, "SpuriousConceptStudy")
    assert [c["passed"] for c in checks] == [True, True, True] and "left out: seed 1 stripe" in checks[2]["detail"]
    write([rec(0, "tag", 0.9), rec(0, "stripe", 0.5)])
    checks = pre.write_preconditions(tmp_path, "SpuriousConceptStudy")
    assert checks[2]["passed"] is False and "no spurious model for stripe" in checks[2]["detail"]
    header["resumable_config"]["models"]["spurious_models_only"] = None  # every pair counts
    write([rec(0, "tag", 0.9), rec(0, "stripe", 0.5)])
    assert [c["passed"] for c in pre.write_preconditions(tmp_path, "SpuriousConceptStudy")] == [False, True]


def test_flips_changed_labels_and_not_recorded():
    assert pre.flips_changed_labels([], 12)["passed"]
    failed = pre.flips_changed_labels(["test mlp seed 0 5% heavy-ink"], 12)
    assert not failed["passed"] and failed["value"] == 1 and "test mlp seed 0" in failed["detail"]
    assert pre.flips_changed_labels([], 0)["passed"] is None
    missing = pre.not_recorded("no degenerate model", "-", "s", "accuracy")
    assert missing["passed"] is None and "not recorded" in missing["detail"]


def _label_flip_dir(tmp_path, heavy_ece_at_10: float):
    rec = lambda stage, f, heavy: {"stage": stage, "model": "m", "seed": 0, "fraction": f,
                                   "ece": {"heavy-ink (minority)": heavy, "light-ink (majority)": 0.2},
                                   "pct_change": {}}
    records = [rec("test", 0.0, 0.1), rec("test", 0.1, heavy_ece_at_10), rec("train", 0.0, 0.1),
               rec("train", 0.1, 0.3)]
    (tmp_path / "sensitivity.json").write_text(json.dumps({"records": records}))
    return pre.study_preconditions("LabelFlipSensitivityStudy", tmp_path)


def test_label_flip_checks_from_records(tmp_path):
    checks = _label_flip_dir(tmp_path, 0.15)
    assert checks[0]["passed"] is False  # the light-ink ECE never changed: those flips changed no label
    assert "light-ink" in checks[0]["detail"] and checks[0]["value"] == 2
    assert [c["passed"] for c in checks[1:]] == [None, None] and pre.overall(checks) == "FAIL"


def _label_flip_measured(tmp_path, bacc_train_10: float, heavy: int, light: int, dataset="digits"):
    """Records with the fields the last two checks read (balanced accuracy, test group sizes): seed 1's heavy-ink
    group has ``heavy`` test examples, the refit on 10 % flipped training labels ``bacc_train_10``."""
    sizes = {0: {"heavy-ink (minority)": 100, "light-ink (majority)": 300},
             1: {"heavy-ink (minority)": heavy, "light-ink (majority)": light}}
    rec = lambda stage, seed, f, ece, bacc: {
        "stage": stage, "model": "m", "seed": seed, "fraction": f, "ece": {"heavy-ink (minority)": ece,
                                                                            "light-ink (majority)": ece + 0.01},
        "pct_change": {}, "balanced_accuracy": bacc, "group_sizes": sizes[seed]}
    records = [r for seed in (0, 1) for r in (rec("test", seed, 0.0, 0.1, 0.9), rec("test", seed, 0.1, 0.2, 0.9),
                                               rec("train", seed, 0.0, 0.1, 0.9),
                                               rec("train", seed, 0.1, 0.3, bacc_train_10))]
    (tmp_path / "sensitivity.json").write_text(json.dumps({"dataset": dataset, "records": records}))
    return pre.study_preconditions("LabelFlipSensitivityStudy", tmp_path)


def test_label_flip_checks_measure_accuracy_and_group_sizes(tmp_path):
    checks = _label_flip_measured(tmp_path, 0.8, 110, 290)
    assert [c["passed"] for c in checks] == [True, True, True] and pre.overall(checks) == "PASS"
    degenerate, sizes = checks[1:]
    # two (model, seed) x {clean fit, 10 % refit}: the test stage is the clean fit's model
    assert degenerate["value"] == 0.8 and degenerate["detail"].startswith("4 models")
    assert sizes["value"] == pytest.approx(110 / 400) and "seed 1: 110 / 290" in sizes["detail"]
    # a refit at chance (1/K + eps = 0.11 for 10 classes) fails the degenerate-model check only
    checks = _label_flip_measured(tmp_path, 0.105, 110, 290)
    assert [c["passed"] for c in checks] == [True, False, True] and pre.overall(checks) == "FAIL"
    assert "m seed 0 fit on 10% flipped training labels" in checks[1]["detail"]
    # a heavy-ink group as large as the light-ink one (seed 1) fails the group-size check only
    checks = _label_flip_measured(tmp_path, 0.8, 200, 200)
    assert [c["passed"] for c in checks] == [True, True, False] and "not smaller in seed 1" in checks[2]["detail"]
    assert checks[2]["value"] == 0.5
    # without a known number of classes the degenerate-model check is not measured
    checks = _label_flip_measured(tmp_path, 0.8, 110, 290, dataset="unknown")
    assert [c["passed"] for c in checks] == [True, None, True]


def test_minority_group_smaller():
    ok = pre.minority_group_smaller({"a": {"h": 1, "l": 3}}, "h", "l")
    assert ok["passed"] and ok["value"] == 0.25
    assert pre.minority_group_smaller({"a": {"h": 3, "l": 1}}, "h", "l")["passed"] is False
    assert pre.minority_group_smaller({}, "h", "l")["passed"] is None


def test_ood_model_on_other_data_and_ood_checks(tmp_path):
    assert pre.ood_model_on_other_data("fashion_mnist", "digits")["passed"]
    assert not pre.ood_model_on_other_data("digits", "digits")["passed"]
    assert pre.ood_model_on_other_data(None, "digits")["passed"] is None
    fields = {"train": {"dataset": "fashion_mnist"}, "ood_dataset": "digits"}
    (tmp_path / "experiment.json").write_text(json.dumps({"config": {"type": "OODExplanationStudy", "fields": fields}}))
    for ood_accuracy, status in ((0.9, "PASS"), (0.1, "FAIL")):
        (tmp_path / "results.json").write_text(json.dumps({"accuracies": {"model": 0.85, "ood_model": ood_accuracy}}))
        assert pre.overall(pre.study_preconditions("OODExplanationStudy", tmp_path)) == status


def test_enough_subsets_for_a_spearman_correlation():
    assert pre.smallest_spearman_p(4) == pytest.approx(2 / 24) and not pre.enough_subsets(4)["passed"]
    assert pre.smallest_spearman_p(5) == pytest.approx(2 / 120) and pre.enough_subsets(5)["passed"]
    assert pre.smallest_spearman_p(1) == 1.0
    from scipy.stats import spearmanr

    # the critical |rho| at 0.05 is where scipy's p (the same t approximation) crosses 0.05
    crit = pre.critical_spearman(40)
    x = np.arange(40.0)
    for rho, below in ((crit + 0.01, True), (crit - 0.01, False)):
        y = rho * (x - x.mean()) / x.std() + np.sqrt(1 - rho ** 2) * np.random.default_rng(0).normal(size=40)
        r, p = spearmanr(x, y)
        assert (p < 0.05) == (abs(r) > crit)
    assert pre.critical_spearman(2) is None


def test_lbfgs_converged():
    ok = pre.lbfgs_converged({"fit": (5e-9, 1e-8), "subsets": (1e-6, 1e-6)})
    assert ok["passed"] and ok["value"] == pytest.approx(1.0)
    bad = pre.lbfgs_converged({"fit": (3e-8, 1e-8), "subsets": (1e-7, 1e-6)})
    assert not bad["passed"] and bad["value"] == pytest.approx(3.0) and "fit 3e-08 > 1e-08" in bad["detail"]
    assert not pre.lbfgs_converged({"fit": (float("nan"), 1e-8)})["passed"]
    assert pre.lbfgs_converged({})["passed"] is None


def test_regression_above_constant_and_the_credit_tables_constant():
    assert pre.regression_above_constant({"carved": 0.56, "guided": 0.16}, 0.894)["passed"]
    bad = pre.regression_above_constant({"carved": 0.89, "guided": 0.16}, 0.894)
    assert not bad["passed"] and "carved" in bad["detail"]
    from repair_jax.guiding.synthetic import CREDIT_LIMIT_STD, credit_table

    _, y_true, _, _ = credit_table(200_000, 0)
    assert np.std(y_true) == pytest.approx(CREDIT_LIMIT_STD, rel=0.01)


def test_lower_level_and_cg_converged():
    assert pre.lower_level_converged({"seed 0": True, "seed 1": True})["passed"]
    bad = pre.lower_level_converged({"seed 0": True, "seed 1": False})
    assert not bad["passed"] and bad["value"] == "1 of 2" and "seed 1" in bad["detail"]
    assert pre.cg_converged({"seed 0": {"converged": True, "residual": 1e-6}})["passed"]
    assert not pre.cg_converged({"seed 0": {"converged": False, "residual": 1e-2}})["passed"]


def test_strictly_convex_erm_and_flipped_as_configured():
    assert pre.strictly_convex_erm([], 1e-3)["passed"]
    assert not pre.strictly_convex_erm([32], 1e-3)["passed"] and not pre.strictly_convex_erm([], 0.0)["passed"]
    assert pre.flipped_as_configured({"seed 0": (114, 1138)}, 0.1)["passed"]
    assert not pre.flipped_as_configured({"seed 0": (0, 1138)}, 0.1)["passed"]
    assert not pre.flipped_as_configured({"seed 0": (0, 4)}, 0.1)["passed"]  # round(0.4) = 0: nothing flipped


# ----------------------------------------------------------------------------- the committed files

@pytest.mark.parametrize("directory", sorted(p.name for p in RESULTS.iterdir() if (p / "experiment.json").is_file()))
def test_committed_preconditions_match_the_result_files(directory):
    out = RESULTS / directory
    config_type = json.loads((out / "experiment.json").read_text())["config"]["type"]
    checks = pre.study_preconditions(config_type, out)
    path = out / pre.PRECONDITIONS_JSON
    if not checks:
        assert not path.exists()
        return
    assert json.loads(path.read_text()) == json.loads(json.dumps({"status": pre.overall(checks), "checks": checks}))
    for md in out.glob("*.md"):
        if md.name != "README.md":
            assert md.read_text().startswith(pre.status_line(checks) + "\n\n"), md


RECORDED = {  # the committed results' preconditions (issue 29): status and the checks that are not PASS
    "explain_spurious_table4_1": ("FAIL", ["spurious models learn the signal", "normal model ignores the signal"]),
    "explain_spurious_table4_1_conditions": ("PASS", []),
    "explain_concepts_table4_2_conditions": ("PASS", []),
    "explain_training_ranking_table4_3_conditions": ("PASS", []),
    "robustness_fashion_mnist_longtail_cpu": ("PASS", []),
    "explain_ood_table4_4": ("PASS", []),
    "label_flip_sensitivity": ("PASS", []),
    "influence_lds": ("FAIL", ["L-BFGS fits converged"]),
    "guiding_credit": ("PASS", []),
    "influence_ranking": ("PASS", []),
}


@pytest.mark.parametrize("directory", sorted(RECORDED))
def test_committed_status_of_the_newer_preconditions(directory):
    record = json.loads((RESULTS / directory / pre.PRECONDITIONS_JSON).read_text())
    status, not_passed = RECORDED[directory]
    assert record["status"] == status
    assert [c["name"] for c in record["checks"] if c["passed"] is not True] == not_passed


def test_reproduction_page_is_generated_from_the_committed_results(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert status.reproduction_page() == (ROOT / "docs" / "reproduction.md").read_text(), \
        "docs/reproduction.md is stale: run python -m repair_jax.studies.status"


def test_reproduction_rows_cover_the_source_tables():
    page = (ROOT / "docs" / "reproduction.md").read_text()
    for config, source, headline, _ in status.SOURCE_TABLES:
        assert source in page and headline.replace("|", "\\|") in page
        if config is not None:
            assert f"`python -m experiments.run {config}`" in page
            assert (ROOT / "experiments" / "configs" / f"{config}.py").is_file()
    assert "Zhong et al. 2022, Table 3" in page and "not run" in page
    # failing preconditions make a row not comparable
    row = status.status_row("robustness_fashion_mnist_cpu", "s", "h", status.robustness_table1, RESULTS)
    assert row["preconditions"] == "FAIL" and row["direction"].startswith("not comparable")


def test_direction():
    assert status._direction([True, True]) == "reproduced"
    assert status._direction([False]) == "reversed"
    assert status._direction([True, False, False]) == "mixed (1 of 3)"
    assert status._direction([]) == "not comparable"


def test_ks_tables_read_the_tag_setting_by_majority_of_seeds(tmp_path):
    """Tables 4.2/4.3 rows: the Tag setting (bare or sized) is ✗ where most seeds rejected; the claim is K-SSD ✗,
    CCM ✓, FAM ✓ (Adebayo 2022, Tables 4.2 and 4.3)."""
    cell = lambda rejected: {"rejected": rejected, "seeds": 3, "statistic": 0.5, "p_median": 0.01}
    table = {"stripe": {m: cell(3) for m in ("k_ssd", "ccm", "fam")},
             "tag(6)": {"k_ssd": cell(2), "ccm": cell(1), "fam": cell(0)}}
    (tmp_path / "results.json").write_text(json.dumps({"table": table}))
    ours, direction = status.ks_tables(tmp_path)
    assert ours.startswith("tag(6): K-SSD ✗") and "CCM ✓" in ours and direction == "reproduced"
    table["tag(6)"]["fam"] = cell(2)
    (tmp_path / "results.json").write_text(json.dumps({"table": table}))
    assert status.ks_tables(tmp_path)[1] == "mixed (2 of 3)"


def test_a_run_in_progress_is_not_finished(tmp_path):
    out = tmp_path / "explain_spurious_table4_1_conditions"
    out.mkdir()
    (out / "experiment.json").write_text(json.dumps({"config": {"type": "x", "fields": {}}}))
    row = status.status_row(out.name, "s", "h", status.spurious_table4_1, tmp_path)
    assert row["ours"] == "not finished" and row["direction"] == "not comparable (not finished)"


def test_ranking_ablation_reading_names_the_settings_that_flip_or_tie(tmp_path):
    """The Fig. 6-3 row's ablation reading from ablation.json: a setting with IF-Calib > Loss on any measure flips
    the order; a top-50 tie is listed; no file, no reading."""
    assert status._ranking_ablation(tmp_path / "missing") == []

    def setting(name, top, auroc):
        return {"setting": name, "vs_loss": {"IF-Calib": {"top": {"order": top}, "auroc": {"order": auroc}}}}

    out = tmp_path / "influence_ranking_ablation"
    out.mkdir()
    settings = [setting("a", "tie", "IF-Calib < Loss"), setting("b", "IF-Calib < Loss", "IF-Calib < Loss")]
    (out / "ablation.json").write_text(json.dumps({"settings": settings}))
    (text,) = status._ranking_ablation(out)
    assert "above the loss in none; tied on the top 50 in a;" in text and "2 of 2 (no setting flips" in text
    settings.append(setting("c", "tie", "IF-Calib > Loss"))
    (out / "ablation.json").write_text(json.dumps({"settings": settings}))
    (text,) = status._ranking_ablation(out)
    assert "above the loss in c; tied on the top 50 in a;" in text and "the listed settings flip the order" in text
    committed = status._ranking_ablation(RESULTS / "influence_ranking_ablation")
    assert committed and "above the loss in none" in committed[0]
