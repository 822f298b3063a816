"""Figures of the bias report (Sharma n.d., "Roc_curves", "Average metrics"):
one-vs-rest ROC curves of one model and the side-by-side comparison of several runs."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from repair_jax.plots import plot_roc_curves, save_figure, subplots  # noqa: F401 (plot_roc_curves: the bias API)


def plot_comparison(rows: Sequence[dict], columns: Sequence[str], class_metric: str,
                    class_names: Sequence[str], path: str | Path) -> None:
    """Left: grouped bars of the average ``columns`` per run; right: ``class_metric`` per class per run.

    ``rows``: :func:`repair_jax.bias.compare.compare_runs` rows (``name``, each column, ``per_class``).
    """
    fig, (ax1, ax2) = subplots(1, 2, figsize=(11, 3.8))
    width = 0.8 / max(len(rows), 1)
    for i, row in enumerate(rows):
        xs = np.arange(len(columns)) + i * width
        ax1.bar(xs, [row[c] for c in columns], width, label=row["name"])
        ks = np.arange(len(class_names)) + i * width
        ax2.bar(ks, row["per_class"][class_metric], width, label=row["name"])
    ax1.set_xticks(np.arange(len(columns)) + 0.4 - width / 2, columns, rotation=30, ha="right", fontsize=8)
    ax1.set_title("average metrics")
    ax2.set_xticks(np.arange(len(class_names)) + 0.4 - width / 2, class_names, rotation=45, ha="right",
                   fontsize=7)
    ax2.set_title(f"class-wise {class_metric}")
    ax1.legend(fontsize=7)
    save_figure(fig, path)
