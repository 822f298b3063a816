"""The sources' preconditions as code: is a study's setting one in which its table can be compared to the source's?

Each check is a pure function returning one record ``{"name", "value", "threshold", "passed", "source",
"detail"}``; ``passed`` is ``True``, ``False`` or ``None`` (not measured: neither pass nor fail).

* :func:`spurious_models_condition`, :func:`normal_model_condition` - Adebayo 2022, Sec. 4.2.1 ("Model
  Conditions"): every spurious model's spurious score (Def. 4.2.1) above 0.85, the normal model's below 0.1.
* :func:`flipped_label_memorisation` - Adebayo 2022, Sec. 4.3 and App. A.2.1: the noisy model fits its training
  labels (94.2 % training accuracy with 10 % of the labels flipped, so at least (0.942 - 0.9) / 0.1 = 42 % of
  the flipped labels are predicted as flipped).
* :func:`no_degenerate_model`, :func:`no_one_class_predictions` - a model that predicts (almost) one class for
  every input makes a comparison between methods meaningless (ours, for Pradhan et al. 2020, Table 1).
* :func:`enough_seeds` - the test a study runs can reach p < 0.05 with its number of seeds
  (:func:`smallest_attainable_p`).
* :func:`flips_changed_labels`, :func:`minority_group_smaller`, :func:`not_recorded` - Adebayo 2022, Sec. 6.3
  (Figs. 6-1/6-2): the flipped fractions changed the labels (read off the group ECE: a setting whose ECE equals
  the unflipped one changed no label), no fitted model at chance (:func:`no_degenerate_model` on each record's
  balanced accuracy on the clean test labels) and the minority (heavy-ink) test group smaller than the majority;
  what older label-flip records do not hold (accuracy, group sizes) is not measured.
* :func:`ood_model_on_other_data` - Adebayo 2022, Sec. 4.5 (Table 4.4): the out-of-domain model was trained on
  another data set than the explained inputs; with :func:`no_degenerate_model` on both models' test accuracy.
* :func:`enough_subsets`, :func:`lbfgs_converged` - the LDS (Park et al. 2023, Sec. 2): a Spearman correlation
  over the retrained subsets that can reach p < 0.05, and fits that reached their gradient-norm tolerance (the
  ground truth of the LDS and of leave-one-out is the retrained minimiser).
* :func:`regression_above_constant`, :func:`lower_level_converged` - Adebayo 2022, Sec. 5.2.3 and Table 5.3
  (the credit row): a credit-limit model better than a constant, and a bilevel update whose lower level was
  solved (the implicit hyper-gradient is taken at the lower-level minimiser).
* :func:`strictly_convex_erm`, :func:`cg_converged`, :func:`flipped_as_configured` - Adebayo 2022, Sec. 6.2 and
  6.5 (Fig. 6-3): influence on a strictly convex ERM objective, its Hessian solves converged, and 10 % of the
  training labels flipped.

:func:`study_preconditions` computes a study's checks from the files it wrote (by config type, see
:data:`STUDY_CHECKS`); :func:`write_preconditions` writes them to ``OUT/preconditions.json`` and puts
``**Preconditions: PASS**`` (or ``FAIL`` / ``not measured``, naming the checks) first in the study's Markdown
tables. :func:`repair_jax.experiment.run_experiment` calls it after every runner (an :func:`repair_jax.experiment.after_run`
hook).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from repair_jax import stats
from repair_jax.experiment import after_run

ALPHA = 0.05
PRECONDITIONS_JSON = "preconditions.json"
LINE_PREFIX = "**Preconditions:"
SPURIOUS_THRESHOLD, NORMAL_THRESHOLD = 0.85, 0.1  # Adebayo 2022, Sec. 4.2.1, "Model Conditions"
THESIS_NOISY_TRAIN_ACCURACY, THESIS_FLIP_FRACTION = 0.942, 0.1  # Adebayo 2022, App. A.2.1
DEGENERATE_EPS, ONE_CLASS_SHARE = 0.01, 0.95


def check(name: str, value, threshold, passed: bool | None, source: str, detail: str = "") -> dict:
    """One precondition record (``passed`` None: not measured)."""
    return {"name": name, "value": value, "threshold": threshold,
            "passed": None if passed is None else bool(passed), "source": source, "detail": detail}


def spurious_models_condition(spurious_scores: Sequence[float], threshold: float = SPURIOUS_THRESHOLD) -> dict:
    """Every spurious model's spurious score (Def. 4.2.1) above ``threshold`` (Adebayo 2022, Sec. 4.2.1)."""
    value = float(min(spurious_scores)) if len(spurious_scores) else None
    return check("spurious models learn the signal", value, f"> {threshold} for every spurious model",
                 None if value is None else value > threshold, "Adebayo 2022, Sec. 4.2.1",
                 f"smallest of {len(spurious_scores)} spurious scores")


def normal_model_condition(normal_max_scores: Sequence[float], threshold: float = NORMAL_THRESHOLD) -> dict:
    """The normal model's largest spurious score over classes and signals below ``threshold`` (Adebayo 2022,
    Sec. 4.2.1)."""
    value = float(max(normal_max_scores)) if len(normal_max_scores) else None
    return check("normal model ignores the signal", value, f"< {threshold}",
                 None if value is None else value < threshold, "Adebayo 2022, Sec. 4.2.1",
                 "largest spurious score of the normal model(s) over classes and signals")


def implied_flipped_fit(train_accuracy: float, flip_fraction: float) -> float:
    """The smallest fraction of flipped labels a model fits when its training accuracy (on the flipped labels)
    is ``train_accuracy``: it fits at most every clean label, ``1 - flip_fraction``."""
    return max(0.0, (train_accuracy - (1.0 - flip_fraction)) / flip_fraction)


def flipped_label_memorisation(fraction: float | None, detail: str = "") -> dict:
    """The noisy model predicts its flipped training labels (Adebayo 2022, Sec. 4.3; App. A.2.1: 94.2 % training
    accuracy with 10 % flipped, i.e. at least 42 % of the flipped labels fitted). ``fraction``: the fraction of
    flipped training inputs the noisy model predicts as their flipped label; None: not measured."""
    threshold = round(implied_flipped_fit(THESIS_NOISY_TRAIN_ACCURACY, THESIS_FLIP_FRACTION), 4)
    return check("noisy model fits the flipped labels", fraction, f">= {threshold}",
                 None if fraction is None else fraction >= threshold, "Adebayo 2022, Sec. 4.3 and App. A.2.1",
                 detail or ("not recorded by this run" if fraction is None else ""))


def no_degenerate_model(balanced_accuracies: dict, num_classes: int, eps: float = DEGENERATE_EPS,
                        source: str = "Pradhan et al. 2020, Table 1 (our check)") -> dict:
    """No model at chance balanced accuracy: every ``{label: balanced accuracy}`` above ``1/K + eps`` (a model
    predicting one class for every input has balanced accuracy exactly 1/K). Ours, for Pradhan et al. 2020,
    Table 1, whose cells compare trained models by balanced accuracy and F1."""
    threshold = 1.0 / num_classes + eps
    bad = sorted(k for k, v in balanced_accuracies.items() if v <= threshold)
    value = float(min(balanced_accuracies.values())) if balanced_accuracies else None
    return check("no degenerate model", value, f"> 1/{num_classes} + {eps} = {threshold:.3f} for every model",
                 None if value is None else not bad, source,
                 f"{len(bad)} of {len(balanced_accuracies)} at chance: {', '.join(bad[:8])}"
                 + (", ..." if len(bad) > 8 else "") if bad else f"{len(balanced_accuracies)} models")


def top_class_share(predictions) -> float:
    """The fraction of ``predictions`` (N,) class indices that fall on their most frequent class."""
    predictions = np.asarray(predictions)
    if predictions.ndim != 1 or predictions.size == 0:
        raise ValueError(f"predictions must be a non-empty (N,) vector, got shape {predictions.shape}")
    return float(np.bincount(predictions.astype(np.int64)).max() / predictions.size)


def no_one_class_predictions(predictions, max_share: float = ONE_CLASS_SHARE) -> dict:
    """No class takes more than ``max_share`` of a model's predictions (the degenerate-model check on a
    prediction vector, see :func:`no_degenerate_model`)."""
    share = top_class_share(predictions)
    return check("no degenerate model", share, f"<= {max_share} of the predictions on one class",
                 share <= max_share, "Pradhan et al. 2020, Table 1 (our check)")


TESTS = {  # the tests the studies run: name -> (what it is, where it runs)
    "rank_sum": "Wilcoxon rank-sum, normal approximation (scipy.stats.ranksums; repair_jax.repair.report)",
    "exact_rank_sum": "exact Wilcoxon rank-sum / Mann-Whitney U",
    "t": "independent two-sample t-test (repair_jax.stats.t_test_p; I-REPAIR tables)",
    "welch_t": "Welch's t-test (repair_jax.studies.bias.dob_test)",
    "paired_t": "paired t-test (repair_jax.stats.paired_t_test_p; repair_jax.robustness.report.versus_plain)",
}


def smallest_attainable_p(test: str, n: int, m: int | None = None) -> float:
    """The smallest two-sided p ``test`` can give with n (and m, default n) runs per sample: rank sums their
    fully separated samples (:func:`repair_jax.stats.min_rank_sum_p`, :func:`repair_jax.stats.min_exact_rank_sum_p`);
    a t-test any p > 0 from 2 runs per sample on (its statistic grows without bound as the spread shrinks), 1
    below."""
    m = n if m is None else m
    if test == "rank_sum":
        return stats.min_rank_sum_p(n, m)
    if test == "exact_rank_sum":
        return stats.min_exact_rank_sum_p(n, m)
    if test in ("t", "welch_t", "paired_t"):
        return 0.0 if min(n, m) >= 2 else 1.0
    raise ValueError(f"unknown test {test!r}; known: {', '.join(TESTS)}")


def enough_seeds(test: str, n: int, m: int | None = None, alpha: float = ALPHA, source: str = "") -> dict:
    """The study's test can reach p < ``alpha`` with n vs m runs (its smallest attainable p below alpha)."""
    p = smallest_attainable_p(test, n, m)
    runs = f"{n} vs {n if m is None else m}" if test != "paired_t" else f"{n} pairs"
    return check("enough seeds for the test", p, f"smallest attainable p < {alpha}", p < alpha,
                 source or "the study's significance test", f"{TESTS[test]}, {runs}")


def not_recorded(name: str, threshold: str, source: str, what: str) -> dict:
    """A precondition the study's files cannot show (``passed`` None: not measured); ``what``: the missing field."""
    return check(name, None, threshold, None, source, f"not recorded by this run: {what}")


def flips_changed_labels(unchanged: Sequence[str], total: int, source: str = "Adebayo 2022, Sec. 6.3") -> dict:
    """Every flipped setting changed the labels (Adebayo 2022, Sec. 6.3: a percentage of the labels flipped
    uniformly at random). ``unchanged``: the (stage, model, seed, fraction, group) settings with a fraction
    above 0 whose group metric equals that of the unflipped labels exactly, of ``total``. Identical labels give
    an identical metric (the test stage keeps the model; the training stage refits deterministically), so an
    unchanged metric means no label of the setting changed."""
    unchanged = list(unchanged)
    return check("flipped fractions changed the labels", len(unchanged), f"0 of {total} flipped settings with "
                 "the unflipped group ECE", None if total == 0 else not unchanged, source,
                 (f"unchanged: {', '.join(unchanged[:6])}" + (", ..." if len(unchanged) > 6 else "")) if unchanged
                 else f"{total} (stage, model, seed, fraction, group) settings")


def ood_model_on_other_data(dataset: str | None, ood_dataset: str | None) -> dict:
    """The out-of-domain model was trained on another data set than the inputs explained (Adebayo 2022, Sec. 4.5:
    attributions of the same input from an in-domain and an out-of-domain model)."""
    known = bool(dataset) and bool(ood_dataset)
    return check("out-of-domain model trained on other data", f"{ood_dataset} model, {dataset} inputs",
                 "a data set other than the inputs'", known and dataset != ood_dataset if known else None,
                 "Adebayo 2022, Sec. 4.5", "" if known else "data sets not recorded")


def smallest_spearman_p(m: int) -> float:
    """The smallest two-sided p of Spearman's rho over ``m`` pairs (exact permutation test: only the identical
    ranking and its reverse reach |rho| = 1 among the m! rankings): 2 / m!, 1 below 2 pairs."""
    return 1.0 if m < 2 else min(1.0, 2.0 / math.factorial(m))


def critical_spearman(m: int, alpha: float = ALPHA) -> float | None:
    """The |rho| above which Spearman's rho over ``m`` pairs is significant at ``alpha`` (two-sided; the t
    approximation t = rho sqrt((m - 2) / (1 - rho^2))); None below 3 pairs."""
    if m < 3:
        return None
    from scipy.stats import t as student_t

    q = student_t.ppf(1 - alpha / 2, m - 2)
    return float(q / math.sqrt(m - 2 + q * q))


def enough_subsets(m: int, alpha: float = ALPHA, source: str = "Park et al. 2023, Sec. 2 (the LDS)") -> dict:
    """The LDS's per-test-point Spearman correlation over ``m`` retrained subsets can reach p < ``alpha``
    (:func:`smallest_spearman_p`: at least 5 subsets); the detail gives the |rho| it takes."""
    p = smallest_spearman_p(m)
    crit = critical_spearman(m, alpha)
    return check("enough subsets for the LDS's Spearman correlation", p, f"smallest attainable p < {alpha}",
                 p < alpha, source, f"{m} subsets" + (f"; |rho| > {crit:.3f} is significant at {alpha}"
                                                      if crit is not None else ""))


def lbfgs_converged(runs: dict, source: str = "Park et al. 2023, Sec. 2 (the LDS)") -> dict:
    """Every L-BFGS fit reached its tolerance: ``runs`` ``{label: (final gradient norm, tolerance)}``
    (:func:`repair_jax.influence.full_batch.lbfgs` converged iff its gradient norm is at most the tolerance).
    The value is the largest ratio gradient norm / tolerance."""
    ratios = {k: g / tol for k, (g, tol) in runs.items()}
    bad = [k for k, r in ratios.items() if not r <= 1]
    value = float(max(ratios.values())) if ratios else None
    return check("L-BFGS fits converged", value, "gradient norm <= tolerance for every fit (ratio <= 1)",
                 None if value is None else not bad, source,
                 (f"{len(bad)} of {len(ratios)} above: " + "; ".join(
                     f"{k} {runs[k][0]:.3g} > {runs[k][1]:.3g}" for k in bad[:8]) + ("; ..." if len(bad) > 8 else ""))
                 if bad else f"{len(ratios)} fits")


def regression_above_constant(rmses: dict, constant_rmse: float, eps: float = DEGENERATE_EPS,
                              source: str = "Adebayo 2022, Table 5.3 (our check)") -> dict:
    """The degenerate-model check of a regression: every ``{label: test RMSE}`` below ``(1 - eps)`` times the
    RMSE of the best constant prediction (the target's standard deviation, ``constant_rmse``)."""
    threshold = (1 - eps) * constant_rmse
    bad = sorted(k for k, v in rmses.items() if not v < threshold)
    value = float(max(rmses.values())) if rmses else None
    return check("no degenerate model", value, f"< (1 - {eps}) x {constant_rmse:.4f} (a constant's RMSE) = "
                 f"{threshold:.4f} for every model", None if value is None else not bad, source,
                 f"{len(bad)} of {len(rmses)} no better than a constant: {', '.join(bad[:8])}" if bad
                 else f"{len(rmses)} models")


def lower_level_converged(flags: dict, source: str = "Adebayo 2022, Sec. 5.2.3") -> dict:
    """The bilevel update solved its lower level in every run (``{label: converged}``): the hyper-gradient
    (Adebayo 2022, Sec. 5.2.3) differentiates the lower-level minimiser, through the Hessian there."""
    bad = sorted(k for k, v in flags.items() if not v)
    return check("bilevel lower level converged", f"{len(flags) - len(bad)} of {len(flags)}",
                 "every run", None if not flags else not bad, source, f"not converged: {', '.join(bad)}" if bad else "")


def strictly_convex_erm(hidden: Sequence[int], l2: float, source: str = "Adebayo 2022, Sec. 6.2") -> dict:
    """The ERM objective is strictly convex (Adebayo 2022, Sec. 6.2 assumes it for the influence functions of
    Sec. 6.4): softmax regression (no hidden layer) with an L2 penalty above 0."""
    return check("strictly convex ERM objective", f"hidden {list(hidden)}, L2 {l2:g}",
                 "no hidden layer and L2 > 0", not list(hidden) and l2 > 0, source)


def cg_converged(summaries: dict, source: str = "Adebayo 2022, Sec. 6.4 (Eq. 6.4, 6.5)", detail: str = "") -> dict:
    """Every conjugate-gradient solve of H^-1 v reached its tolerance: ``{label: CG summary}`` (its
    ``"converged"`` and ``"residual"``); the influence of Eq. 6.4 / 6.5 needs the solve."""
    bad = sorted(k for k, v in summaries.items() if not v.get("converged"))
    residuals = [v["residual"] for v in summaries.values() if v.get("residual") is not None]
    return check("Hessian solves converged", float(max(residuals)) if residuals else None,
                 "every CG solve converged (residual <= its tolerance)", None if not summaries else not bad, source,
                 (f"not converged: {', '.join(bad)}" if bad else f"{len(summaries)} solves")
                 + (f"; {detail}" if detail else ""))


def flipped_as_configured(counts: dict, fraction: float, source: str = "Adebayo 2022, Sec. 6.5") -> dict:
    """``fraction`` of the training labels flipped in every run (``{label: (flipped, n)}``; Sec. 6.5 flips 10 %):
    round(fraction x n) labels each."""
    bad = sorted(k for k, (f, n) in counts.items() if f != int(round(fraction * n)) or f == 0)
    value = float(min(f / n for f, n in counts.values())) if counts else None
    return check("training labels flipped", value, f"round({fraction:g} x n) > 0 flipped in every run",
                 None if value is None else not bad, source,
                 f"other counts: {', '.join(bad)}" if bad else f"{len(counts)} runs")


# ----------------------------------------------------------------------------- a study's checks from its files

def _log(path: Path) -> tuple[dict, list[dict]]:
    """A study's resumable log: ``(its header's config, {} when none; its records)``."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    header = next((r["resumable_config"] for r in lines if "resumable_config" in r), None) or {}
    return header, [r for r in lines if "resumable_config" not in r]


def _records(path: Path) -> list[dict]:
    """A study's resumable log without its header line."""
    return _log(path)[1]


def split_by_definitions(records: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    """Ch. 4 (seed, signal) records split into those whose models are a spurious and a normal model by Adebayo
    2022, Sec. 4.2.1 (``spurious_ok`` and ``normal_ok``) and the others."""
    meets = lambda r: r["spurious_ok"] and r["normal_ok"]
    return [r for r in records if meets(r)], [r for r in records if not meets(r)]


def every_signal_in_the_table(signals: Sequence[str], kept: Sequence[dict], left_out: Sequence[dict]) -> dict:
    """With the thesis's definitions applied before averaging (``spurious_models_only``): every signal keeps at
    least one (seed, signal) pair whose models are a spurious and a normal model (Adebayo 2022, Sec. 4.2.1)."""
    missing = [s for s in signals if not any(r["signal"] == s for r in kept)]
    detail = f"{len(kept)} of {len(kept) + len(left_out)} (seed, signal) pairs in the tables"
    if left_out:
        detail += "; left out: " + ", ".join(f"seed {r['seed']} {r['signal']} ({r['spurious_score']:.3f})"
                                             for r in left_out)
    if missing:
        detail += "; no spurious model for " + ", ".join(missing)
    return check("every signal has a spurious model in the tables", len(signals) - len(missing),
                 f"= {len(signals)} signals", not missing, "Adebayo 2022, Sec. 4.2.1", detail)


def _spurious_checks(out: Path) -> list[dict]:
    """The Ch. 4 spurious studies (Table 4.1, 4.2, 4.3 analogues): their (seed, signal) records' scores; where the
    study applies the thesis's definitions before averaging (``spurious_models_only``), the scores of the pairs
    in the tables and whether every signal kept one."""
    header, records = _log(out / "results.jsonl")
    models = header.get("models", header)
    kept = records
    extra = []
    if models.get("spurious_models_only"):
        kept, left_out = split_by_definitions(records)
        extra = [every_signal_in_the_table(models["signals"], kept, left_out)]
    return [spurious_models_condition([r["spurious_score"] for r in kept]),
            normal_model_condition([r["normal_max_score"] for r in kept])] + extra


def _mislabelled_checks(out: Path) -> list[dict]:
    """The Sec. 4.3 study: the noisy model's fit of the flipped labels, over every flipped training input where
    the run recorded it, else over the explained ones (the first flipped inputs, a sample of them)."""
    numbers = json.loads((out / "results.json").read_text())["numbers"]
    if numbers.get("noisy_fits_all_flipped_labels") is not None:
        return [flipped_label_memorisation(numbers["noisy_fits_all_flipped_labels"],
                                           f"over all {numbers.get('flipped', '?')} flipped training inputs")]
    if numbers.get("noisy_fits_flipped_labels") is not None:
        return [flipped_label_memorisation(numbers["noisy_fits_flipped_labels"],
                                           f"over the {numbers.get('explained', '?')} explained flipped training "
                                           "inputs (a sample of the flipped ones)")]
    return [flipped_label_memorisation(None)]


def _runs_per_group(records: list[dict], key: Callable[[dict], tuple]) -> int:
    counts: dict = defaultdict(int)
    for r in records:
        counts[key(r)] += 1
    return min(counts.values()) if counts else 0


def _robustness_checks(out: Path) -> list[dict]:
    """Pradhan et al. 2020, Table 1 analogue: every (model, method, level, seed) model above chance; the paired
    t-test of each method against plain over the seeds."""
    records = _records(out / "results.jsonl")
    cells = {f"{r['model']} {r['method']} {r['level']} seed {r['seed']}": r["balanced_accuracy"] for r in records}
    n = _runs_per_group(records, lambda r: (r["model"], r["method"], r["level"]))
    return [no_degenerate_model(cells, len(records[0]["recall"])),
            enough_seeds("paired_t", n, source="Pradhan et al. 2020, Table 1 (our test: method vs plain)")]


def _bias_checks(out: Path) -> list[dict]:
    """Sharma n.d., Que-1/Que-2 analogues: every (variant, seed) model above chance (macro recall is balanced
    accuracy); Welch's t-test of each variant's DOB against its baseline over the seeds."""
    records = _records(out / "runs.jsonl")
    cells = {f"{r['variant']} seed {r['seed']}": r["recall_macro"] for r in records}
    n = _runs_per_group(records, lambda r: r["variant"])
    return [no_degenerate_model(cells, len(records[0]["per_class"]["recall"]), source="Sharma n.d., Que-2 (our check)"),
            enough_seeds("welch_t", n, source="Sharma n.d., Que-2 (our test of DOB against the baseline)")]


def _irepair_checks(out: Path) -> list[dict]:
    """Henriksen et al. 2022, Sec. 5 (RQ i): the t-test of each method's accuracy drops (runs over classes and
    seeds) against retraining's, in every table the study logged."""
    key = lambda r: (r.get("method"), r.get("gamma"), r.get("repair_size"), r.get("correct_loss"), r.get("margin"))
    n = min((_runs_per_group(_records(p), key) for p in sorted(out.glob("*.jsonl"))), default=0)
    return [enough_seeds("t", n, source="Henriksen et al. 2022, Sec. 5 (RQ i)")]


def _wr_checks(out: Path) -> list[dict]:
    """Zhong et al. 2022, Sec. 4.3.2: each study's Wilcoxon rank-sum test of the fine-tuned methods against orig-ft
    over the seeds (the smallest seed count of the studies the config ran)."""
    summaries = sorted(out.glob("*/summary.json"))
    if not summaries:
        return []
    n = min(len(json.loads(p.read_text())["seeds"]) for p in summaries)
    return [enough_seeds("rank_sum", n, source="Zhong et al. 2022, Sec. 4.3.2 (rank-sum vs orig-ft)")]


NUM_CLASSES = {"digits": 10, "mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100}  # where unrecorded


def _config_fields(out: Path) -> dict:
    """The config fields of ``out/experiment.json``, a nested ``train`` recipe's fields flattened in."""
    fields = json.loads((out / "experiment.json").read_text())["config"]["fields"]
    return {**fields, **(fields.get("train") or {})}


def minority_group_smaller(sizes: dict, minority: str, majority: str, source: str = "Adebayo 2022, Sec. 6.3") -> dict:
    """The group called the minority is the smaller one: ``sizes`` ``{label: {group: size}}`` (e.g. one per seed)
    with ``minority`` below ``majority`` in every entry; the value is the largest minority share."""
    shares = {k: v[minority] / max(v[minority] + v[majority], 1) for k, v in sizes.items()}
    bad = [k for k, v in sizes.items() if not v[minority] < v[majority]]
    return check("minority group smaller than the majority", max(shares.values()) if shares else None,
                 f"{minority} test group < {majority} test group", None if not sizes else not bad, source,
                 "; ".join(f"{k}: {v[minority]} / {v[majority]}" for k, v in sizes.items())
                 + (f" (not smaller in {', '.join(map(str, bad))})" if bad else ""))


def _label_flip_degenerate(sensitivity: dict) -> dict:
    """No degenerate model among the label-flip study's fits: each record's balanced accuracy on the clean test
    labels (the test stage: the model fit on clean labels); not measured for records without it."""
    records, source = sensitivity["records"], "Adebayo 2022, Sec. 6.3 (our check)"
    k = NUM_CLASSES.get(sensitivity.get("dataset"))
    if not records or k is None or any("balanced_accuracy" not in r for r in records):
        return not_recorded("no degenerate model", f"balanced accuracy > 1/K + {DEGENERATE_EPS} for every model",
                            source, "the records hold group ECE only, no accuracy of the fitted models")
    models = {f"{r['model']} seed {r['seed']} fit on {r['fraction'] if r['stage'] == 'train' else 0:.0%} flipped "
              "training labels": r["balanced_accuracy"] for r in records}
    result = no_degenerate_model(models, k, source=source)
    result["detail"] += " (balanced accuracy on the clean test labels)"
    return result


def _label_flip_group_sizes(records: list[dict]) -> dict:
    """The heavy-ink (minority) test group smaller than the light-ink one in every seed; not measured for records
    without the group sizes."""
    from repair_jax.studies.influence import HEAVY_INK, LIGHT_INK

    if not records or any("group_sizes" not in r for r in records):
        return not_recorded("minority group smaller than the majority", "heavy-ink test group < light-ink test group",
                            "Adebayo 2022, Sec. 6.3",
                            "the test group sizes (heavy-ink: above the training set's 75th intensity percentile)")
    return minority_group_smaller({f"seed {r['seed']}": r["group_sizes"] for r in records}, HEAVY_INK, LIGHT_INK)


def _label_flip_checks(out: Path) -> list[dict]:
    """Adebayo 2022, Sec. 6.3 (Figs. 6-1/6-2 analogues): every flipped setting changed its group ECE against
    the unflipped one of its (stage, model, seed); no fitted model at chance; the heavy-ink (minority) test group
    smaller than the light-ink one. No test is run (the status page compares means), so no seed check. Records
    written before they held balanced accuracy and group sizes leave those two checks not measured."""
    sensitivity = json.loads((out / "sensitivity.json").read_text())
    records = sensitivity["records"]
    base = {(r["stage"], r["model"], r["seed"]): r["ece"] for r in records if r["fraction"] == 0}
    unchanged, total = [], 0
    for r in records:
        if r["fraction"] > 0:
            for group, ece in r["ece"].items():
                total += 1
                if ece == base[(r["stage"], r["model"], r["seed"])][group]:
                    unchanged.append(f"{r['stage']} {r['model']} seed {r['seed']} {r['fraction']:.0%} {group}")
    return [flips_changed_labels(unchanged, total), _label_flip_degenerate(sensitivity),
            _label_flip_group_sizes(records)]


def _ood_checks(out: Path) -> list[dict]:
    """Adebayo 2022, Sec. 4.5 (Table 4.4 analogue): both models above chance on their own test split (test
    accuracy: the results record no balanced accuracy; the chance level 1/K is the same on a balanced split),
    and the out-of-domain model trained on another data set than the explained inputs."""
    fields = _config_fields(out)
    dataset, ood = fields.get("dataset"), fields.get("ood_dataset")
    acc = json.loads((out / "results.json").read_text())["accuracies"]
    ks = {NUM_CLASSES.get(d) for d in (dataset, ood)}
    models = {f"{dataset} model on {dataset}": acc["model"], f"{ood} model on {ood}": acc["ood_model"]}
    if len(ks) == 1 and None not in ks:
        degenerate = no_degenerate_model(models, ks.pop(), source="Adebayo 2022, Sec. 4.5 (our check)")
        degenerate["detail"] += " (test accuracy; the results record no balanced accuracy)"
    else:
        degenerate = not_recorded("no degenerate model", f"accuracy > 1/K + {DEGENERATE_EPS} for every model",
                                  "Adebayo 2022, Sec. 4.5 (our check)",
                                  f"the number of classes of {dataset} and {ood}")
    return [degenerate, ood_model_on_other_data(dataset, ood)]


def _lds_checks(out: Path) -> list[dict]:
    """The LDS study (Park et al. 2023, Sec. 2): enough subsets for its Spearman correlations; every fit
    converged: the full fit (tolerance 1e-8), the retrained subsets (the config's ``retrain_tol``: the LDS's
    ground truth), the leave-one-out retraining (1e-8) and, where recorded, the refit on the noisy labels (1e-8)."""
    from repair_jax.studies.influence_lds import FIT_TOL, LOO_TOL

    fields = _config_fields(out)
    runs = {}
    for c in _records(out / "cells.jsonl"):
        cell = f"{c['dataset']} {c['model']}"
        runs[f"{cell} fit"] = (c["fit_grad_norm"], FIT_TOL)
        runs[f"{cell} subsets (largest)"] = (c["retrain_max_grad_norm"], fields["retrain_tol"])
        runs[f"{cell} leave-one-out (largest)"] = (c["loo_max_grad_norm"], LOO_TOL)
        if "noisy_fit_grad_norm" in c:  # recorded since issue 29
            runs[f"{cell} noisy-label fit"] = (c["noisy_fit_grad_norm"], FIT_TOL)
    return [enough_subsets(fields["num_subsets"]), lbfgs_converged(runs)]


def _credit_checks(out: Path) -> list[dict]:
    """Adebayo 2022, Table 5.3 (the credit row) on the synthetic credit table: the carved and the guided model
    predict the true limit better than a constant; the bilevel lower level converged in every seed (Sec.
    5.2.3). No test is run (mean ± std over the seeds), so no seed check."""
    from repair_jax.guiding.synthetic import CREDIT_LIMIT_STD

    rows = json.loads((out / "summary.json").read_text())["rows"]
    rmses = {f"{m} seed {r['seed']}": v for r in rows for m, v in r["test_rmse_vs_true_limit"].items()}
    return [regression_above_constant(rmses, CREDIT_LIMIT_STD),
            lower_level_converged({f"seed {r['seed']}": r["lower_converged"] for r in rows})]


def _ranking_checks(out: Path) -> list[dict]:
    """Adebayo 2022, Sec. 6.5 (Fig. 6-3 analogue): a strictly convex ERM objective (Sec. 6.2), converged CG
    solves of the influence (Eq. 6.4 / 6.5), and the configured fraction of training labels flipped per seed.
    No test is run (mean ± std over the seeds), so no seed check."""
    fields = _config_fields(out)
    result = json.loads((out / "ranking.json").read_text())
    seeds = result["per_seed"]
    return [strictly_convex_erm(fields["model"]["hidden"], fields["model"]["l2"]),
            cg_converged({f"seed {r['seed']}": r["cg"] for r in seeds}, detail="IF-Calib's solve per seed, which "
                         "IF-Calib-Label reuses (the runs record no summary of IF-Norm's solve)"),
            flipped_as_configured({f"seed {r['seed']}": (r["flipped"], r["n_train"]) for r in seeds},
                                  result["flip_fraction"])]


STUDY_CHECKS: dict[str, Callable[[Path], list[dict]]] = {
    "WRStudy": _wr_checks,
    "SpuriousAttributionStudy": _spurious_checks,
    "SpuriousConceptStudy": _spurious_checks,
    "SpuriousTrainingRankingStudy": _spurious_checks,
    "MislabelledExplanationStudy": _mislabelled_checks,
    "RobustnessStudy": _robustness_checks,
    "BiasMitigationStudy": _bias_checks,
    "MultimodalBiasStudy": _bias_checks,
    "IRepairStudy": _irepair_checks,
    "LabelFlipSensitivityStudy": _label_flip_checks,
    "OODExplanationStudy": _ood_checks,
    "LdsStudy": _lds_checks,
    "CreditStudy": _credit_checks,
    "InfluenceRankingStudy": _ranking_checks,
}


def config_type_name(config_type) -> str:
    """``"RobustnessStudy"`` from a class, an instance's class name or a qualified name such as an
    ``experiment.json``'s ``"repair_jax.robustness.study.RobustnessStudy"`` (written before the studies moved)."""
    name = config_type if isinstance(config_type, str) else getattr(config_type, "__name__", "")
    return name.rsplit(".", 1)[-1]


def study_preconditions(config_type, out: str | Path) -> list[dict]:
    """The precondition checks of the study of ``config_type`` (see :func:`config_type_name`) from the files it
    wrote into ``out``; [] for a study without preconditions (or whose files are missing)."""
    fn = STUDY_CHECKS.get(config_type_name(config_type))
    out = Path(out)
    try:
        return fn(out) if fn is not None else []
    except FileNotFoundError:
        return []


def overall(checks: list[dict]) -> str | None:
    """``"FAIL"`` if a check failed, else ``"not measured"`` if one was not measured, else ``"PASS"``; None
    for no checks."""
    if not checks:
        return None
    passed = [c["passed"] for c in checks]
    return "FAIL" if False in passed else "not measured" if None in passed else "PASS"


def status_line(checks: list[dict]) -> str | None:
    """``**Preconditions: PASS**``, or ``FAIL`` / ``not measured`` naming the checks that are."""
    status = overall(checks)
    if status is None:
        return None
    which = [c["name"] for c in checks if c["passed"] is (False if status == "FAIL" else None)]
    return f"{LINE_PREFIX} {status}**" + (f" ({'; '.join(which)})" if which else "")


def without_status_line(text: str) -> str:
    """``text`` without a first ``**Preconditions: ...**`` line (and the blank line after it)."""
    if text.startswith(LINE_PREFIX):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        return text[1:] if text.startswith("\n") else text
    return text


def with_status_line(text: str, line: str | None) -> str:
    """``text`` with ``line`` as its first line (replacing an earlier one); unchanged text for no line."""
    text = without_status_line(text)
    return text if line is None else f"{line}\n\n{text}"


@after_run
def write_preconditions(out: str | Path, config_type) -> list[dict]:
    """Writes ``out/preconditions.json`` (``{"status", "checks"}``) for a study with preconditions and puts the
    status line first in its Markdown tables (every ``out/*.md`` but README.md). Returns the checks."""
    out = Path(out)
    checks = study_preconditions(config_type, out)
    if not checks:
        return checks
    (out / PRECONDITIONS_JSON).write_text(json.dumps({"status": overall(checks), "checks": checks}, indent=1) + "\n")
    line = status_line(checks)
    for md in sorted(out.glob("*.md")):
        if md.name != "README.md":
            md.write_text(with_status_line(md.read_text(), line))
    return checks
