"""Matplotlib figures written atomically as PNG (Agg backend, no display needed)."""

from __future__ import annotations

import io as _io
from pathlib import Path
from typing import Sequence

import sys

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from repair_jax.io import write_bytes_atomic  # noqa: E402


def __getattr__(name: str):
    """``plt`` (``matplotlib.pyplot``), imported on first use: the figures of this module and
    :mod:`repair_jax.bias.plots` need no pyplot (its import is a third of a second of ``diagnose``)."""
    if name == "plt":
        import matplotlib.pyplot as plt

        return plt
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def subplots(*args, figsize=None, **kwargs):
    """``(fig, axes)`` as ``plt.subplots``, on a figure pyplot does not track (saved by :func:`save_figure`,
    then garbage)."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def save_figure(fig, path: str | Path, dpi: int = 120) -> None:
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    if "matplotlib.pyplot" in sys.modules:  # a pyplot figure: release it (a no-op for subplots' figures)
        sys.modules["matplotlib.pyplot"].close(fig)
    write_bytes_atomic(path, buf.getvalue())


def plot_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], path: str | Path,
                          title: str = "Confusion matrix", normalize: bool = True) -> None:
    """Heat map of a confusion matrix (rows = true class); row-normalised by default, counts printed."""
    cm = np.asarray(cm)
    k = cm.shape[0]
    rates = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalize else cm
    # at most 14 inches: a 100-class matrix (CIFAR-100) reads as a heat map with small tick labels, and a
    # 47-inch figure took seconds to draw
    size = min(max(4.0, 0.45 * k + 2), 14.0)
    ticks = 8 if k <= 30 else 4
    fig, ax = subplots(figsize=(size, size))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(k), class_names, rotation=60 if k <= 30 else 90, ha="right" if k <= 30 else "center",
                  fontsize=ticks)
    ax.set_yticks(range(k), class_names, fontsize=ticks)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 * rates.max() else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    save_figure(fig, path)


def plot_accuracy_drop(groups: dict, path: str | Path, xlabel: str = "|R|",
                       title: str = "Accuracy drop after repair") -> None:
    """Mean accuracy drop with 95% CI per x value, one line per method (Henriksen et al. 2022, Fig. 1a).

    ``groups``: method label -> list of (x, mean, half_width).
    """
    fig, ax = subplots(figsize=(5.5, 3.6))
    for label, pts in groups.items():
        pts = sorted(pts)
        xs = np.arange(len(pts))
        ax.errorbar(xs, [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=3, label=label)
        ax.set_xticks(xs, [str(p[0]) for p in pts])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy drop (pp)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_roc_curves(curves: Sequence[dict], class_names: Sequence[str], path: str | Path,
                    title: str = "ROC curves (one vs rest)", aurocs: Sequence[float] | None = None) -> None:
    """One line per class from :func:`repair_jax.metrics.roc_curves_ovr` records (``fpr``, ``tpr``)."""
    fig, ax = subplots(figsize=(5.0, 4.4))
    for k, (curve, name) in enumerate(zip(curves, class_names)):
        label = name if aurocs is None else f"{name} (AUC {aurocs[k]:.3f})"
        ax.plot(curve["fpr"], curve["tpr"], lw=1.2, label=label)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    save_figure(fig, path)
