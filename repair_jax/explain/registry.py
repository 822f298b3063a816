"""The attribution methods by name, and the one batched (vmapped, jitted) way to call any of them."""

from __future__ import annotations

import functools
import inspect
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from repair_jax.errors import UserError
from repair_jax.explain.backprop import deconvnet, deep_taylor, guided_backprop, lrp_alpha_beta, lrp_epsilon
from repair_jax.explain.cam import gradcam, gradcam_pp, resolve_layer
from repair_jax.explain.gradients import (
    expected_gradients, gradient, input_x_gradient, integrated_gradients, smoothgrad, smoothgrad_mean_sq, smoothgrad_sq,
    vargrad,
)
from repair_jax.explain.model_fn import ApplyFn, split_model_args
from repair_jax.explain.patterns import pattern_attribution, patternnet
from repair_jax.explain.surrogate import kernel_shap, lime

ATTRIBUTIONS: dict[str, Callable] = {
    "grad": gradient,
    "input_x_grad": input_x_gradient,
    "smoothgrad": smoothgrad,
    "smoothgrad_sq": smoothgrad_sq,
    "smoothgrad_mean_sq": smoothgrad_mean_sq,
    "vargrad": vargrad,
    "ig": integrated_gradients,
    "expected_grad": expected_gradients,
    "guided_backprop": guided_backprop,
    "deconvnet": deconvnet,
    "lrp_epsilon": lrp_epsilon,
    "lrp_alpha_beta": lrp_alpha_beta,
    "deep_taylor": deep_taylor,
    "patternnet": patternnet,
    "pattern_attribution": pattern_attribution,
    "gradcam": gradcam,
    "gradcam_pp": gradcam_pp,
    "lime": lime,
    "kernel_shap": kernel_shap,
}
ARRAY_OPTIONS = ("baseline", "references", "patterns")  # array-valued options (traced, shared by the batch)


def get_attribution(name: str) -> Callable:
    """The attribution function registered as ``name``."""
    if name not in ATTRIBUTIONS:
        raise UserError(f"unknown attribution method {name!r}; choose from {', '.join(ATTRIBUTIONS)}")
    return ATTRIBUTIONS[name]


def parse_methods(spec: str) -> list[str]:
    """``all`` or a comma-separated list of registry names -> the names (each checked)."""
    names = list(ATTRIBUTIONS) if spec.strip() == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise UserError("no attribution method given")
    for n in names:
        get_attribution(n)
    return names


def _takes(fn: Callable, option: str) -> bool:
    params = inspect.signature(fn).parameters
    return option in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _check_options(fn: Callable, options: dict) -> None:
    try:
        inspect.signature(fn).bind(None, None, None, None, **options)
    except TypeError as e:
        raise UserError(f"bad options for {getattr(fn, '__name__', fn)}: {e}") from None


@functools.lru_cache(maxsize=64)
def _compiled(fn: Callable, apply_fn: ApplyFn, static: tuple, keyed: bool):
    def one(params, x, target, key, arrays):
        extra = {"key": key} if keyed else {}
        return fn(apply_fn, params, x, target, **dict(static), **arrays, **extra)

    return jax.jit(jax.vmap(one, in_axes=(None, 0, 0, 0 if keyed else None, None)))


def _on_host(fn: Callable, apply_fn: ApplyFn, params, x, target, options: dict) -> jax.Array:
    """A method marked ``jittable = False`` (LIME, KernelSHAP), one example after the other."""
    return jnp.stack([jnp.asarray(fn(apply_fn, params, x[i], int(target[i]), **options), jnp.float32)
                      for i in range(x.shape[0])])


def attribute(method: str | Callable, model, *args, target=None, key=None, **options) -> jax.Array:
    """Attributions of a batch: ``attribute(method, model, x, target)`` with ``model`` anything
    :func:`repair_jax.classifier.as_classifier` takes (a Classifier, an NNX model, a run, a TrainState;
    a linen module is followed by its variables), or the older ``attribute(method, apply_fn, params,
    x, target)`` with a plain ``apply_fn(params, x) -> logits``. ``method`` (a registry name or an
    attribution function) is vmapped over ``x`` (N, H, W, C) and ``target`` (N,) int (default: the
    predicted classes) and jitted.

    ``options`` go to the method; array options (``baseline``, ``references``, ``patterns``: a tuple of
    arrays) are shared by the batch,
    the others must be hashable. A method taking ``key`` gets ``fold_in(key, i)`` for example i
    (``key`` defaults to ``PRNGKey(0)``: same seeds, same numbers). A method with ``jittable = False``
    (LIME, KernelSHAP: host code) is called example by example with the options as given (its
    ``seed`` option, the same for every example). Returns (N, H, W, C).
    """
    apply_fn, params, rest = split_model_args(model, args)
    if len(rest) not in (1, 2) or (len(rest) == 2 and target is not None):
        raise UserError("attribute takes (method, model, x, target) or (method, apply_fn, params, x, target)")
    x, target = rest[0], (rest[1] if len(rest) == 2 else target)
    fn = get_attribution(method) if isinstance(method, str) else method
    x = jnp.asarray(x, jnp.float32)
    if x.ndim != 4:
        raise UserError(f"attribute expects a batch of images (N, H, W, C), got shape {x.shape}")
    if target is None:
        target = jnp.argmax(apply_fn(params, x), axis=-1)
    target = jnp.asarray(target, jnp.int32)
    if target.shape != (x.shape[0],):
        raise UserError(f"target must hold one class per example, shape ({x.shape[0]},), got {target.shape}")
    _check_options(fn, options)
    if not getattr(fn, "jittable", True):
        return _on_host(fn, apply_fn, params, x, target, options)
    if fn in (gradcam, gradcam_pp):
        options["layer"] = resolve_layer(apply_fn, params, x.shape[1:], options.get("layer"))
    arrays = {k: jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), v) for k, v in options.items()
              if k in ARRAY_OPTIONS or isinstance(v, (np.ndarray, jax.Array))}
    static = tuple(sorted((k, v) for k, v in options.items() if k not in arrays))
    keyed = _takes(fn, "key")
    keys = None
    if keyed:
        base = jax.random.PRNGKey(0) if key is None else key
        keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(x.shape[0]))
    try:
        compiled = _compiled(fn, apply_fn, static, keyed)
    except TypeError as e:  # an unhashable option
        raise UserError(f"options of {getattr(fn, '__name__', fn)} must be arrays or hashable values: {e}") from None
    return compiled(params, x, target, keys, arrays)
