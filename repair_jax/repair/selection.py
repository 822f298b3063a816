"""The comparison against orig-ft (Zhong et al. 2022, Sec. 4.3.2) and the selection of rho (Sec. 4.4).

The statistics themselves live in :mod:`repair_jax.stats`; this module fixes the order in which the
study applies them and how a deterministic method (one value, no seeds: orig, w-os) is compared: its
single value is never repeated as several samples; orig-ft's seed runs are tested against it with
:func:`repair_jax.stats.one_sample_p` (a one-sample t-test).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from repair_jax.stats import a12_magnitude, one_sample_p, vargha_delaney_a12, wilcoxon_rank_sum

RANK_SUM_TEST = "scipy.stats.ranksums (Wilcoxon rank-sum, two-sided)"
ONE_SAMPLE_TEST = "scipy.stats.ttest_1samp (orig-ft's runs against the one value, two-sided)"


def _test(x, base, deterministic: bool) -> tuple[float | None, float]:
    """(p or None when no test is possible, A12 = P(x > base))."""
    p = one_sample_p(base, x[0]) if deterministic else wilcoxon_rank_sum(x, base)
    return p, vargha_delaney_a12(x, base)


def compare_to_baseline(acc: Sequence[float], err: Sequence[float], base_acc: Sequence[float],
                        base_err: Sequence[float], gate: float = 0.10, deterministic: bool = False) -> dict:
    """The tests of Zhong et al. 2022, Sec. 4.3.2 against orig-ft, in its order.

    Error tests only if the mean error is below the baseline's; accuracy tests only if the error is
    lower at level ``gate`` (0.10). A12 is P(method > orig-ft) (0 = always lower). Keys absent = not
    tested; ``err_test`` names the test. ``deterministic``: ``acc``/``err`` hold the one value of a
    method without seeds, compared by a one-sample t-test (``err_p`` None when orig-ft's runs are
    fewer than 2 or all equal).
    """
    acc, err = np.asarray(acc, float), np.asarray(err, float)
    if deterministic and (len(acc) != 1 or len(err) != 1):
        raise ValueError(f"a deterministic method has one value, got {len(acc)} and {len(err)}")
    out: dict = {}
    if np.mean(err) < np.mean(base_err):
        out["err_test"] = ONE_SAMPLE_TEST if deterministic else RANK_SUM_TEST
        out["err_p"], out["err_a12"] = _test(err, base_err, deterministic)
        out["err_a12_magnitude"] = a12_magnitude(out["err_a12"])
        if out["err_p"] is not None and out["err_p"] < gate:
            out["acc_p"], out["acc_a12"] = _test(acc, base_acc, deterministic)
            out["acc_a12_magnitude"] = a12_magnitude(out["acc_a12"])
    return out


def select_rhos(rows: Sequence[dict], orig_acc: float, orig_err: float, lambda1: float = 0.25) -> list[float]:
    """The rho values selected for one method by the rules of Zhong et al. 2022, Sec. 4.4 (verbatim).

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
