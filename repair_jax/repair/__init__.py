"""Repair methods: I-REPAIR and MM repair (001) and Weighted Regularization (000 Sec. 3-4)."""

from repair_jax.repair.irepair import (
    IRepairConfig, IRepairResult, correct_set, estimate_influence, i_repair, influence_scores,
    random_locking_repair, repair_set, retrain,
)
from repair_jax.repair.mm import MMResult, mm_repair

from repair_jax.repair.stats import (
    a12_magnitude, compare_to_baseline, rank_sum, select_rhos, vargha_delaney_a12, wilcoxon_rank_sum,
)
from repair_jax.repair.study import (
    RepairConfig, evaluate_outputs, fine_tune, format_table, parse_targets, run_one, run_study,
    target_error, w_os_tradeoff,
)
from repair_jax.repair.weighted import (
    FINE_TUNED, METHODS, RHO_GRID, W_OS_EXTRA_RHOS, Targets, class_distance, class_representations,
    confused_subset_mask, distance_regularizer, weighted_augmentation_class_weights,
    weighted_batch_norm_objective, weighted_batch_norm_weights, weighted_dbr_objective, weighted_loss,
    weighted_loss_objective, weighted_output_smoothing,
)
