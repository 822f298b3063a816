"""Repair methods: I-REPAIR and MM repair (Henriksen et al. 2022) and Weighted Regularization (Zhong et al. 2022, Sec. 3-4).

WR methods are values (:mod:`.methods`: ``METHODS[name](targets, rho)`` -> :class:`RepairMethod`; each entry
a :class:`MethodEntry` declaring ``takes_rho``, ``needs_harm``, ``fine_tunes``, ``deterministic``, ...);
the study is :mod:`.config` (:class:`RepairConfig`), :mod:`.sweep` (:func:`run_study`) and
:mod:`repair_jax.repair.report` (summary, table, plots). I-REPAIR's locking variants are mask functions
(:mod:`.irepair`); its evaluation protocol is :mod:`.protocol`.
"""

from repair_jax.repair.config import RUN_FIELDS, RepairConfig
from repair_jax.repair.evaluation import (
    error_kind, evaluate_outputs, output_probabilities, target_error, w_os_tradeoff,
)
from repair_jax.repair.irepair import (
    IRepairConfig, IRepairResult, InfluenceLocking, LockingInputs, correct_set, estimate_influence,
    fixed_locking, i_repair, influence_scores, no_locking, random_locking_mask, random_locking_repair,
    repair_loop, repair_set, retrain,
)
from repair_jax.repair.methods import (
    BASELINES, METHODS, WR_METHODS, MethodEntry, RepairMethod, i_drop, lookup, make_method, needs_harm, orig, orig_ft,
    takes_rho, w_aug, w_bn, w_dbr, w_loss, w_os,
)
from repair_jax.repair.data_centric import dropped_examples, target_influence, target_quantity
from repair_jax.repair.mm import MMResult, mm_repair
from repair_jax.repair.protocol import (
    RepairContext, draw_problem, run_jobs, solve_problem, summary_table, write_irepair_result,
)
from repair_jax.repair.report import format_table, plot_study, significance, summarize_study
from repair_jax.repair.selection import compare_to_baseline, select_rhos
from repair_jax.repair.sweep import fine_tune, log_config, read_study_records, run_one, run_study
from repair_jax.repair.verdict import accuracy_loss_allowed, is_repaired, within_thresholds
from repair_jax.repair.weighted import (
    RHO_GRID, W_OS_EXTRA_RHOS, Targets, class_distance, class_representations, confused_subset_mask,
    distance_regularizer, weighted_augmentation_class_weights, weighted_batch_norm_objective,
    weighted_batch_norm_weights, weighted_dbr_objective, weighted_loss, weighted_loss_objective,
    weighted_output_smoothing,
)
from repair_jax.stats import (
    a12_magnitude, mean_ci, rank_sum, t_test_p, vargha_delaney_a12, wilcoxon_rank_sum,
)
