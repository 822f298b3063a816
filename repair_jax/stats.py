"""The one statistics module: ranks and rank sums, the Wilcoxon rank-sum test, Vargha-Delaney A12,
t-tests and mean confidence intervals, each a thin, documented layer over scipy.

* :func:`rank_sum` - Zhong et al. 2022, Sec. 4.3.1: rank by accuracy (high first) and by error
  (low first), sum the ranks.
* :func:`wilcoxon_rank_sum` - Zhong et al. 2022, Sec. 4.3.2: ``scipy.stats.ranksums`` (normal approximation,
  two-sided; with 5 vs 5 fully separated samples it gives p = 0.0090, the "0.009" of the paper's
  tables). :func:`min_rank_sum_p` is the smallest p it can give for given sample sizes (2 vs 2:
  0.121, so no difference can be significant at 0.05); :func:`min_exact_rank_sum_p` is the exact test's,
  2 / C(n + m, n).
* :func:`one_sample_p` - a deterministic method (one value, no seeds) against a baseline's seed runs:
  ``scipy.stats.ttest_1samp`` of the runs against the value (two-sided). Its p reaches 0 as the
  runs' spread shrinks, for any n >= 2 (the signed-rank alternative cannot go below 2 / 2^n,
  0.0625 for 5 seeds, so it could never call a deterministic method significant at 5 seeds).
* :func:`vargha_delaney_a12` and :func:`a12_magnitude` - the effect size and its label.
* :func:`t_test_p` and :func:`mean_ci` - Henriksen et al. 2022, Sec. 5 (RQ i): independent
  two-sample t-test and the Student-t interval of a mean.
* :func:`paired_t_test_p` - the paired t-test, for runs matched by seed (Pradhan et al. 2020, Table 1 analogue).
* :func:`pearson` and :func:`spearman` - correlation of two samples (predicted vs. actual influence,
  Koh & Liang 2017; the LDS of Park et al. 2023, Sec. 2; the rank correlation of attributions, Adebayo 2022,
  Table 4.4), NaN where undefined.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

# |2 A12 - 1| (Cliff's delta) thresholds of Romano et al.; they reproduce every label of Zhong et al.'s (2022) Table 2
# (e.g. 0.28 -> medium, 0.36 -> small, 0.24 -> large).
A12_THRESHOLDS = (0.147, 0.33, 0.474)


class InsufficientSeedsWarning(UserWarning):
    """The number of runs cannot reach the significance level at all (e.g. 2 vs 2 in a rank-sum test)."""


def ranks(values: Sequence[float], descending: bool, decimals: int = 4) -> list[int]:
    """Competition ranks ("1, 1, 3"): ties (after rounding to ``decimals``, as displayed) share the best rank."""
    v = np.round(np.asarray(values, float), decimals)
    v = -v if descending else v
    return [int(np.sum(v < vi)) + 1 for vi in v]


def rank_sum(accuracies: Sequence[float], errors: Sequence[float]) -> tuple[list[int], list[int], list[int]]:
    """(accuracy ranks, error ranks, rank sums) of Zhong et al. 2022, Sec. 4.3.1 for the models given (means)."""
    ra = ranks(accuracies, descending=True)
    re = ranks(errors, descending=False)
    return ra, re, [a + e for a, e in zip(ra, re)]


def wilcoxon_rank_sum(x: Sequence[float], y: Sequence[float]) -> float:
    """Two-sided p-value of the Wilcoxon rank-sum test of ``x`` vs ``y`` (scipy.stats.ranksums).

    Two identical constant samples give p = 1 (no evidence of a difference).
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if np.all(x == x[0]) and np.all(y == x[0]):
        return 1.0
    return float(_scipy_stats().ranksums(x, y).pvalue)


def min_rank_sum_p(n: int, m: int) -> float:
    """The smallest p :func:`wilcoxon_rank_sum` can give for samples of sizes n and m (fully separated)."""
    if n < 1 or m < 1:
        return 1.0
    return wilcoxon_rank_sum(np.arange(n), np.arange(n, n + m))


def min_exact_rank_sum_p(n: int, m: int) -> float:
    """The smallest two-sided p of the exact Wilcoxon rank-sum (Mann-Whitney) test for sizes n and m:
    2 / C(n + m, n), the two fully separated orderings (3 vs 3: 0.1; 4 vs 4: 0.029). :func:`wilcoxon_rank_sum`
    uses the normal approximation, which gives a smaller p for small samples (3 vs 3: 0.0495)."""
    from math import comb

    if n < 1 or m < 1:
        return 1.0
    return min(1.0, 2.0 / comb(n + m, n))


def one_sample_p(runs: Sequence[float], value: float) -> float | None:
    """Two-sided p of ``scipy.stats.ttest_1samp(runs, value)``: do the runs' mean and one fixed value differ?

    ``None`` (no test possible) for fewer than 2 runs or runs without spread.
    """
    runs = np.asarray(runs, np.float64)
    if len(runs) < 2 or np.all(runs == runs[0]):
        return None
    return float(_scipy_stats().ttest_1samp(runs, float(value)).pvalue)


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


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its Student-t confidence interval (0 for fewer than 2 values)."""
    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return float(v.mean()) if len(v) else float("nan"), 0.0
    half = _scipy_stats().t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean()), float(half)


def t_test_p(a, b) -> float:
    """Independent two-sample t-test p-value (Henriksen et al. 2022, Sec. 5 RQ i); NaN with fewer than 2 values."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    if np.allclose(a, a[0]) and np.allclose(b, b[0]):
        return 1.0 if np.isclose(a[0], b[0]) else 0.0
    with warnings.catch_warnings():  # nearly constant samples: scipy warns, the p-value stands
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(_scipy_stats().ttest_ind(a, b).pvalue)


def paired_t_test_p(a, b) -> float:
    """Paired two-sided t-test p-value of ``a`` against ``b`` (``scipy.stats.ttest_rel``), for runs
    matched by seed (Pradhan et al. 2020, Table 1 analogue: a method and plain training share each seed's data subset and
    initialisation). NaN with fewer than 2 pairs; with constant differences, 1 if they are 0, else 0."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples need equal shapes, got {a.shape} and {b.shape}")
    if len(a) < 2:
        return float("nan")
    d = a - b
    if np.allclose(d, d[0]):
        return 1.0 if np.isclose(d[0], 0.0) else 0.0
    return float(_scipy_stats().ttest_rel(a, b).pvalue)


def _correlation_undefined(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        raise ValueError(f"correlated samples need equal shapes, got {a.shape} and {b.shape}")
    return a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0


def pearson(a, b) -> float:
    """Pearson's r of two equal-length samples; NaN with fewer than 2 values or a constant sample."""
    a, b = np.ravel(np.asarray(a, np.float64)), np.ravel(np.asarray(b, np.float64))
    if _correlation_undefined(a, b):
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def spearman(a, b) -> float:
    """Spearman's rho (``scipy.stats.spearmanr``) of two equal-length samples, clipped to [-1, 1] and exactly 1
    for identical ones (scipy's rounding gives 1 - 2e-16); NaN with fewer than 2 values or a constant sample."""
    a, b = np.ravel(np.asarray(a, np.float64)), np.ravel(np.asarray(b, np.float64))
    if _correlation_undefined(a, b):
        return float("nan")
    if np.array_equal(a, b):
        return 1.0
    return float(np.clip(_scipy_stats().spearmanr(a, b).statistic, -1.0, 1.0))


def cohens_d(a, b) -> float:
    """Cohen's d of two samples: the mean difference over the pooled standard deviation (ddof 1); NaN with
    fewer than 2 values in a sample or no spread."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    pooled = np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    return float((a.mean() - b.mean()) / pooled) if pooled > 0 else float("nan")


def seeds_for_power(d: float, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Runs per group a two-sided two-sample t-test needs to detect an effect of Cohen's ``d`` with probability
    ``power`` at level ``alpha``: the smallest n whose noncentral t power (df 2n - 2, noncentrality d sqrt(n/2))
    reaches ``power`` (None for d = 0 or NaN; at most 10,000)."""
    if not np.isfinite(d) or d == 0:
        return None
    st = _scipy_stats()
    for n in range(2, 10_001):
        df, nc = 2 * n - 2, abs(d) * np.sqrt(n / 2)
        crit = st.t.ppf(1 - alpha / 2, df)
        if st.nct.sf(crit, df, nc) + st.nct.cdf(-crit, df, nc) >= power:
            return n
    return None


def _scipy_stats():
    """``scipy.stats``, imported on first use (its import takes about a second)."""
    from scipy import stats

    return stats
