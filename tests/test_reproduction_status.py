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
    assert pre.write_preconditions(tmp_path, "OODExplanationStudy") == []  # no preconditions: nothing written


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
