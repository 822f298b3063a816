"""Weighted batch statistics (w-bn, Zhong et al. 2022, Sec. 3.3) on any BatchNorm layer.

One formula, :func:`weighted_batch_statistics`, and the three places it reaches a model without a fork
of the model code: repair_jax's own :class:`repair_jax.models.BatchNorm` calls it directly, a
``flax.linen.BatchNorm`` gets it by method interception (:func:`linen_weighted_batch_norm`) and a
``flax.nnx.BatchNorm`` by substituting its ``__call__`` while the call is traced
(:func:`nnx_weighted_batch_norm`). Statistics and running averages then follow the layer's own
momentum and epsilon: ``ra = momentum * ra + (1 - momentum) * batch_stat``.
"""

from __future__ import annotations

import contextlib

import flax.linen as nn
import jax
import jax.numpy as jnp

from repair_jax.errors import UserError


def weighted_batch_statistics(x: jax.Array, sample_weight: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-channel ``(mean, var)`` of ``x`` (N, ..., C) with example weights w (N,), w >= 0, normalised
    to sum 1 (Zhong et al. 2022, Sec. 3.3, Fig. 6): ``mean = sum_n w_n mean_n``,
    ``var = sum_n w_n E_n[(x - mean)^2]``, ``mean_n`` averaging example n over its spatial positions.
    Uniform w gives ordinary (biased) batch statistics."""
    if sample_weight.shape != x.shape[:1]:
        raise UserError(f"sample weights of shape {sample_weight.shape} do not match a batch of {x.shape[0]}")
    w = sample_weight / jnp.sum(sample_weight)
    spatial = tuple(range(1, x.ndim - 1))
    per_ex_mean = jnp.mean(x, spatial) if spatial else x  # (N, C)
    mean = jnp.einsum("n,nc->c", w, per_ex_mean)
    sq = jnp.square(x - mean)
    per_ex_sq = jnp.mean(sq, spatial) if spatial else sq
    return mean, jnp.einsum("n,nc->c", w, per_ex_sq)


def _normalize(x, mean, var, epsilon, scale, bias):
    y = (x - mean) * jax.lax.rsqrt(var + epsilon)
    if scale is not None:
        y = y * scale
    return y + bias if bias is not None else y


def _check_last_axis(layer, axis) -> None:
    if axis not in (-1, (-1,)):
        raise UserError(f"w-bn weights the statistics of BatchNorm over the last (channel) axis; "
                        f"{layer} normalises axis {axis}")


def linen_weighted_batch_norm(sample_weight: jax.Array):
    """A ``flax.linen.intercept_methods`` interceptor: every ``nn.BatchNorm`` in training mode
    normalises with :func:`weighted_batch_statistics` of ``sample_weight`` and updates its running
    averages with them; BatchNorm in eval mode and every other module run unchanged."""
    def interceptor(next_fun, args, kwargs, context):
        m = context.module
        if not (isinstance(m, nn.BatchNorm) and context.method_name == "__call__"):
            return next_fun(*args, **kwargs)
        x = args[0]
        ura = kwargs.get("use_running_average", args[1] if len(args) > 1 else None)
        if nn.merge_param("use_running_average", m.use_running_average, ura):
            return next_fun(*args, **kwargs)
        _check_last_axis(f"flax.linen.BatchNorm {'/'.join(map(str, m.path))}", m.axis)
        if m.is_initializing():
            return next_fun(*args, **kwargs)
        mean, var = weighted_batch_statistics(x, sample_weight)
        if m.is_mutable_collection("batch_stats"):
            for name, stat in (("mean", mean), ("var", var)):
                old = m.get_variable("batch_stats", name)
                m.put_variable("batch_stats", name, m.momentum * old + (1 - m.momentum) * stat)
        scale = m.get_variable("params", "scale") if m.use_scale else None
        bias = m.get_variable("params", "bias") if m.use_bias else None
        return _normalize(x, mean, var, m.epsilon, scale, bias)

    return interceptor


@contextlib.contextmanager
def nnx_weighted_batch_norm(sample_weight: jax.Array):
    """Within the block (trace time), every ``flax.nnx.BatchNorm`` in training mode normalises with
    :func:`weighted_batch_statistics` of ``sample_weight`` and updates its running averages with them."""
    from flax import nnx

    original = nnx.BatchNorm.__call__

    def weighted_call(self, x, use_running_average=None, *, mask=None):
        ura = self.use_running_average if use_running_average is None else use_running_average
        if ura or mask is not None:
            if mask is not None:
                raise UserError("w-bn cannot weight a masked flax.nnx.BatchNorm call")
            return original(self, x, use_running_average)
        _check_last_axis("a flax.nnx.BatchNorm", self.axis)
        mean, var = weighted_batch_statistics(x, sample_weight)
        self.mean.value = self.momentum * self.mean.value + (1 - self.momentum) * mean
        self.var.value = self.momentum * self.var.value + (1 - self.momentum) * var
        scale = self.scale.value if self.scale is not None else None
        bias = self.bias.value if self.bias is not None else None
        return _normalize(x, mean, var, self.epsilon, scale, bias)

    nnx.BatchNorm.__call__ = weighted_call
    try:
        yield
    finally:
        nnx.BatchNorm.__call__ = original
