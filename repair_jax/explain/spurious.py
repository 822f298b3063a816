"""Does an explanation find a spurious signal? Adebayo 2022, Sec. 4.2.1.

Spurious contamination functions (SCF) paste a signal onto images (N, H, W, C) in [0, 1] and return the
ground-truth explanation mask (N, H, W) (1 where the signal is):

* ``tag``: a bright square in the top-left corner (the thesis's hospital tag), side ``max(2, H // 7)``;
* ``stripe``: a pair of bright vertical stripes, one column from each side edge (the thesis's stripes);
* ``texture``: the non-visible signal. The thesis blurs the background; the backgrounds of digits and
  Fashion-MNIST are uniformly black, where a blur changes nothing, so the analogue here is a
  low-amplitude (+0.04) checkerboard added to the background (pixels < 0.1): spatially confined to
  the background like the blur, and invisible at that amplitude.

The measures compare explanations by SSIM (scikit-image) of their heat maps (|attribution| summed
over channels, scaled to [0, 1], as rendered by :func:`repair_jax.explain.plots.heat_map`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from repair_jax.errors import UserError
from repair_jax.explain.plots import heat_map

SIGNALS = ("tag", "stripe", "texture")
TEXTURE_AMPLITUDE = 0.04
BACKGROUND = 0.1


def signal_mask(signal: str, images: np.ndarray) -> np.ndarray:
    """Ground-truth explanation masks (N, H, W) of ``signal`` on ``images`` (N, H, W, C)."""
    n, h, w = images.shape[:3]
    mask = np.zeros((n, h, w), np.float32)
    if signal == "tag":
        side = max(2, h // 7)
        mask[:, :side, :side] = 1
    elif signal == "stripe":
        mask[:, :, [1, w - 2]] = 1
    elif signal == "texture":
        checker = (np.add.outer(np.arange(h), np.arange(w)) % 2).astype(np.float32)
        mask = checker[None] * (images.max(-1) < BACKGROUND)
    else:
        raise UserError(f"unknown spurious signal {signal!r}; choose one of {', '.join(SIGNALS)}")
    return mask


def add_signal(signal: str, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SCF on every image: ``(contaminated images, masks)`` (Adebayo 2022, Sec. 4.2.1)."""
    images = np.asarray(images, np.float32)
    mask = signal_mask(signal, images)[..., None]
    if signal == "texture":
        return np.clip(images + TEXTURE_AMPLITUDE * mask, 0, 1), mask[..., 0]
    return np.where(mask > 0, 1.0, images).astype(np.float32), mask[..., 0]


def contaminate(signal: str, x: np.ndarray, y: np.ndarray, aligned_class: int) -> tuple[np.ndarray, np.ndarray]:
    """``SCF(x, y, c)`` on a training set: the signal on every example of the spurious-aligned class only;
    returns (x', mask (N, H, W), zero for untouched examples)."""
    x = np.array(x, np.float32)
    mask = np.zeros(x.shape[:3], np.float32)
    idx = np.flatnonzero(np.asarray(y) == aligned_class)
    x[idx], mask[idx] = add_signal(signal, x[idx])
    return x, mask


def spurious_score(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, signal: str,
                   aligned_class: int) -> float:
    """Definition 4.2.1: among inputs not predicted as the aligned class j, the fraction predicted j
    once the signal is added. ``predict(x) -> (N,)`` class indices."""
    pred = np.asarray(predict(x))
    keep = pred != aligned_class
    if not keep.any():
        raise UserError(f"every input is predicted as class {aligned_class}; the spurious score is undefined")
    return float(np.mean(np.asarray(predict(add_signal(signal, x[keep])[0])) == aligned_class))


def explanation_ssim(maps_a: np.ndarray, maps_b: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of the SSIM between paired explanations (N, H, W[, C]) (Adebayo 2022, Sec. 4.2.1,
    "Metrics for Feature Attribution"): each map (an attribution (H, W, C) or a mask (H, W)) is first
    turned into a heat map in [0, 1]."""
    from skimage.metrics import structural_similarity

    as_maps = lambda ms: [heat_map(m if m.ndim == 3 else m[..., None]) for m in np.asarray(ms)]
    heat_a, heat_b = as_maps(maps_a), as_maps(maps_b)
    if len(heat_a) != len(heat_b) or heat_a[0].shape != heat_b[0].shape:
        raise UserError(f"explanations to compare differ in shape: {np.shape(maps_a)} vs {np.shape(maps_b)}")
    values = np.array([structural_similarity(a, b, data_range=1.0) for a, b in zip(heat_a, heat_b)])
    sem = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
    return float(values.mean()), sem


def k_ssd(spurious_model_on_spurious: np.ndarray, masks: np.ndarray) -> tuple[float, float]:
    """K-SSD = S_d(E_{f_spu}(x_spu), x_gt): spurious model's explanations of spurious inputs vs the
    ground-truth masks (Adebayo 2022, Sec. 4.2.1). Returns (mean, SEM)."""
    return explanation_ssim(spurious_model_on_spurious, masks)


def ccm(spurious_model_on_normal: np.ndarray, normal_model_on_normal: np.ndarray) -> tuple[float, float]:
    """CCM = S_d(E_{f_spu}(x_norm), E_{f_norm}(x_norm)) (Adebayo 2022, Sec. 4.2.1). Returns (mean, SEM)."""
    return explanation_ssim(spurious_model_on_normal, normal_model_on_normal)


def fam(normal_model_on_spurious: np.ndarray, spurious_model_on_spurious: np.ndarray) -> tuple[float, float]:
    """FAM = S_d(E_{f_norm}(x_spu), E_{f_spu}(x_spu)) (Adebayo 2022, Sec. 4.2.1). Returns (mean, SEM)."""
    return explanation_ssim(normal_model_on_spurious, spurious_model_on_spurious)


def fam_gt(normal_model_on_spurious: np.ndarray, masks: np.ndarray) -> tuple[float, float]:
    """FAM-GT = S_d(E_{f_norm}(x_spu), x_gt) (Adebayo 2022, Sec. 4.2.1). Returns (mean, SEM)."""
    return explanation_ssim(normal_model_on_spurious, masks)


def distributions_differ(a, b, alpha: float = 0.05) -> tuple[float, float, bool]:
    """Kolmogorov-Smirnov two-sample test of two score distributions (TCAV concept rankings, ICM values),
    Adebayo 2022, Sec. 4.2.1 "Metrics for Concept Activation" / "Training Point Ranking": null = identical
    distributions, significance ``alpha`` (0.05 in the thesis). Returns (statistic, p, rejected)."""
    from scipy import stats

    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    if len(a) == 0 or len(b) == 0:
        raise UserError("the KS test needs two non-empty samples")
    res = stats.ks_2samp(a, b)
    return float(res.statistic), float(res.pvalue), bool(res.pvalue < alpha)


def identical_class_metric(ranking: np.ndarray, train_labels: np.ndarray, test_label: int, top: int) -> float:
    """ICM (Hanawa et al. 2020; Adebayo 2022, Sec. 4.2.1): the fraction of the ``top`` highest-ranked training
    points (``ranking``: training indices, most influential first) whose label is ``test_label``."""
    ranking = np.asarray(ranking)
    if not 0 < top <= len(ranking):
        raise UserError(f"top must be in [1, {len(ranking)}], got {top}")
    return float(np.mean(np.asarray(train_labels)[ranking[:top]] == test_label))
