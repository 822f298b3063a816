"""Does an explanation find a spurious signal? Adebayo 2022, Sec. 4.2.1.

Spurious contamination functions (SCF) paste a signal onto images (N, H, W, C) in [0, 1] and return the
ground-truth explanation mask (N, H, W) (1 where the signal is):

* ``tag``: a bright square in the top-left corner (the thesis's hospital tag), side ``max(2, H // 7)``;
  ``tag(S)``: side ``S`` pixels;
* ``stripe``: a pair of bright vertical stripes, one column from each side edge (the thesis's stripes);
* ``texture``: the non-visible signal. The thesis blurs the background; the backgrounds of digits and
  Fashion-MNIST are uniformly black, where a blur changes nothing, so the analogue here is a
  low-amplitude (+0.04) checkerboard added to the background (pixels < 0.1): spatially confined to
  the background like the blur, and invisible at that amplitude; ``texture(A)``: amplitude ``A``.

A signal is named by a string, its size or strength in brackets where it departs from the default, as the
imbalance levels are (``longtail(100)``): ``"tag(6)"``, ``"texture(0.12)"``. :func:`parse_signal` reads it.

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


def parse_signal(signal: str) -> tuple[str, float | None]:
    """``"tag"`` -> ``("tag", None)``; ``"tag(6)"`` -> ``("tag", 6.0)``: a signal's kind and its size (tag side in
    pixels) or strength (texture amplitude in (0, 1]); the stripe takes none."""
    name, paren, rest = str(signal).partition("(")
    if name not in SIGNALS:
        raise UserError(f"unknown spurious signal {signal!r}; choose one of {', '.join(SIGNALS)}, "
                        "e.g. tag(6) or texture(0.12)")
    if not paren:
        return name, None
    try:
        value = float(rest[:-1]) if rest.endswith(")") and name != "stripe" else None
    except ValueError:
        value = None
    bad = value is None or value <= 0 or (name == "tag" and value != int(value)) or (name == "texture" and value > 1)
    if bad:
        raise UserError(f"bad spurious signal {signal!r}: tag(S) takes a side S in pixels, texture(A) an amplitude "
                        "A in (0, 1], stripe takes none")
    return name, value


def signal_mask(signal: str, images: np.ndarray) -> np.ndarray:
    """Ground-truth explanation masks (N, H, W) of ``signal`` on ``images`` (N, H, W, C)."""
    name, value = parse_signal(signal)
    n, h, w = images.shape[:3]
    mask = np.zeros((n, h, w), np.float32)
    if name == "tag":
        side = max(2, h // 7) if value is None else min(int(value), h, w)
        mask[:, :side, :side] = 1
    elif name == "stripe":
        mask[:, :, [1, w - 2]] = 1
    else:
        checker = (np.add.outer(np.arange(h), np.arange(w)) % 2).astype(np.float32)
        mask = checker[None] * (images.max(-1) < BACKGROUND)
    return mask


def add_signal(signal: str, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SCF on every image: ``(contaminated images, masks)`` (Adebayo 2022, Sec. 4.2.1)."""
    images = np.asarray(images, np.float32)
    mask = signal_mask(signal, images)[..., None]
    name, value = parse_signal(signal)
    if name == "texture":
        amplitude = TEXTURE_AMPLITUDE if value is None else value
        return np.clip(images + amplitude * mask, 0, 1), mask[..., 0]
    return np.where(mask > 0, 1.0, images).astype(np.float32), mask[..., 0]


def label_independent_signals(signals, x: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A training set for a normal model that has seen the signals but cannot rely on them: each signal of
    ``signals`` pasted, in order, on its own random ``fraction`` of ``x`` (every class alike, so the signal
    carries no label information). Our departure from Adebayo 2022, Sec. 4.2.1, whose normal model is trained on
    clean data: on Fashion-MNIST's black background a clean model reads a bright signal as a class (see
    :class:`repair_jax.studies.explain_spurious.SpuriousAttributionStudy`)."""
    if not 0 < fraction <= 1:
        raise UserError(f"normal_signal_fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    x = np.array(x, np.float32)
    for signal in signals:
        idx = np.flatnonzero(rng.random(len(x)) < fraction)
        x[idx] = add_signal(signal, x[idx])[0]
    return x


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
