"""Baselines of the model-guiding evaluation (Adebayo 2022, Sec. 5.3): influence functions
(Koh & Liang 2017) on the linear carved model, computed with :mod:`repair_jax.influence` (the
project's influence engine, Ch. 6), the training-loss score, and Errors-ERM (Creager et al. 2021).
DUTI (Zhang et al. 2018) is :func:`bilevel_update` on a linear model of the embeddings with
``fi_weight = 0``.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from repair_jax.guiding.bilevel import audit_loss, per_example_loss
from repair_jax.influence import influence_pert_y, influence_up, s_test


def _linear_loss(theta: dict, batch: dict) -> jax.Array:
    """Per-example soft-label cross-entropy of the linear model (the lower level's loss)."""
    return per_example_loss(theta, batch["x"], batch["y"], "classification")


def influence_on_audit(theta: dict, z, y, z_audit, y_audit, c_audit, l2: float, num_classes: int,
                       method: str = "explicit"):
    """Influence of the training points on the confidence-weighted audit loss of a linear softmax
    model, via :mod:`repair_jax.influence`: one inverse-HVP solve ``s = H^-1 grad(audit loss)`` of
    the training objective ``mean CE + l2/2 ||theta||^2`` (the lower level of
    :func:`repair_jax.guiding.bilevel.lower_objective` at delta = 0), ``method`` explicit | cg |
    lissa, then forward-mode per-example derivatives.

    Returns (detect (n,), fix (n, K)): detect_i = I_up,loss(z_i, audit) = -s . grad l(z_i) (Eq. 3.1;
    > 0: up-weighting i raises the audit loss, i looks harmful); fix_ik = I_pert,y[i, y_i] -
    I_pert,y[i, k] (Eq. 6.3), the first-order decrease of the audit loss when i is relabelled k
    (0 for k = y_i). A solve that misses its tolerance is reported with a warning.
    """
    z = jnp.asarray(z)
    y = jnp.asarray(y, jnp.int32)
    train = {"x": z, "y": jax.nn.one_hot(y, num_classes, dtype=z.dtype)}
    theta = jax.tree_util.tree_map(jnp.asarray, theta)
    za, ya, ca = jnp.asarray(z_audit), jnp.asarray(y_audit, jnp.int32), jnp.asarray(c_audit)
    r = s_test(_linear_loss, theta, train,
               lambda p: audit_loss(p, za, ya, ca, "classification", num_classes), method=method, l2=l2)
    if not r.converged:
        warnings.warn(f"influence baseline: the {method} inverse-HVP solve stopped at residual "
                      f"{float(r.residual):.2e} > tol {r.tol:.0e}", RuntimeWarning, stacklevel=2)
    detect = influence_up(_linear_loss, theta, train, r.x)
    pert = influence_pert_y(_linear_loss, theta, train, r.x, num_classes)
    own = jnp.take_along_axis(pert, y[:, None], axis=1)
    return np.asarray(detect), np.asarray(own - pert)


def training_loss_scores(logits, y) -> np.ndarray:
    """Per-example cross-entropy of the trained model on its (possibly noisy) training labels."""
    logits = jnp.asarray(logits)
    return np.asarray(-jnp.take_along_axis(jax.nn.log_softmax(logits), jnp.asarray(y)[:, None], 1)[:, 0])


def errors_erm_scores(features, y, num_classes: int, l2: float = 1e-2) -> np.ndarray:
    """Errors-ERM: the loss of a simple (linear softmax, L2) model trained by ERM on the inputs'
    features; points it gets wrong are flagged as relying on a spurious signal."""
    from repair_jax.guiding.carving import fit_linear_head
    f = np.asarray(features, np.float32)
    f = (f - f.mean(0)) / np.maximum(f.std(0), 1e-6)
    theta = fit_linear_head(f, y, "classification", num_classes, l2=l2)
    return training_loss_scores(np.asarray(jnp.asarray(f) @ theta["w"] + theta["b"]), y)
