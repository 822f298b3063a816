"""Modified back-propagation: Guided Backprop, Deconvnet and LRP (002_97a11baaf249c571.txt Sec. 3.2).

The model code is not touched. The substitutions happen while the explained call is traced:

* Guided Backprop / Deconvnet swap ``flax.linen.relu`` / ``jax.nn.relu`` (and ``relu6``) for a ReLU
  with a custom VJP inside :func:`modified_relu` (every model of :mod:`repair_jax.models` calls
  ``nn.relu`` / ``nn.relu6``; an activation imported by name elsewhere is not swapped).
* LRP intercepts the linear layers with ``flax.linen.intercept_methods`` and changes their backward
  pass. With the relevance written as ``R = a * c`` (a the activation, c the carried "modified
  gradient"), the input relevance is ``x * c_x`` and:

  - ``nn.Dense`` and ``nn.Conv`` (any stride, padding, groups): the epsilon rule or the alpha-beta rule;
  - BatchNorm (eval mode, a per-channel affine layer): the epsilon rule in both modes;
  - ReLU: relevance passes unchanged to the units with positive input (ordinary gradient);
  - max pooling: winner takes all (ordinary gradient); mean / global average pooling and residual
    additions: relevance split in proportion to the contributions (the z-rule, ordinary gradient);
  - ReLU6 passes no relevance through clipped units (z > 6).
"""

from __future__ import annotations

import contextlib

import flax.linen as nn
import jax
import jax.numpy as jnp

from repair_jax.errors import UserError
from repair_jax.explain.model_fn import ApplyFn, input_gradient


def _relu_with_backward(rule: str, upper: float | None):
    """A ReLU (or ReLU6 with ``upper=6``) whose backward pass follows 002 Sec. 3.2:
    ``guided``: ``1[s>0] 1[g>0] g``; ``deconvnet``: ``1[g>0] g`` (g the incoming gradient)."""
    @jax.custom_vjp
    def act(s):
        out = jnp.maximum(s, 0)
        return out if upper is None else jnp.minimum(out, upper)

    def fwd(s):
        return act(s), s

    def bwd(s, g):
        g = jnp.where(g > 0, g, 0)
        if rule == "guided":
            inside = s > 0 if upper is None else (s > 0) & (s < upper)
            g = jnp.where(inside, g, 0)
        return (g,)

    act.defvjp(fwd, bwd)
    return act


@contextlib.contextmanager
def modified_relu(rule: str):
    """Within the block (trace time), ``nn.relu``/``jax.nn.relu`` and ``relu6`` back-propagate by ``rule``."""
    if rule not in ("guided", "deconvnet"):
        raise UserError(f"unknown ReLU rule {rule!r}; choose guided or deconvnet")
    import flax.linen.activation as flax_act

    relu, relu6 = _relu_with_backward(rule, None), _relu_with_backward(rule, 6.0)
    swaps = [(mod, name, new) for mod in (nn, flax_act, jax.nn)
             for name, new in (("relu", relu), ("relu6", relu6)) if hasattr(mod, name)]
    saved = [(mod, name, getattr(mod, name)) for mod, name, _ in swaps]
    try:
        for mod, name, new in swaps:
            setattr(mod, name, new)
        yield
    finally:
        for mod, name, old in saved:
            setattr(mod, name, old)


def guided_backprop(apply_fn: ApplyFn, params, x, target) -> jax.Array:
    """Guided Backpropagation (002 Sec. 3.2, Springenberg et al. 2014): the input gradient with every
    ReLU back-propagating ``1[s>0] 1[g>0] g``. (H, W, C)."""
    with modified_relu("guided"):
        return input_gradient(apply_fn, params, x, target)


def deconvnet(apply_fn: ApplyFn, params, x, target) -> jax.Array:
    """Deconvnet (002 Sec. 3.2, Zeiler and Fergus 2014): the input gradient with every ReLU
    back-propagating ``1[g>0] g``. (H, W, C)."""
    with modified_relu("deconvnet"):
        return input_gradient(apply_fn, params, x, target)


# ----------------------------------------------------------------------------- LRP

def _stabilise(z, epsilon):
    return z + epsilon * jnp.where(z >= 0, 1.0, -1.0)


def _safe_divide(a, b):
    return jnp.where(b == 0, 0.0, a / jnp.where(b == 0, 1.0, b))


def _epsilon_layer(z, epsilon):
    """Identity forward; backward ``c -> c * z / (z + eps sign z)``: with R = z c this is the LRP-eps
    rule ``R_i = a_i sum_j w_ij R_j / (z_j + eps sign z_j)`` carried as ``c_i = R_i / a_i``."""
    scale = jax.lax.stop_gradient(_safe_divide(z, _stabilise(z, epsilon)))
    return jax.lax.stop_gradient(z) + (z - jax.lax.stop_gradient(z)) * scale


_INSIDE_RULE: list = []  # non-empty while a rule evaluates a layer: those calls are not intercepted


def _linear_map(module, kernel):
    """``a -> module(a)`` with ``kernel`` and no bias (the weights alone)."""
    plain = module.clone(parent=None, use_bias=False)
    return lambda a: plain.apply({"params": {"kernel": kernel}}, a)


def _alpha_beta_backward(module, kernel, a, z, c_out, alpha, beta):
    """LRP-alpha-beta (Bach et al. 2015) for one Dense/Conv: ``R_i = sum_j (alpha (a_i w_ij)^+ / z_j^+
    - beta (a_i w_ij)^- / z_j^-) R_j`` with ``R_j = z_j c_j``; returns ``c_i = R_i / a_i``."""
    pos, neg = _linear_map(module, jnp.maximum(kernel, 0)), _linear_map(module, jnp.minimum(kernel, 0))
    a_pos, a_neg = jnp.maximum(a, 0), jnp.minimum(a, 0)
    relevance = z * c_out
    s_pos = _safe_divide(relevance, pos(a_pos) + neg(a_neg))
    s_neg = _safe_divide(relevance, neg(a_pos) + pos(a_neg))
    transpose = lambda f, s: jax.vjp(f, a)[1](s)[0]
    c_pos = alpha * transpose(pos, s_pos) - beta * transpose(neg, s_neg)
    c_neg = alpha * transpose(neg, s_pos) - beta * transpose(pos, s_neg)
    return jnp.where(a >= 0, c_pos, c_neg)


def _alpha_beta_layer(module, a, z, alpha, beta):
    """Forward: the layer's output ``z``; backward: :func:`_alpha_beta_backward` (no other path)."""
    @jax.custom_vjp
    def layer(a_in, z_in, kernel):
        return z_in

    def bwd(res, c_out):
        a_in, z_in, kernel = res
        _INSIDE_RULE.append(module)
        try:
            c_in = _alpha_beta_backward(module, kernel, a_in, z_in, c_out, alpha, beta)
        finally:
            _INSIDE_RULE.pop()
        return c_in, jnp.zeros_like(z_in), jnp.zeros_like(kernel)

    layer.defvjp(lambda a_in, z_in, kernel: (z_in, (a_in, z_in, kernel)), bwd)
    return layer(a, z, module.variables["params"]["kernel"])


def _is_batch_norm(module) -> bool:
    return type(module).__name__ == "BatchNorm"


def _lrp_interceptor(epsilon: float, alpha: float | None, beta: float | None):
    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        if context.method_name != "__call__" or _INSIDE_RULE:
            return out
        if isinstance(module, (nn.Dense, nn.Conv)) and alpha is not None:
            return _alpha_beta_layer(module, args[0], out, alpha, beta)
        if isinstance(module, (nn.Dense, nn.Conv)) or _is_batch_norm(module):
            return _epsilon_layer(out, epsilon)
        return out

    return interceptor


def lrp_epsilon(apply_fn: ApplyFn, params, x, target, *, epsilon: float = 1e-6) -> jax.Array:
    """LRP-epsilon (002 Sec. 3.2, Bach et al. 2015): relevance of the target logit propagated to the
    input by the epsilon rule at every Dense/Conv/BatchNorm layer (see the module docstring for the
    other layers). Its sum equals ``f_target(x)`` minus what biases and epsilon absorb. (H, W, C)."""
    if epsilon < 0:
        raise UserError(f"LRP epsilon must be >= 0, got {epsilon}")
    with nn.intercept_methods(_lrp_interceptor(epsilon, None, None)):
        return x * input_gradient(apply_fn, params, x, target)


def lrp_alpha_beta(apply_fn: ApplyFn, params, x, target, *, alpha: float = 1.0, beta: float = 0.0,
                   epsilon: float = 1e-6) -> jax.Array:
    """LRP-alpha-beta (002 Sec. 3.2, Bach et al. 2015): the alpha-beta rule at every Dense/Conv layer
    (positive and negative contributions split; alpha - beta = 1), the epsilon rule at BatchNorm.
    (H, W, C)."""
    if abs(alpha - beta - 1.0) > 1e-9 or beta < 0:
        raise UserError(f"LRP alpha-beta needs alpha - beta = 1 and beta >= 0, got alpha={alpha}, beta={beta}")
    with nn.intercept_methods(_lrp_interceptor(epsilon, alpha, beta)):
        return x * input_gradient(apply_fn, params, x, target)
