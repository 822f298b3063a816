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
