"""Repair methods."""

from repair_jax.repair.irepair import (
    IRepairConfig, IRepairResult, correct_set, estimate_influence, i_repair, influence_scores,
    random_locking_repair, repair_set, retrain,
)
from repair_jax.repair.mm import MMResult, mm_repair
