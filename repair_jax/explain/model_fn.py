"""The model as the explanation methods see it: ``apply_fn(params, x) -> logits`` in eval mode.

Every attribution method takes ``apply_fn(params, x)`` mapping a batch ``x`` (N, H, W, C) to logits
(N, K); BatchNorm uses its running statistics (``train=False``), closed over by :func:`eval_apply_fn`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from repair_jax.errors import UserError

ApplyFn = Callable[[Any, jax.Array], jax.Array]


def eval_apply_fn(source) -> tuple[ApplyFn, Any]:
    """``(apply_fn, params)`` of any model :func:`repair_jax.classifier.as_classifier` takes (a
    Classifier, an NNX model, a run, a TrainState).

    ``apply_fn(params, x)`` returns the logits (N, K) of the model in eval mode (BatchNorm running
    statistics held fixed).
    """
    from repair_jax.classifier import as_classifier

    clf = as_classifier(source)
    return clf.eval_fn(), clf.params


def target_logit(apply_fn: ApplyFn, params, x: jax.Array, target) -> jax.Array:
    """The scalar logit ``f_{theta,target}(x)`` of one example ``x`` (H, W, C) (002 Sec. 3.2 notation)."""
    return apply_fn(params, x[None])[0, target]


def input_gradient(apply_fn: ApplyFn, params, x: jax.Array, target) -> jax.Array:
    """``d f_{theta,target}(x) / dx`` with ``x``'s shape."""
    return jax.grad(lambda z: target_logit(apply_fn, params, z, target))(x)


def path_gradients(apply_fn: ApplyFn, params, points: jax.Array, target) -> jax.Array:
    """Input gradients at many points (M, H, W, C) -> (M, H, W, C), one vmapped call."""
    return jax.vmap(lambda z: input_gradient(apply_fn, params, z, target))(points)


def as_float(x) -> jax.Array:
    return jnp.asarray(x, jnp.float32)
