"""Modified back-propagation: Guided Backprop, Deconvnet, LRP and DeepTaylor (Adebayo 2022 Sec. 3.2;
Springenberg et al. 2014; Zeiler and Fergus 2014; Bach et al. 2015; Montavon et al. 2017).

The model code is not touched. The substitutions happen while the explained call is traced, for
flax.linen and flax.nnx models alike (a plain-function model, ``from_apply_fn``, is refused: its
ReLUs and layers are not reachable; an older-form ``apply_fn`` of a linen module works as before):

* Guided Backprop / Deconvnet swap ``relu`` / ``relu6`` of ``flax.linen``, ``flax.nnx`` and
  ``jax.nn`` for a ReLU with a custom VJP inside :func:`modified_relu` (every model of
  :mod:`repair_jax.models` calls ``nn.relu`` / ``nn.relu6``). A ReLU computed another way
  (``jnp.maximum(x, 0)``, an activation imported by name) is not swapped: the method then refuses
  the model (a ``max`` against a literal zero is left in the traced forward pass) rather than
  returning a partly plain gradient.
* LRP changes the backward pass of the linear layers: linen ``nn.Dense`` / ``nn.Conv`` / BatchNorm
  by ``flax.linen.intercept_methods``, NNX ``nnx.Linear`` / ``nnx.Conv`` / ``nnx.BatchNorm`` by
  substituting their ``__call__`` at class level (a model with none of them is refused). With the
  relevance written as ``R = a * c`` (a the activation, c the carried "modified gradient"), the input
  relevance is ``x * c_x`` and:

  - Dense / Linear and Conv (any stride, padding, groups): the epsilon rule or the alpha-beta rule
    (DeepTaylor: the z+ rule, alpha = 1, beta = 0);
  - BatchNorm (eval mode, a per-channel affine layer): the epsilon rule in both modes;
  - ReLU: relevance passes unchanged to the units with positive input (ordinary gradient);
  - max pooling: winner takes all (ordinary gradient); mean / global average pooling and residual
    additions: relevance split in proportion to the contributions (the z-rule, ordinary gradient);
  - ReLU6 passes no relevance through clipped units (z > 6);
  - any other layer with weights (LayerNorm, attention, ...): its ordinary gradient.
"""

from __future__ import annotations

import contextlib

import flax.linen as nn
import jax
import jax.extend.core as jex_core
import jax.extend.source_info_util as jex_source
import jax.numpy as jnp

from repair_jax.errors import UserError
from repair_jax.explain.model_fn import ApplyFn, input_gradient, refuse_opaque, target_logit


def _relu_with_backward(rule: str, upper: float | None, calls: list):
    """A ReLU (or ReLU6 with ``upper=6``) whose backward pass is modified (Springenberg et al. 2014):
    ``guided``: ``1[s>0] 1[g>0] g``; ``deconvnet``: ``1[g>0] g`` (g the incoming gradient). Each call
    (at trace time) is counted in ``calls``."""
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

    def counted(s):
        calls.append(1)
        return act(s)

    return counted


def _relu_namespaces() -> list:
    """The modules whose ``relu`` / ``relu6`` attributes models call: ``flax.linen``, ``flax.nnx``
    (``nnx.relu`` is ``jax.nn.relu`` bound in that namespace) and ``jax.nn``."""
    import flax.linen.activation as flax_act
    from flax import nnx

    return [nn, flax_act, nnx, jax.nn]


@contextlib.contextmanager
def modified_relu(rule: str):
    """Within the block (trace time), ``nn.relu`` / ``nnx.relu`` / ``jax.nn.relu`` and ``relu6``
    back-propagate by ``rule``; yields the list that counts their calls."""
    if rule not in ("guided", "deconvnet"):
        raise UserError(f"unknown ReLU rule {rule!r}; choose guided or deconvnet")
    calls: list = []
    relu, relu6 = _relu_with_backward(rule, None, calls), _relu_with_backward(rule, 6.0, calls)
    swaps = [(mod, name, new) for mod in _relu_namespaces()
             for name, new in (("relu", relu), ("relu6", relu6)) if hasattr(mod, name)]
    saved = [(mod, name, getattr(mod, name)) for mod, name, _ in swaps]
    try:
        for mod, name, new in swaps:
            setattr(mod, name, new)
        yield calls
    finally:
        for mod, name, old in saved:
            setattr(mod, name, old)


def _is_zero_literal(v) -> bool:
    return isinstance(v, jex_core.Literal) and jnp.ndim(v.val) == 0 and v.val == 0


def _is_variance_clamp(eqn) -> bool:
    """Whether a ``max`` is flax's clamp of a variance at zero (``_compute_stats`` of LayerNorm,
    GroupNorm and BatchNorm in training mode), which is not a ReLU."""
    where = jex_source.summarize(eqn.source_info)
    return "flax" in where and "normalization.py" in where and "_compute_stats" in where


def _unmodified_relus(jaxpr) -> int:
    """The number of ``max(x, 0)`` operations (a literal zero on either side) in ``jaxpr`` and its
    sub-jaxprs, outside the custom-VJP calls of the modified ReLU and flax's variance clamps."""
    count = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name.startswith("custom_vjp"):
            continue
        if eqn.primitive.name == "max" and any(map(_is_zero_literal, eqn.invars)) and not _is_variance_clamp(eqn):
            count += 1
        for sub in jex_core.jaxprs_in_params(eqn.params):
            count += _unmodified_relus(sub)
    return count


def _modified_gradient(rule: str, method: str, apply_fn: ApplyFn, params, x, target) -> jax.Array:
    """The input gradient with every ReLU back-propagating by ``rule``; refuses a plain-function model
    and a model with a ReLU it cannot reach (see :func:`guided_backprop`)."""
    refuse_opaque(apply_fn, params, method, "the model's ReLU calls")
    with modified_relu(rule) as calls:
        forward = jax.make_jaxpr(lambda z: target_logit(apply_fn, params, z, target))(x)
        missed = _unmodified_relus(forward.jaxpr)
        if missed:
            raise UserError(f"{method} found {'no' if not calls else 'not every'} ReLU it can modify in this "
                            f"model ({missed} max(x, 0) not computed by nn.relu / nnx.relu / jax.nn.relu, "
                            f"e.g. jnp.maximum or an activation imported by name); use a gradient method")
        return input_gradient(apply_fn, params, x, target)


def guided_backprop(apply_fn: ApplyFn, params, x, target) -> jax.Array:
    """Guided Backpropagation (Springenberg et al. 2014): the input gradient with every ReLU
    back-propagating ``1[s>0] 1[g>0] g``. (H, W, C).

    It modifies the calls of ``relu`` / ``relu6`` of ``flax.linen``, ``flax.nnx`` and ``jax.nn``. A
    model that computes a ReLU another way (``jnp.maximum(x, 0)``, a function imported by name before
    the call) is refused: a ``max`` against a literal zero left in the traced forward pass (other than
    flax's clamp of a variance at zero in LayerNorm / GroupNorm) means a ReLU was not modified. A model without any ReLU (e.g. tanh) gets its gradient, which is guided
    backprop's definition there. A plain-function model (``from_apply_fn``) is refused."""
    return _modified_gradient("guided", "guided backprop", apply_fn, params, x, target)


def deconvnet(apply_fn: ApplyFn, params, x, target) -> jax.Array:
    """Deconvnet (Zeiler and Fergus 2014): the input gradient with every ReLU back-propagating
    ``1[g>0] g``. (H, W, C). Which models it takes: as :func:`guided_backprop`."""
    return _modified_gradient("deconvnet", "deconvnet", apply_fn, params, x, target)


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


def _linear_map(module):
    """``kernel -> (a -> module(a))`` with that kernel and no bias (the weights alone), linen."""
    plain = module.clone(parent=None, use_bias=False)
    return lambda kernel: (lambda a: plain.apply({"params": {"kernel": kernel}}, a))


def _nnx_linear_map(module, original):
    """``kernel -> (a -> module(a))`` with that kernel and a zero bias, NNX: the layer's own
    ``__call__`` (``original``) on a new copy of it (``nnx.split``, new weights, ``nnx.merge``)."""
    from flax import nnx

    graphdef, state = nnx.split(module)

    def with_kernel(kernel):
        weights = jax.tree_util.tree_map_with_path(
            lambda path, v: kernel if path[0].key == "kernel" else jnp.zeros(v.shape, v.dtype), state)
        return lambda a: original(nnx.merge(graphdef, weights), a)

    return with_kernel


def _alpha_beta_backward(linear_map, kernel, a, z, c_out, alpha, beta):
    """LRP-alpha-beta (Bach et al. 2015) for one Dense/Conv: ``R_i = sum_j (alpha (a_i w_ij)^+ / z_j^+
    - beta (a_i w_ij)^- / z_j^-) R_j`` with ``R_j = z_j c_j``; returns ``c_i = R_i / a_i``."""
    pos, neg = linear_map(jnp.maximum(kernel, 0)), linear_map(jnp.minimum(kernel, 0))
    a_pos, a_neg = jnp.maximum(a, 0), jnp.minimum(a, 0)
    relevance = z * c_out
    s_pos = _safe_divide(relevance, pos(a_pos) + neg(a_neg))
    s_neg = _safe_divide(relevance, neg(a_pos) + pos(a_neg))
    transpose = lambda f, s: jax.vjp(f, a)[1](s)[0]
    c_pos = alpha * transpose(pos, s_pos) - beta * transpose(neg, s_neg)
    c_neg = alpha * transpose(neg, s_pos) - beta * transpose(pos, s_neg)
    return jnp.where(a >= 0, c_pos, c_neg)


def _alpha_beta_layer(linear_map, kernel, a, z, alpha, beta):
    """Forward: the layer's output ``z``; backward: :func:`_alpha_beta_backward` (no other path)."""
    @jax.custom_vjp
    def layer(a_in, z_in, kernel):
        return z_in

    def bwd(res, c_out):
        a_in, z_in, kernel = res
        _INSIDE_RULE.append(linear_map)
        try:
            c_in = _alpha_beta_backward(linear_map, kernel, a_in, z_in, c_out, alpha, beta)
        finally:
            _INSIDE_RULE.pop()
        return c_in, jnp.zeros_like(z_in), jnp.zeros_like(kernel)

    layer.defvjp(lambda a_in, z_in, kernel: (z_in, (a_in, z_in, kernel)), bwd)
    return layer(a, z, kernel)


def _is_batch_norm(module) -> bool:
    return type(module).__name__ == "BatchNorm"


def _lrp_rule(epsilon: float, alpha: float | None, beta: float | None, applied: list):
    """``rule(a, z, linear_map, kernel) -> z`` with LRP's backward pass: alpha-beta (when ``alpha`` is
    given) or epsilon at a Dense/Conv (``linear_map`` given; counted in ``applied``), epsilon at a
    BatchNorm (``linear_map`` None; ``kernel`` is then the layer itself, unused)."""
    def rule(a, z, linear_map, kernel):
        if linear_map is None:
            return _epsilon_layer(z, epsilon)
        applied.append(1)
        if alpha is None:
            return _epsilon_layer(z, epsilon)
        return _alpha_beta_layer(linear_map, kernel, a, z, alpha, beta)

    return rule


def _linen_layer_fn(module, args, kwargs):
    """A bound linen layer as a function of its input (a fresh copy with the same variables)."""
    plain, variables = module.clone(parent=None), module.variables
    return lambda v: plain.apply(variables, v, *args[1:], **kwargs)


def _lrp_interceptor(rule):
    """``flax.linen.intercept_methods`` interceptor: ``rule`` at every nn.Dense / nn.Conv / BatchNorm."""
    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        if context.method_name != "__call__" or _INSIDE_RULE:
            return out
        if isinstance(module, (nn.Dense, nn.Conv)):
            return rule(args[0], out, _linear_map(module), module.variables["params"]["kernel"])
        if _is_batch_norm(module):
            return rule(args[0], out, None, _linen_layer_fn(module, args, kwargs))
        return out

    return interceptor


@contextlib.contextmanager
def _nnx_lrp(rule):
    """Within the block (trace time), ``rule`` at every ``nnx.Linear`` / ``nnx.Conv`` /
    ``nnx.BatchNorm`` call: their ``__call__`` is substituted at class level, as
    :func:`repair_jax.batchnorm.nnx_weighted_batch_norm` does, and put back afterwards."""
    from flax import nnx

    originals = {cls: cls.__call__ for cls in (nnx.Linear, nnx.Conv, nnx.BatchNorm)}

    def substitute(original, linear: bool):
        def call(self, x, *args, **kwargs):
            out = original(self, x, *args, **kwargs)
            if _INSIDE_RULE:
                return out
            if linear:
                return rule(x, out, _nnx_linear_map(self, original), self.kernel[...])
            return rule(x, out, None, lambda v: original(self, v, *args, **kwargs))

        return call

    try:
        for cls, original in originals.items():
            cls.__call__ = substitute(original, cls is not nnx.BatchNorm)
        yield
    finally:
        for cls, original in originals.items():
            cls.__call__ = original


@contextlib.contextmanager
def layer_rules(rule):
    """Within the block (trace time), every linen ``nn.Dense`` / ``nn.Conv`` / BatchNorm and NNX
    ``nnx.Linear`` / ``nnx.Conv`` / ``nnx.BatchNorm`` call returns ``rule(a, z, linear_map, kernel)``
    (``a`` its input, ``z`` its output; a Dense / Conv gives ``linear_map``, ``kernel -> (a -> layer
    without bias)``, and its kernel; a BatchNorm gives ``None`` and the layer as a function of its input)."""
    with nn.intercept_methods(_lrp_interceptor(rule)), _nnx_lrp(rule):
        yield


def inside_rule(fn, *args):
    """``fn(*args)`` with the layer calls it makes left alone by :func:`layer_rules`."""
    _INSIDE_RULE.append(fn)
    try:
        return fn(*args)
    finally:
        _INSIDE_RULE.pop()


def _lrp(method: str, apply_fn: ApplyFn, params, x, target, rule_args: tuple) -> jax.Array:
    """``x * c_x`` with the LRP rule at every linear layer of a linen or NNX model; refuses a
    plain-function model and a model in which no Dense / Conv / Linear layer was reached."""
    refuse_opaque(apply_fn, params, method, "the model's Dense / Conv / Linear layers")
    applied: list = []
    rule = _lrp_rule(*rule_args, applied)
    with layer_rules(rule):
        relevance = x * input_gradient(apply_fn, params, x, target)
    if not applied:
        raise UserError(f"{method} found no layer it has a rule for in this model (flax.linen nn.Dense / "
                        f"nn.Conv, flax.nnx Linear / Conv); use a gradient method")
    return relevance


def lrp_epsilon(apply_fn: ApplyFn, params, x, target, *, epsilon: float = 1e-6) -> jax.Array:
    """LRP-epsilon (Bach et al. 2015): relevance of the target logit propagated to the input by the
    epsilon rule at every Dense/Conv/BatchNorm layer (linen ``nn.Dense`` / ``nn.Conv`` /
    ``BatchNorm``, NNX ``nnx.Linear`` / ``nnx.Conv`` / ``nnx.BatchNorm``; see the module docstring for
    the other layers). Its sum equals ``f_target(x)`` minus what biases and epsilon absorb. (H, W, C)."""
    if epsilon < 0:
        raise UserError(f"LRP epsilon must be >= 0, got {epsilon}")
    return _lrp("LRP-epsilon", apply_fn, params, x, target, (epsilon, None, None))


def lrp_alpha_beta(apply_fn: ApplyFn, params, x, target, *, alpha: float = 1.0, beta: float = 0.0,
                   epsilon: float = 1e-6) -> jax.Array:
    """LRP-alpha-beta (Bach et al. 2015): the alpha-beta rule at every Dense/Conv (linen) or
    Linear/Conv (NNX) layer (positive and negative contributions split; alpha - beta = 1), the epsilon
    rule at BatchNorm. (H, W, C)."""
    if abs(alpha - beta - 1.0) > 1e-9 or beta < 0:
        raise UserError(f"LRP alpha-beta needs alpha - beta = 1 and beta >= 0, got alpha={alpha}, beta={beta}")
    return _lrp("LRP-alpha-beta", apply_fn, params, x, target, (epsilon, alpha, beta))


def deep_taylor(apply_fn: ApplyFn, params, x, target, *, epsilon: float = 1e-6) -> jax.Array:
    """Deep Taylor decomposition with the z+ rule (Montavon et al. 2017, Sec. 4-5): at every
    Dense/Conv (linen) or Linear/Conv (NNX) layer ``R_i = sum_j x_i w_ij^+ / (sum_i' x_i' w_i'j^+) R_j``,
    starting from ``R = f_target(x)``; ReLU, pooling and BatchNorm as in LRP (module docstring). On
    non-negative layer inputs (every layer after a ReLU) this is LRP-alpha1-beta0 (Bach et al. 2015),
    which is how it is computed; on an input layer with negative entries alpha1-beta0 also takes the
    negative inputs' positive contributions (the w^2 / z^B input rules are not offered). The bias takes
    no relevance, so with no BatchNorm ``sum R_i = f_target(x)``. (H, W, C)."""
    return _lrp("DeepTaylor", apply_fn, params, x, target, (epsilon, 1.0, 0.0))
