"""Former home of the WR study, now split into :mod:`.config`, :mod:`.sweep`, :mod:`.report` and
:mod:`.evaluation`. Kept so that callers importing ``repair_jax.repair.study`` keep working until they
import from :mod:`repair_jax.repair`; it defines nothing of its own."""

from repair_jax.repair.config import RepairConfig, parse_targets  # noqa: F401
from repair_jax.repair.evaluation import (  # noqa: F401
    error_kind, evaluate_outputs, output_probabilities, target_error, w_os_tradeoff,
)
from repair_jax.repair.report import format_table, plot_study, summarize_study  # noqa: F401
from repair_jax.repair.sweep import fine_tune, run_one, run_study  # noqa: F401


def accuracy_loss_allowed(cfg: RepairConfig, orig_ft_accuracy: float) -> float:
    """Old signature of :meth:`RepairConfig.accuracy_loss_allowed`."""
    return cfg.accuracy_loss_allowed(orig_ft_accuracy)
