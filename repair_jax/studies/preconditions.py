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

:func:`study_preconditions` computes a study's checks from the files it wrote (by config type, see
:data:`STUDY_CHECKS`); :func:`write_preconditions` writes them to ``OUT/preconditions.json`` and puts
``**Preconditions: PASS**`` (or ``FAIL`` / ``not measured``, naming the checks) first in the study's Markdown
tables. :func:`repair_jax.experiment.run_experiment` calls it after every runner (an :func:`repair_jax.experiment.after_run`
hook).
"""

from __future__ import annotations

import json
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


# ----------------------------------------------------------------------------- a study's checks from its files

def _records(path: Path) -> list[dict]:
    """A study's resumable log without its header line."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in lines if "resumable_config" not in r]


def _spurious_checks(out: Path) -> list[dict]:
    """The Ch. 4 spurious studies (Table 4.1, 4.2, 4.3 analogues): their (seed, signal) records' scores."""
    records = _records(out / "results.jsonl")
    return [spurious_models_condition([r["spurious_score"] for r in records]),
            normal_model_condition([r["normal_max_score"] for r in records])]


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
