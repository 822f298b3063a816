"""Parameter contamination: cascading randomisation, top layer down (Adebayo 2022, Sec. 4.4,
after Adebayo et al. 2018b), and the rank correlation the thesis reports next to SSIM (Sec. 4.4-4.5)."""

from __future__ import annotations

from typing import Any

import numpy as np

from repair_jax.errors import UserError
from repair_jax.stats import spearman


def cascading_randomization(params: dict, random_params: dict) -> list[tuple[str, Any]]:
    """``[(layer, params_k)]``: step k re-initialises the top k layers with those of ``random_params``
    (a fresh ``init`` of the same model, whose top-level entries flax keeps in call order, the last
    being the top; the layer order is taken from it, since trained parameters that went through jax
    tree maps have their keys sorted); the last step is a fully re-initialised network."""
    if set(params) != set(random_params):
        raise UserError("the random parameters do not belong to the same model (different layers)")
    layers = list(random_params)
    steps, current = [], {name: params[name] for name in layers}
    for name in reversed(layers):
        current = {**current, name: random_params[name]}
        steps.append((name, current))
    return steps


def rank_correlation(maps_a, maps_b) -> tuple[float, float]:
    """Mean and SEM over examples of Spearman's rank correlation between paired attributions
    (N, ...) (Adebayo 2022, Table 4.4 "RK"), each flattened; the thesis ranks input dimensions by attribution.
    A pair with a constant map (e.g. an all-zero GradCAM) has no ranking and is left out; (NaN, NaN)
    when every pair is."""
    a, b = np.asarray(maps_a, np.float64), np.asarray(maps_b, np.float64)
    if a.shape != b.shape:
        raise UserError(f"attributions to compare differ in shape: {a.shape} vs {b.shape}")
    values = np.array([spearman(p, q) for p, q in zip(a, b)])
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    sem = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
    return float(values.mean()), sem
