"""repair_jax.stats.paired_t_test_p against scipy and at its edges."""

import math

import numpy as np
import pytest
import scipy.stats

from repair_jax.stats import paired_t_test_p


def test_paired_t_test_matches_scipy_and_handles_edges():
    a, b = [0.81, 0.79, 0.84, 0.80], [0.78, 0.79, 0.80, 0.76]
    assert paired_t_test_p(a, b) == pytest.approx(scipy.stats.ttest_rel(a, b).pvalue)
    # pairing matters: the independent test on the same numbers gives another p
    assert paired_t_test_p(a, b) != pytest.approx(scipy.stats.ttest_ind(a, b).pvalue)
    assert math.isnan(paired_t_test_p([0.5], [0.4]))
    assert paired_t_test_p([0.5, 0.6], [0.5, 0.6]) == 1.0  # zero differences
    assert paired_t_test_p(np.array([0.5, 0.6]) + 0.1, [0.5, 0.6]) == 0.0  # a constant shift
    with pytest.raises(ValueError):
        paired_t_test_p([0.1, 0.2], [0.1])


def test_pearson_and_spearman_match_scipy_and_are_nan_where_undefined():
    from repair_jax.stats import pearson, spearman

    rng = np.random.default_rng(0)
    a = rng.normal(size=30)
    b = a + rng.normal(size=30)
    b[:5] = b[5]  # ties for the ranks
    assert pearson(a, b) == pytest.approx(scipy.stats.pearsonr(a, b).statistic, rel=1e-12)
    assert spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a, b).statistic, rel=1e-12)
    assert spearman(a, a) == 1.0 and spearman(a, -a) == pytest.approx(-1.0)
    for f in (pearson, spearman):
        assert math.isnan(f([1.0], [2.0])) and math.isnan(f(a, np.ones(30)))
        with pytest.raises(ValueError):
            f(a, a[:-1])


def test_power_analysis_against_the_textbook_and_a_simulation():
    """Cohen's d and the runs per group for 80 % power (Cohen 1988: d = 0.5 -> 64, d = 0.8 -> 26, d = 1 -> 17),
    and a simulation of the t-test at the n it gives reaching about that power."""
    import numpy as np
    from scipy import stats as st

    from repair_jax.stats import cohens_d, seeds_for_power

    assert cohens_d([1, 2, 3], [1, 2, 3]) == 0.0 and np.isnan(cohens_d([1], [2, 3]))
    assert cohens_d([2, 3, 4], [1, 2, 3]) == pytest.approx(1.0)
    assert [seeds_for_power(d) for d in (0.5, 0.8, 1.0)] == [64, 26, 17]
    assert seeds_for_power(0.0) is None and seeds_for_power(-0.8) == 26
    rng = np.random.default_rng(0)
    n = seeds_for_power(1.0)
    hits = np.mean([st.ttest_ind(rng.normal(1, 1, n), rng.normal(0, 1, n)).pvalue < 0.05 for _ in range(2000)])
    assert 0.77 < hits < 0.85
