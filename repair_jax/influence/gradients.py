"""Per-example gradients and directional per-example derivatives.

Source: 002_97a11baaf249c571.txt Ch. 3.4 and Ch. 6.4 (every influence estimate needs the
per-example gradients grad_theta l(z_i, theta) of the training points).

Conventions. A *per-example loss function* is ``loss_fn(params, batch) -> (N,)``: the losses of the
N examples of ``batch`` (a dict of arrays with a leading example axis), each depending on its own
example only (models in eval mode: BatchNorm uses its running statistics).

Two ways to the (N, P) per-example gradients:

* ``method="layerwise"`` (the fast path): one forward and one backward pass over the batch. Every
  ``flax.linen.Dense`` and ``flax.linen.Conv`` call, and every eval-mode
  :class:`repair_jax.models.BatchNorm`, is intercepted: we record its input ``a`` and add a zero
  perturbation ``e`` to its output, so that the gradient of ``sum_i l_i`` with respect to ``e`` is
  the per-example output cotangent ``g_i``. A dense kernel's per-example gradient is then the outer
  product ``a_i^T g_i``, a convolution kernel's is ``patches(a_i)^T g_i``, a bias's is ``g_i``
  summed over positions. Parameters used by any other layer fall back to ``vmap(grad)`` restricted to
  those parameters.
* ``method="vmap"``: the naive reference ``vmap(grad(l(z_i)))``.

:func:`per_example_grad_dot` gives the N numbers ``grad l(z_i) . v`` without materializing any
gradient: one forward-mode pass (``jax.jvp``) over the vector of per-example losses.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from repair_jax.errors import UserError

LossFn = Callable[[Any, dict], jax.Array]
METHODS = ("auto", "layerwise", "vmap")


# ----------------------------------------------------------------------------- helpers

def batch_size_of(batch: dict) -> int:
    sizes = {int(np.shape(a)[0]) for a in jax.tree_util.tree_leaves(batch)}
    if len(sizes) != 1:
        raise ValueError(f"batch arrays disagree on the number of examples: {sorted(sizes)}")
    return sizes.pop()


def _take(batch: dict, start: int, size: int, n: int) -> dict:
    """Rows [start, start+size) of every array, padded (by repeating row 0) to ``size`` rows."""
    def one(a):
        a = a[start:start + size]
        pad = size - a.shape[0]
        if pad:
            a = jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)])
        return a
    return jax.tree_util.tree_map(one, batch)


def _chunks(n: int, chunk_size: int | None):
    size = n if not chunk_size or chunk_size >= n else int(chunk_size)
    if size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    return size, [(s, min(size, n - s)) for s in range(0, n, size)]


def flatten_per_example(tree) -> jax.Array:
    """(N, P) matrix of a per-example pytree; row i equals ``ravel_pytree(tree_i)[0]``."""
    leaves = jax.tree_util.tree_leaves(tree)
    n = leaves[0].shape[0]
    sizes = [int(np.prod(l.shape[1:])) for l in leaves]
    # in-place block writes; XLA's CPU concatenate copies every block once more
    out = jnp.zeros((n, sum(sizes)), leaves[0].dtype)
    offset = 0
    for leaf, size in zip(leaves, sizes):
        out = jax.lax.dynamic_update_slice(out, leaf.reshape(n, size).astype(out.dtype), (0, offset))
        offset += size
    return out


# ----------------------------------------------------------------------------- naive reference

def _vmap_grads(loss_fn: LossFn, params, batch: dict):
    def one(p, example):
        ex = jax.tree_util.tree_map(lambda a: a[None], example)
        return loss_fn(p, ex)[0]
    return jax.vmap(jax.grad(one), in_axes=(None, 0))(params, batch)


# ----------------------------------------------------------------------------- layer-wise fast path

def _module_key(module) -> tuple[str, ...]:
    return tuple(module.path)


def _conv_supported(m: nn.Conv, x) -> bool:
    if not isinstance(m.padding, (str, int, tuple, list)) or (isinstance(m.padding, str) and
                                                              m.padding.upper() not in ("SAME", "VALID")):
        return False
    dil = m.input_dilation
    return (m.feature_group_count == 1 and (dil is None or dil == 1 or all(d == 1 for d in np.atleast_1d(dil)))
            and not getattr(m, "mask", None) is not None and x.ndim >= 3)


def _conv_padding(m: nn.Conv, nd: int):
    p = m.padding
    if isinstance(p, str):
        return p.upper()
    if isinstance(p, int):
        return [(p, p)] * nd
    return [(q, q) if isinstance(q, int) else tuple(q) for q in p]


def _tuple(v, nd):
    if v is None:
        return (1,) * nd
    if isinstance(v, int):
        return (v,) * nd
    return tuple(v)


def _dense_grads(a, g, use_bias: bool, batched_input: bool):
    """Per-example Dense grads: kernel (N, in, out) = sum_positions a^T g; bias (N, out)."""
    if not batched_input:  # input (N, ..., in): sum over the middle axes
        raise AssertionError
    n = a.shape[0]
    a2 = a.reshape(n, -1, a.shape[-1])
    g2 = g.reshape(n, -1, g.shape[-1])
    out = {"kernel": jnp.einsum("nti,nto->nio", a2, g2)}
    if use_bias:
        out["bias"] = g2.sum(1)
    return out


def conv_patches(m: nn.Conv, a):
    """``(N, positions, in x prod(window))`` input patches of a Conv call (im2col), features ordered
    ``(in, *window)``."""
    nd = a.ndim - 2
    window = tuple(m.kernel_size)
    patches = jax.lax.conv_general_dilated_patches(
        a, window, _tuple(m.strides, nd), _conv_padding(m, nd),
        rhs_dilation=_tuple(m.kernel_dilation, nd),
        dimension_numbers=jax.lax.conv_dimension_numbers(a.shape, (1,) * nd + (a.shape[-1], 1),
                                                         ("NHWC"[:1] + "HWD"[:nd] + "C",
                                                          "HWD"[:nd] + "IO", "N" + "HWD"[:nd] + "C")))
    return patches.reshape(a.shape[0], -1, patches.shape[-1])


def _conv_grads(m: nn.Conv, a, g):
    """Per-example Conv kernel grads from input patches: (N, *window, in, out)."""
    nd = a.ndim - 2
    window = tuple(m.kernel_size)
    n, cin, cout = a.shape[0], a.shape[-1], g.shape[-1]
    p2 = conv_patches(m, a)  # features ordered (in, *window)
    g2 = g.reshape(n, -1, cout)
    k = jnp.einsum("ntf,nto->nfo", p2, g2).reshape(n, cin, *window, cout)
    k = jnp.moveaxis(k, 1, 1 + nd)
    out = {"kernel": k}
    if m.use_bias:
        out["bias"] = g2.sum(1)
    return out


def _is_our_batchnorm(m) -> bool:
    from repair_jax.models import BatchNorm
    return isinstance(m, BatchNorm)


def _intercept_kind(m, args, kwargs, n: int) -> str | None:
    """Which intercepted layer a flax call is ("dense", "conv", eval-mode "bn") or None."""
    if not args or args[0].shape[:1] != (n,):
        return None
    if isinstance(m, nn.Dense):
        return "dense"
    if isinstance(m, nn.Conv) and _conv_supported(m, args[0]):
        return "conv"
    if _is_our_batchnorm(m) and not (kwargs.get("train", args[1] if len(args) > 1 else False)):
        return "bn"
    return None


def _interceptor(n: int, perturb: dict | None, record: dict, shapes: dict | None):
    """A flax method interceptor recording each intercepted layer's input (normalized input for
    BatchNorm) and output shape, and adding ``perturb`` to its output."""
    def interceptor(next_fun, args, kwargs, context):
        m = context.module
        kind = _intercept_kind(m, args, kwargs, n) if context.method_name == "__call__" else None
        if kind is None:
            return next_fun(*args, **kwargs)
        key = _module_key(m)
        x = args[0]
        if kind == "bn":
            mean = m.get_variable("batch_stats", "mean")
            var = m.get_variable("batch_stats", "var")
            x = (x - mean) * jax.lax.rsqrt(var + m.epsilon)
        record.setdefault(key, []).append((kind, m, x))
        y = next_fun(*args, **kwargs)
        idx = len(record[key]) - 1
        if shapes is not None:
            shapes.setdefault(key, []).append(jax.ShapeDtypeStruct(y.shape, y.dtype))
        if perturb is not None:
            y = y + perturb[key][idx]
        return y
    return interceptor


def _layer_grads(record: dict, cots: dict) -> dict:
    """{module path: {param name: (N, ...) per-example grads}} from the recorded inputs and the
    per-example output cotangents of every intercepted call (summed over repeated calls)."""
    grads: dict = {}
    for key, calls in record.items():
        for (kind, m, a), g in zip(calls, cots[key]):
            if kind == "dense":
                part = _dense_grads(a, g, m.use_bias, True)
            elif kind == "conv":
                part = _conv_grads(m, a, g)
            else:  # eval-mode BatchNorm: y = xhat * scale + bias
                spatial = tuple(range(1, a.ndim - 1))
                part = {"scale": jnp.sum(a * g, spatial) if spatial else a * g,
                        "bias": jnp.sum(g, spatial) if spatial else g}
            node = grads.setdefault(key, {})
            for name, val in part.items():
                node[name] = node[name] + val if name in node else val
    return grads


def _names(path) -> tuple:
    return tuple(getattr(k, "key", getattr(k, "name", str(k))) for k in path)


def _assemble(loss_fn: LossFn, params, batch: dict, grads: dict, n: int):
    """The per-example grads pytree; parameters not covered fall back to vmap(grad) restricted to them."""
    flat_params = jax.tree_util.tree_flatten_with_path(params)[0]
    covered, missing = {}, {}
    for path, leaf in flat_params:
        names = _names(path)
        if names[:-1] in grads and names[-1] in grads[names[:-1]]:
            covered[names] = grads[names[:-1]][names[-1]]
        else:
            missing[names] = leaf
    if missing:
        covered.update(_vmap_grads(lambda sub, b: loss_fn(_set_leaves(params, sub), b), missing, batch))
    leaves = [covered[_names(path)].reshape((n,) + leaf.shape).astype(leaf.dtype) for path, leaf in flat_params]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), leaves)


def layerwise_per_example_grads(loss_fn: LossFn, params, batch: dict):
    """Per-example grads as a pytree like ``params`` with a leading axis N (see module doc), for the
    whole ``batch``: a pure function with no chunking, sharding or jit of its own, so it can be traced
    inside a jitted function or a ``lax`` loop (I-REPAIR's mean-absolute influence does) and
    ``loss_fn`` need not be hashable. :func:`per_example_grads` is the chunked, sharded front end."""
    n = batch_size_of(batch)
    record, cots = layer_inputs_and_cotangents(loss_fn, params, batch)
    return _assemble(loss_fn, params, batch, _layer_grads(record, cots), n)


def layer_inputs_and_cotangents(loss_fn: LossFn, params, batch: dict) -> tuple[dict, dict]:
    """(record, cotangents) of one forward and one backward pass over ``batch`` (see module doc):
    ``record[path]`` lists each intercepted call of that module as (kind, module, input), kind one of
    "dense", "conv", "bn" (the normalized input for BatchNorm); ``cotangents[path]`` the matching
    per-example output cotangents ``d sum_i l_i / d output``."""
    n = batch_size_of(batch)
    # 1) shapes of the intercepted outputs
    shapes: dict = {}

    def shape_pass(p, b):
        with nn.intercept_methods(_interceptor(n, None, {}, shapes)):
            return loss_fn(p, b)
    jax.eval_shape(shape_pass, params, batch)
    zeros = {k: [jnp.zeros(s.shape, s.dtype) for s in v] for k, v in shapes.items()}

    # 2) one forward/backward pass: cotangents of the perturbations
    def total(perturb):
        record: dict = {}
        with nn.intercept_methods(_interceptor(n, perturb, record, None)):
            losses = loss_fn(params, batch)
        return jnp.sum(losses), record

    cots, record = jax.grad(total, has_aux=True)(zeros)
    return record, cots


def _set_leaves(params, sub: dict):
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    return jax.tree_util.tree_unflatten(treedef, [sub.get(_names(path), leaf) for path, leaf in flat])


# ----------------------------------------------------------------------------- public API

def _shard(batch: dict, size: int) -> dict:
    """With several local devices, splits a chunk over them along the example axis (the jitted
    per-example computation is then partitioned by XLA); unchanged on one device or when the chunk
    size does not divide."""
    n_dev = jax.local_device_count()
    if n_dev <= 1 or size % n_dev:
        return batch
    from jax.sharding import NamedSharding, PartitionSpec

    from repair_jax.train import data_mesh
    return jax.device_put(batch, NamedSharding(data_mesh(jax.local_devices()), PartitionSpec("data")))


@functools.partial(jax.jit, static_argnames=("loss_fn", "method", "flat"))
def _grads_chunk(loss_fn, params, batch, method: str, flat: bool):
    g = layerwise_per_example_grads(loss_fn, params, batch) if method == "layerwise" else _vmap_grads(loss_fn, params, batch)
    return flatten_per_example(g) if flat else g


def per_example_grads(loss_fn: LossFn, params, batch: dict, *, chunk_size: int | None = None,
                      flat: bool = False, method: str = "auto"):
    """Per-example gradients ``grad_theta l(z_i, theta)`` of the N examples of ``batch``.

    Returns a pytree like ``params`` with a leading axis N, or with ``flat=True`` an (N, P) matrix
    whose row i is ``ravel_pytree(grad_i)[0]``. The batch is processed in jitted chunks of
    ``chunk_size`` examples (the last one padded), so memory stays bounded by ``chunk_size * P``
    per chunk plus the result. ``method``: ``layerwise`` (fast, see module doc), ``vmap`` (naive
    reference) or ``auto`` (= layerwise). ``loss_fn`` must be hashable (a module-level function or
    a ``functools.partial``) since it is a static argument of the jitted chunk.
    """
    return map_gradient_chunks(lambda g: g, loss_fn, params, batch, chunk_size=chunk_size, flat=flat, method=method)


def map_gradient_chunks(fn, loss_fn: LossFn, params, batch: dict, *, chunk_size: int | None = None,
                        flat: bool = True, method: str = "auto"):
    """``fn`` applied to the per-example gradients of ``chunk_size`` examples at a time (as
    :func:`repair_jax.influence.per_example_grads` forms them: an (C, P) matrix with ``flat=True``, else a
    pytree with a leading axis C), each chunk reduced before the next is formed, the results (leading axis
    C; the padding rows of the last chunk cut) concatenated: memory ``chunk_size * P`` plus the result."""
    if method not in METHODS:
        raise UserError(f"unknown per-example gradient method {method!r}; choose one of {', '.join(METHODS)}")
    method = "layerwise" if method == "auto" else method
    n = batch_size_of(batch)
    if n == 0:
        raise UserError("per-example gradients of an empty batch")
    size, spans = _chunks(n, chunk_size)
    outs = []
    for start, count in spans:
        chunk = _shard(_take(batch, start, size, n) if size != n else batch, size)
        out = fn(_grads_chunk(loss_fn, params, chunk, method, flat))
        outs.append(jax.tree_util.tree_map(lambda a: a[:count], out))
    if len(outs) == 1:
        return outs[0]
    return jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *outs)


#: Rows per forward-mode chunk when ``chunk_size`` is not given. Chunks of a few thousand rows keep
#: the primal and tangent activations in cache: on the 2-core CPU of ``benchmarks/influence.py``
#: (MLP 64-256-256-10, N = 8192) one unchunked pass costs 3.6-3.9x a forward pass, chunks of 2048
#: about 2.4x, while chunking the forward pass itself changes its time by under 10%.
DOT_CHUNK = 2048


@functools.partial(jax.jit, static_argnames=("loss_fn", "size"))
def _dot_all(loss_fn, params, batch, v, size):
    """All N directional derivatives in one jitted program: ``lax.map`` over chunks of ``size``
    rows (the last chunk padded with copies of row 0 and the padding cut off)."""
    def jvp(chunk):
        return jax.jvp(lambda p: loss_fn(p, chunk), (params,), (v,))[1]

    n = batch_size_of(batch)
    if size >= n:
        return jvp(batch)
    m = -(-n // size)
    pad = m * size - n

    def split(a):
        if pad:
            a = jnp.concatenate([a, jnp.broadcast_to(a[:1], (pad,) + a.shape[1:])])
        return a.reshape((m, size) + a.shape[1:])

    return jax.lax.map(jvp, jax.tree_util.tree_map(split, batch)).reshape(-1)[:n]


def per_example_grad_dot(loss_fn: LossFn, params, batch: dict, v, *, chunk_size: int | None = None) -> jax.Array:
    """The N numbers ``grad_theta l(z_i, theta)`` · ``v`` (``v`` a pytree like ``params``) in one
    forward-mode pass (``jax.jvp`` of the per-example loss vector) over chunks of ``chunk_size``
    rows (default :data:`DOT_CHUNK`) inside one jitted program; no gradient is materialized.
    Source: 002 Ch. 6.4 (the inner products of Eq. 6.2/6.4 for all training points).
    """
    n = batch_size_of(batch)
    if n == 0:
        raise UserError("per-example derivatives of an empty batch")
    if jax.tree_util.tree_structure(v) != jax.tree_util.tree_structure(params):
        raise ValueError("direction v must have the structure of params")
    size, _ = _chunks(n, chunk_size or DOT_CHUNK)
    return _dot_all(loss_fn, params, batch, v, size)


def batch_gradient(loss_fn: LossFn, params, batch: dict):
    """Gradient of the mean loss over the batch (a pytree like ``params``)."""
    return jax.grad(lambda p: jnp.mean(loss_fn(p, batch)))(params)


# ----------------------------------------------------------------------------- classifier losses

class ClassifierLoss:
    """Per-example loss of a classifier in eval mode: ``loss(params, {"x", "y"}) -> (N,)``.

    ``apply_fn`` is a classifier's protocol function ``apply(params, state, x, train)``
    (:class:`repair_jax.classifier.Classifier`) or a linen module's ``module.apply``, ``batch_stats``
    its state; build it with
    :meth:`from_classifier` from any model (NNX, linen, a plain function).

    ``y`` may be integer labels (N,), soft targets / one-hot rows (N, K) (softmax cross-entropy
    against a distribution, needed for label-perturbation influence, 002 Eq. 6.3/6.5), or multi-hot
    (N, K) with ``multilabel=True`` (summed sigmoid BCE). Hashed by identity, so it can be a static
    argument of jitted functions; BatchNorm running statistics are held as constants.
    """

    def __init__(self, apply_fn, batch_stats=None, multilabel: bool = False):
        from repair_jax.classifier import protocol_apply

        self.apply_fn = protocol_apply(apply_fn)  # a linen module's ``module.apply`` is taken too
        self.batch_stats = batch_stats if batch_stats is not None else {}
        self.multilabel = multilabel

    def logits(self, params, x):
        return self.apply_fn(params, self.batch_stats, x, train=False)[0]

    def __call__(self, params, batch: dict) -> jax.Array:
        import optax

        from repair_jax.objectives import per_example_loss
        logits = self.logits(params, batch["x"])
        y = batch["y"]
        if not self.multilabel and y.ndim == 2:
            return optax.softmax_cross_entropy(logits, y)
        return per_example_loss(logits, y, self.multilabel)

    @classmethod
    def from_state(cls, state, multilabel: bool = False) -> "ClassifierLoss":
        return cls(state.apply_fn, state.batch_stats, multilabel)

    @classmethod
    def from_classifier(cls, model, multilabel: bool = False) -> "ClassifierLoss":
        """The loss of any model :func:`~repair_jax.classifier.as_classifier` takes (a Classifier, an
        NNX model, a run); its parameters are ``as_classifier(model).params``."""
        from repair_jax.classifier import as_classifier

        clf = as_classifier(model)
        return cls(clf.apply, clf.state, multilabel)


class LastLayerLoss:
    """Per-example softmax cross-entropy of a last dense layer (``kernel`` (D, K), ``bias`` (K,)) on fixed
    penultimate features ``batch["x"]`` (N, D) and labels ``batch["y"]`` (N,) -> (N,): the convex last-layer
    model through which Koh & Liang 2017 attribute deep networks. ``logits(params, x)`` as
    :class:`ClassifierLoss`'s, so the quantities of :mod:`repair_jax.influence.functions` apply."""

    multilabel = False

    def logits(self, params, x):
        return x @ params["kernel"] + params["bias"]

    def __call__(self, params, batch: dict) -> jax.Array:
        from repair_jax.objectives import per_example_loss

        return per_example_loss(self.logits(params, batch["x"]), batch["y"], False)


#: The one :class:`LastLayerLoss` (hashed by identity: jitted functions taking it compile once).
last_layer_loss = LastLayerLoss()
