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
    """``(apply_fn, params)`` of a :class:`repair_jax.runs.Run` or a :class:`repair_jax.objectives.TrainState`.

    ``apply_fn(params, x)`` returns the logits (N, K) of the model in eval mode (BatchNorm running
    statistics of the run/state, held fixed).
    """
    if hasattr(source, "model") and hasattr(source, "variables"):  # a Run
        module_apply, params = source.model.apply, source.variables["params"]
        batch_stats = source.variables.get("batch_stats", {})
    elif hasattr(source, "apply_fn") and hasattr(source, "params"):  # a TrainState
        module_apply, params, batch_stats = source.apply_fn, source.params, source.batch_stats or {}
    else:
        raise UserError(f"cannot explain a {type(source).__name__}: pass a Run or a TrainState")

    def apply_fn(p, x):
        logits, _ = module_apply({"params": p, "batch_stats": batch_stats}, x, train=False)
        return logits

    return apply_fn, params


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
