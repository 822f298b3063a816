"""Bias measurement and mitigation of the Dependable AI report (004_9347ff94c01a7b9b.txt).

Metrics live in :mod:`repair_jax.metrics` (class-wise disparate impact, macro/weighted averages,
ROC curves); this package holds the comparison of runs, the figures and the mitigations. See
docs/bias.md.
"""

from repair_jax.bias.compare import compare_rows, compare_runs, evaluate_predictions, format_comparison
from repair_jax.bias.plots import plot_comparison, plot_roc_curves

__all__ = ["compare_rows", "compare_runs", "evaluate_predictions", "format_comparison", "plot_comparison",
           "plot_roc_curves"]
