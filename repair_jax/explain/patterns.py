"""PatternNet and PatternAttribution (Kindermans et al. 2018; Adebayo 2022, Sec. 3.2).

A linear neuron ``y = w^T x`` sees ``x = s + d``: a signal ``s = a y`` and a distractor ``d`` with
``w^T d = 0``. The weights ``w`` cancel the distractor and so do not show the signal; the *pattern*
``a`` does. Patterns are fitted on training data, per Dense / Conv layer, from the layer's inputs and
outputs (Kindermans et al. 2018, Sec. 4.3; sections and equations as numbered in the ICLR 2018 text, where
Sec. 4 derives the estimators and PatternNet / PatternAttribution and Sec. 5 holds the experiments):

* the linear estimator S_a: ``a = cov[x, y] / (w^T cov[x, y])`` (= ``cov[x, y] / var[y]``);
* the two-component estimator S_a+-, for a layer followed by a ReLU (every layer but the logits'):
  ``a_+ = (E_+[x y] - E_+[x] E_+[y]) / (w^T E_+[x y] - w^T E_+[x] E_+[y])``, ``E_+`` over the inputs
  whose unit is active (its ReLU input > 0); only ``a_+`` is needed, the ReLU removes the rest.

PatternNet back-projects the target logit ``y`` with each layer's weights replaced by its pattern
(``a`` for ``w``), PatternAttribution with ``w ⊙ a`` (Kindermans et al. 2018, Sec. 4.3); ReLUs and
pooling back-propagate as the gradient does. On a linear model ``y = w^T x + b`` they are ``a y`` (the
estimated signal) and ``w ⊙ a y``.

Models: flax.linen and flax.nnx networks of Dense / Conv (Linear / Conv) layers with ReLUs, pooling and
eval-mode BatchNorm directly after a Dense / Conv (a per-channel affine ``z -> s z + t``: the pattern of
the layer is fitted on the ReLU region after the BatchNorm, and the BatchNorm back-propagates as a
layer with weight ``s`` and pattern ``1 / s``). Patterns are matched to layers by call order. A
plain-function model, a model without Dense / Conv layers and a BatchNorm elsewhere are refused.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from repair_jax.errors import UserError
from repair_jax.explain.backprop import _safe_divide, inside_rule, layer_rules
from repair_jax.explain.model_fn import ApplyFn, refuse_opaque, takes_explained_model, target_logit

ESTIMATORS = ("two_component", "linear")


class LayerMoments(NamedTuple):
    """Sums over the examples (and positions) where a unit is counted: ``count`` (K,), ``sum_y`` (K,),
    ``sum_x`` and ``sum_xy`` (the kernel's shape: per input of each unit's receptive field)."""
    count: jax.Array
    sum_y: jax.Array
    sum_x: jax.Array
    sum_xy: jax.Array


def layer_moments(linear_map, kernel, x, y, region) -> LayerMoments:
    """The moments of one layer's inputs ``x`` and outputs ``y`` (..., K) over ``region`` (y's shape,
    boolean). ``linear_map(kernel)(x)`` is the layer without bias; the sums over receptive fields are its
    kernel-gradients (``sum_n x_n g_n`` for a Dense, the same over positions for a Conv of any stride)."""
    mask = region.astype(y.dtype)
    _, pullback = jax.vjp(lambda k: linear_map(k)(x), kernel)
    axes = tuple(range(y.ndim - 1))
    return LayerMoments(jnp.sum(mask, axes), jnp.sum(mask * y, axes), pullback(mask)[0], pullback(mask * y)[0])


def pattern_from_moments(m: LayerMoments, kernel) -> jax.Array:
    """Kindermans et al. 2018, Sec. 4.3 (Eq. 4, 8): ``a = (E[x y] - E[x] E[y]) / (w^T E[x y] - w^T E[x] E[y])`` per
    unit, the expectations over the counted region (all: S_a; the active units: a_+ of S_a+-). The
    kernel's shape; a unit never counted, or without covariance, gets zeros."""
    n = jnp.maximum(m.count, 1.0)
    cov = m.sum_xy / n - (m.sum_x / n) * (m.sum_y / n)
    denominator = jnp.sum(kernel * cov, axis=tuple(range(kernel.ndim - 1)))
    return _safe_divide(cov, denominator)


def _check_estimator(estimator: str) -> None:
    if estimator not in ESTIMATORS:
        raise UserError(f"unknown pattern estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")


def _region(y, estimator: str):
    _check_estimator(estimator)
    return y > 0 if estimator == "two_component" else jnp.ones(y.shape, bool)


def fit_pattern(inputs, outputs, kernel, estimator: str = "two_component") -> jax.Array:
    """The pattern of one Dense layer from its inputs (N, D) and outputs (N, K) over a data set, with
    its kernel (D, K): S_a+-'s ``a_+`` (``two_component``, the ReLU region ``outputs > 0``) or S_a's
    ``a`` (``linear``) (Kindermans et al. 2018, Sec. 4.3). (D, K)."""
    x, y, w = (jnp.asarray(v, jnp.float32) for v in (inputs, outputs, kernel))
    if x.ndim != 2 or y.ndim != 2 or w.shape != (x.shape[1], y.shape[1]) or len(x) != len(y):
        raise UserError(f"fit_pattern takes inputs (N, D), outputs (N, K) and a kernel (D, K), got "
                        f"{x.shape}, {y.shape} and {w.shape}")
    moments = layer_moments(lambda k: (lambda a: a @ k), w, x, y, _region(y, estimator))
    return pattern_from_moments(moments, w)


class _Call(NamedTuple):
    inputs: jax.Array
    outputs: jax.Array
    linear_map: object
    kernel: jax.Array
    region_of: jax.Array  # the ReLU input: the outputs, or the BatchNorm's right after the layer


def _recording_rule(calls: list):
    """A :func:`layer_rules` rule that records each Dense / Conv call (and a BatchNorm right after it)."""
    def rule(a, z, linear_map, kernel):
        if linear_map is not None:
            calls.append(_Call(a, z, linear_map, kernel, z))
        elif calls and calls[-1].outputs is a:
            calls[-1] = calls[-1]._replace(region_of=z)
        else:
            raise UserError("patterns are fitted per Dense / Conv layer; this model has a BatchNorm that does "
                            "not directly follow one (PatternNet / PatternAttribution cannot take it)")
        return z

    return rule


def _moments_fn(apply_fn: ApplyFn, estimator: str):
    @jax.jit
    def batch_moments(params, xb):
        calls: list = []
        with layer_rules(_recording_rule(calls)):
            apply_fn(params, xb)
        if not calls:
            raise UserError("PatternNet / PatternAttribution found no Dense / Conv (Linear / Conv) layer in this "
                            "model; use a gradient method")
        kinds = [estimator] * (len(calls) - 1) + ["linear"]  # the logits' layer has no ReLU after it
        return ([layer_moments(c.linear_map, c.kernel, c.inputs, c.outputs, _region(c.region_of, kind))
                 for c, kind in zip(calls, kinds)], [c.kernel for c in calls])

    return batch_moments


@takes_explained_model
def fit_patterns(apply_fn: ApplyFn, params, x_train, *, estimator: str = "two_component",
                 batch_size: int = 256) -> tuple:
    """The patterns of every Dense / Conv layer of a model, fitted on ``x_train`` (N, H, W, C) (an array,
    or an iterable of such batches) by S_a+- (``two_component``) or S_a (``linear``) (Kindermans et al.
    2018, Sec. 4.3); the last layer (the logits, which no ReLU follows) always by S_a.
    ``fit_patterns(model, x_train)`` with any model :func:`attribute` takes. Returns a
    tuple of kernel-shaped arrays in call order: the ``patterns`` option of ``patternnet`` and
    ``pattern_attribution``."""
    refuse_opaque(apply_fn, params, "PatternNet / PatternAttribution", "the model's Dense / Conv layers")
    _check_estimator(estimator)
    if isinstance(x_train, (np.ndarray, jax.Array)):
        batches = (x_train[i:i + batch_size] for i in range(0, len(x_train), batch_size))
    else:
        batches = iter(x_train)
    batch_moments, total, kernels = _moments_fn(apply_fn, estimator), None, None
    for xb in batches:
        moments, kernels = batch_moments(params, jnp.asarray(xb, jnp.float32))
        total = moments if total is None else jax.tree_util.tree_map(jnp.add, total, moments)
    if total is None:
        raise UserError("fit_patterns needs at least one training example")
    return tuple(pattern_from_moments(m, k) for m, k in zip(total, kernels))


def _pattern_rule(patterns: Sequence, attribution: bool, used: list):
    """Forward unchanged; backward through layer i by the transpose of its map with kernel
    ``patterns[i]`` (PatternNet) or ``w ⊙ patterns[i]`` (PatternAttribution); through a BatchNorm
    ``z = s a + t`` by ``1 / s`` (PatternNet) or 1 (PatternAttribution, ``s ⊙ 1 / s``)."""
    def rule(a, z, linear_map, kernel):
        if linear_map is None:  # kernel: the BatchNorm as a function of its input
            scale = inside_rule(kernel, jnp.ones_like(a)) - inside_rule(kernel, jnp.zeros_like(a))
            factor = jax.lax.stop_gradient(jnp.ones_like(a) if attribution else _safe_divide(1.0, scale))
            return jax.lax.stop_gradient(z) + (a - jax.lax.stop_gradient(a)) * factor
        i = len(used)
        used.append(1)
        if i >= len(patterns) or jnp.shape(patterns[i]) != kernel.shape:
            raise UserError(f"the patterns do not fit this model (layer {i}: kernel {kernel.shape}); fit them "
                            f"with fit_patterns on this model")
        k = jax.lax.stop_gradient(kernel * patterns[i] if attribution else patterns[i])
        back = inside_rule(linear_map(k), a)
        return jax.lax.stop_gradient(z) + back - jax.lax.stop_gradient(back)

    return rule


def _pattern_backward(method: str, attribution: bool, apply_fn: ApplyFn, params, x, target, patterns):
    refuse_opaque(apply_fn, params, method, "the model's Dense / Conv layers")
    if patterns is None:
        raise UserError(f"{method} needs patterns fitted on training data: patterns=fit_patterns(model, x_train)")
    used: list = []
    with layer_rules(_pattern_rule(tuple(patterns), attribution, used)):
        y, back = jax.value_and_grad(lambda z: target_logit(apply_fn, params, z, target))(x)
    if len(used) != len(patterns):
        raise UserError(f"the patterns do not fit this model ({len(patterns)} patterns, {len(used)} Dense / Conv "
                        f"layers); fit them with fit_patterns on this model")
    return y * back


def patternnet(apply_fn: ApplyFn, params, x, target, *, patterns=None) -> jax.Array:
    """PatternNet (Kindermans et al. 2018, Sec. 4.3): the estimated signal of the target logit ``y``,
    back-projected layer by layer with each layer's pattern in place of its weights (ReLUs gate as in
    the gradient). ``patterns``: :func:`fit_patterns` of this model. (H, W, C)."""
    return _pattern_backward("PatternNet", False, apply_fn, params, x, target, patterns)


def pattern_attribution(apply_fn: ApplyFn, params, x, target, *, patterns=None) -> jax.Array:
    """PatternAttribution (Kindermans et al. 2018, Sec. 4.3): ``y`` back-propagated with ``w ⊙ a`` in
    place of each layer's weights ``w`` (a deep Taylor decomposition rooted at ``x - S(x)``); on a linear
    model ``w ⊙ a y``. ``patterns``: :func:`fit_patterns` of this model. (H, W, C)."""
    return _pattern_backward("PatternAttribution", True, apply_fn, params, x, target, patterns)
