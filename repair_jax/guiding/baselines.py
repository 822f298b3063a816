"""Baselines of the model-guiding evaluation (002_97a11baaf249c571.txt Sec. 5.3): influence functions
(Koh & Liang 2017) on the linear carved model with an explicit Hessian, the training-loss score,
and Errors-ERM (Creager et al. 2021). DUTI (Zhang et al. 2018) is :func:`bilevel_update` on a linear
model of the embeddings with ``fi_weight = 0``.

TODO: switch :func:`influence_on_audit_explicit_hessian` to ``repair_jax.influence`` once that
module is merged; it is kept small and explicit (d*K parameters) until then.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from repair_jax.guiding.bilevel import audit_loss, lower_objective, per_example_loss


def influence_on_audit_explicit_hessian(theta: dict, z, y, z_audit, y_audit, c_audit, l2: float,
                                        num_classes: int):
    """Influence of the training points on the audit loss of a linear softmax model, with the
    Hessian of the (L2) training objective formed explicitly.

    Returns (detect (n,), fix (n, K)): detect_i = I_up,loss(z_i, audit) = -g_audit^T H^-1 g_i (> 0:
    up-weighting i raises the audit loss, i.e. i looks harmful); fix_ik = g_audit^T H^-1
    (g_i(k) - g_i(y_i)), the first-order decrease of the audit loss when i is relabelled k.
    """
    z, z_audit = jnp.asarray(z), jnp.asarray(z_audit)
    y, y_audit = jnp.asarray(y, jnp.int32), jnp.asarray(y_audit, jnp.int32)
    flat, unravel = ravel_pytree(theta)
    delta0 = jax.nn.one_hot(y, num_classes, dtype=z.dtype)
    H = jax.hessian(lambda f: lower_objective(unravel(f), delta0, z, y, l2, "classification"))(flat)
    g_audit = jax.grad(lambda f: audit_loss(unravel(f), z_audit, y_audit, jnp.asarray(c_audit),
                                            "classification", num_classes))(flat)
    v = jnp.linalg.solve(H, g_audit)  # H^-1 g_audit (H symmetric)

    def grad_for_label(zi, k):
        t = jax.nn.one_hot(k, num_classes, dtype=z.dtype)[None]
        return jax.grad(lambda f: per_example_loss(unravel(f), zi[None], t, "classification")[0])(flat)

    all_labels = jnp.arange(num_classes)
    # (n, K, p) gradients for every candidate label, contracted with v
    gv = jax.vmap(lambda zi: jax.vmap(lambda k: grad_for_label(zi, k) @ v)(all_labels))(z)
    own = jnp.take_along_axis(gv, y[:, None], axis=1)[:, 0]
    return np.asarray(-own), np.asarray(gv - own[:, None])


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
