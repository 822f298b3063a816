"""Baselines of the model-guiding evaluation (Adebayo 2022, Sec. 5.3): influence functions
(Koh & Liang 2017) on the linear carved model, computed with :mod:`repair_jax.influence` (the
project's influence engine, Ch. 6), the training-loss score, Errors-ERM (Creager et al. 2021) and
SSA's pseudo-groups (Nam et al. 2022; Table 5.4). DUTI (Zhang et al. 2018) is :func:`bilevel_update` on
a linear model of the embeddings with ``fi_weight = 0``; group DRO (Sagawa et al. 2019) is
:func:`repair_jax.train.group_dro_objective`.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from repair_jax.errors import UserError
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


def _standardised(features, reference):
    f, ref = np.asarray(features, np.float32), np.asarray(reference, np.float32)
    return (f - ref.mean(0)) / np.maximum(ref.std(0), 1e-6)


def _with_class(f, y, num_classes: int) -> np.ndarray:
    """The group predictor's input: the standardised features and the (known) class, one-hot."""
    return np.concatenate([f, np.eye(num_classes, dtype=np.float32)[np.asarray(y)]], 1)


def ssa_pseudo_groups(features, y, val_features, val_y, val_attribute, num_classes: int,
                      num_attributes: int = 2, threshold: float = 0.95, rounds: int = 3,
                      l2: float = 1e-2) -> np.ndarray:
    """Spread Spurious Attribute's group estimate (Nam et al. 2022, Sec. 3): a spurious-attribute
    predictor ``p(a | x, y)`` (here a linear softmax with L2 on the standardised ``features`` and the
    one-hot class) is trained on the small group-labelled validation split (``val_features``,
    ``val_y``, ``val_attribute`` in [0, A)) plus the training points (``features``, ``y``; no attribute
    labels) it predicts with confidence ``max_a p(a | x, y) >= threshold``, pseudo-labelled by that
    prediction; ``rounds`` rounds of self-training. Returns the pseudo-groups (n,) int
    ``y * A + argmax_a p(a | x, y)`` of every training point, on which SSA trains group DRO. The
    paper's predictor is a network and its thresholds are set per group to spread the pseudo-labels
    over the groups; here one threshold for all groups."""
    if not 0.0 < threshold <= 1.0:
        raise UserError(f"the SSA pseudo-label threshold must be in (0, 1], got {threshold}")
    if len(val_y) == 0:
        raise UserError("SSA needs a group-labelled validation split with at least one example")
    from repair_jax.guiding.carving import fit_linear_head

    y = np.asarray(y)
    f = _with_class(_standardised(features, features), y, num_classes)
    fv = _with_class(_standardised(val_features, features), val_y, num_classes)
    av = np.asarray(val_attribute, np.int32)
    predict = lambda theta: np.asarray(jax.nn.softmax(jnp.asarray(f) @ theta["w"] + theta["b"], axis=1))
    theta = fit_linear_head(fv, av, "classification", num_attributes, l2=l2)
    for _ in range(rounds):
        prob = predict(theta)
        sure = prob.max(1) >= threshold
        theta = fit_linear_head(np.concatenate([fv, f[sure]]), np.concatenate([av, prob[sure].argmax(1)]),
                                "classification", num_attributes, l2=l2)
    return (y * num_attributes + predict(theta).argmax(1)).astype(np.int32)
