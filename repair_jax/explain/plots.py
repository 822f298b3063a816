"""Heat maps of attributions over the image, several methods side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from repair_jax.plots import plt, save_figure


def heat_map(attribution: np.ndarray) -> np.ndarray:
    """(H, W, C) attribution -> (H, W) map in [0, 1]: absolute value summed over channels, divided by
    its maximum (the thesis shows |M| per pixel, Adebayo 2022, Sec. 3.2; an all-zero map stays zero)."""
    m = np.abs(np.asarray(attribution, np.float64)).sum(-1)
    top = m.max()
    return m / top if top > 0 else m


def _show_image(ax, image: np.ndarray) -> None:
    image = np.asarray(image)
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(np.clip(image, 0, 1))


def plot_attributions(image: np.ndarray, attributions: dict[str, np.ndarray], path: str | Path,
                      title: str = "", alpha: float = 0.55, columns: int = 5) -> None:
    """The image, then one heat map per method laid over it (``attributions``: name -> (H, W, C))."""
    names: Sequence[str] = list(attributions)
    cols = min(columns, len(names) + 1)
    rows = int(np.ceil((len(names) + 1) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    _show_image(axes[0, 0], image)
    axes[0, 0].set_title("input", fontsize=8)
    for k, name in enumerate(names, start=1):
        ax = axes[k // cols, k % cols]
        _show_image(ax, image)
        ax.imshow(heat_map(attributions[name]), cmap="jet", alpha=alpha, vmin=0, vmax=1)
        ax.set_title(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    save_figure(fig, path)
