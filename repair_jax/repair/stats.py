"""Comparison statistics and hyper-parameter selection of 000_92ecc981581ec3ed.txt Sec. 4.3-4.4.

* :func:`rank_sum` - Sec. 4.3.1: rank by accuracy (high first) and by error (low first), sum the ranks.
* :func:`wilcoxon_rank_sum` - Sec. 4.3.2: ``scipy.stats.ranksums`` (normal approximation, two-sided;
  with 5 vs 5 fully separated samples it gives p = 0.0090, the "0.009" of the paper's tables).
* :func:`vargha_delaney_a12` and :func:`a12_magnitude` - the effect size and its label.
* :func:`compare_to_baseline` - the tests in the order of Sec. 4.3.2.
* :func:`select_rhos` - the selection rules of Sec. 4.4.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import stats as _stats

# |2 A12 - 1| (Cliff's delta) thresholds of Romano et al.; they reproduce every label of 000's Table 2
# (e.g. 0.28 -> medium, 0.36 -> small, 0.24 -> large).
A12_THRESHOLDS = (0.147, 0.33, 0.474)


def wilcoxon_rank_sum(x: Sequence[float], y: Sequence[float]) -> float:
    """Two-sided p-value of the Wilcoxon rank-sum test of ``x`` vs ``y`` (scipy.stats.ranksums).

    Two identical constant samples give p = 1 (no evidence of a difference).
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if np.all(x == x[0]) and np.all(y == x[0]):
        return 1.0
    return float(_stats.ranksums(x, y).pvalue)


def vargha_delaney_a12(x: Sequence[float], y: Sequence[float]) -> float:
    """A12 = P(X > Y) + 0.5 P(X = Y) over all pairs (Vargha & Delaney 2000)."""
    x, y = np.asarray(x, float)[:, None], np.asarray(y, float)[None, :]
    return float(np.mean((x > y) + 0.5 * (x == y)))


def a12_magnitude(a12: float) -> str:
    """negligible / small / medium / large from |2 A12 - 1| against :data:`A12_THRESHOLDS`."""
    d = abs(2 * a12 - 1)
    for label, t in zip(("negligible", "small", "medium"), A12_THRESHOLDS):
        if d < t:
            return label
    return "large"


def ranks(values: Sequence[float], descending: bool, decimals: int = 4) -> list[int]:
    """Competition ranks ("1, 1, 3"): ties (after rounding to ``decimals``, as displayed) share the best rank."""
    v = np.round(np.asarray(values, float), decimals)
    v = -v if descending else v
    return [int(np.sum(v < vi)) + 1 for vi in v]


def rank_sum(accuracies: Sequence[float], errors: Sequence[float]) -> tuple[list[int], list[int], list[int]]:
    """(accuracy ranks, error ranks, rank sums) of 000 Sec. 4.3.1 for the models given (means)."""
    ra = ranks(accuracies, descending=True)
    re = ranks(errors, descending=False)
    return ra, re, [a + e for a, e in zip(ra, re)]


def compare_to_baseline(acc: Sequence[float], err: Sequence[float], base_acc: Sequence[float],
                        base_err: Sequence[float], gate: float = 0.10) -> dict:
    """The tests of 000 Sec. 4.3.2 against orig-ft, in its order.

    Error tests only if the mean error is below the baseline's; accuracy tests only if the error is
    lower at level ``gate`` (0.10). A12 is P(method > orig-ft) (0 = always lower). Keys absent = not
    tested.
    """
    out: dict = {}
    if np.mean(err) < np.mean(base_err):
        out["err_p"] = wilcoxon_rank_sum(err, base_err)
        out["err_a12"] = vargha_delaney_a12(err, base_err)
        out["err_a12_magnitude"] = a12_magnitude(out["err_a12"])
        if out["err_p"] < gate:
            out["acc_p"] = wilcoxon_rank_sum(acc, base_acc)
            out["acc_a12"] = vargha_delaney_a12(acc, base_acc)
            out["acc_a12_magnitude"] = a12_magnitude(out["acc_a12"])
    return out


def select_rhos(rows: Sequence[dict], orig_acc: float, orig_err: float, lambda1: float = 0.25) -> list[float]:
    """The rho values selected for one method by the rules of 000 Sec. 4.4 (verbatim).

    ``rows``: one ``{"rho", "accuracy", "target_error"}`` per grid value. Returns the selected rho
    first, then (possibly) the additionally selected one:

    1. among rhos with error <= (1 - lambda1) * orig error, the highest accuracy; else
    2. among rhos with error <= orig error, the highest accuracy; else
    3. the highest accuracy overall.
    If the selection does not have both higher accuracy and lower error than the original model and
    some rho does, that rho (the highest-accuracy one) is additionally selected. Ties: lower error,
    then larger rho.
    """
    if not rows:
        return []
    best = lambda rs: max(rs, key=lambda r: (r["accuracy"], -r["target_error"], r["rho"]))
    tier1 = [r for r in rows if r["target_error"] <= (1 - lambda1) * orig_err]
    tier2 = [r for r in rows if r["target_error"] <= orig_err]
    chosen = best(tier1 or tier2 or rows)
    selected = [chosen["rho"]]
    better = lambda r: r["accuracy"] > orig_acc and r["target_error"] < orig_err
    if not better(chosen):
        dominating = [r for r in rows if better(r)]
        if dominating:
            selected.append(best(dominating)["rho"])
    return selected
