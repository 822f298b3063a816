"""Former home of the study statistics, now :mod:`repair_jax.stats` (the tests) and
:mod:`repair_jax.repair.selection` (their order in 000 Sec. 4.3.2 and the rho selection of Sec. 4.4).
Kept so that callers importing ``repair_jax.repair.stats`` keep working; it defines nothing."""

from repair_jax.repair.selection import compare_to_baseline, select_rhos  # noqa: F401
from repair_jax.stats import (  # noqa: F401
    A12_THRESHOLDS, a12_magnitude, rank_sum, ranks, vargha_delaney_a12, wilcoxon_rank_sum,
)
