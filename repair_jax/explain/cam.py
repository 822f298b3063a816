"""Class activation maps: GradCAM and GradCAM++ on a named layer (004_9347ff94c01a7b9b.txt,
"GradCAM & GradCAM++ Analysis"; Selvaraju et al. 2017; Chattopadhay et al. 2018).

A layer is named by its flax module path joined with ``/`` (``Conv_3``, ``BasicBlock_7/Conv_1``);
:func:`conv_layers` lists the convolutions of a model in call order and the default is the last.
Any module whose output is a feature map (1, h, w, K) may be named (e.g. a ResNet ``BasicBlock``).
The map is upsampled bilinearly to the input's height and width and repeated over its channels.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from repair_jax.errors import UserError
from repair_jax.explain.model_fn import ApplyFn


def _name(module) -> str:
    return "/".join(str(p) for p in module.path)


def _recorder(names: list, shapes: dict, conv_only: bool):
    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        m = context.module
        if context.method_name == "__call__" and (isinstance(m, nn.Conv) or not conv_only):
            name = _name(m)
            if name not in shapes and hasattr(out, "shape"):
                names.append(name)
                shapes[name] = tuple(out.shape)
        return out

    return interceptor


@functools.lru_cache(maxsize=64)
def _module_outputs(apply_fn: ApplyFn, treedef, leaves: tuple, input_shape: tuple, conv_only: bool) -> tuple:
    params = jax.tree_util.tree_unflatten(treedef, [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in leaves])
    names, shapes = [], {}
    with nn.intercept_methods(_recorder(names, shapes, conv_only)):
        jax.eval_shape(lambda p: apply_fn(p, jnp.zeros((1, *input_shape), jnp.float32)), params)
    return tuple((n, shapes[n]) for n in names)


def module_outputs(apply_fn: ApplyFn, params, input_shape, conv_only: bool = True) -> dict[str, tuple]:
    """Layer name -> output shape (batch of 1), in call order; only ``nn.Conv`` layers by default.
    Traced once per (apply_fn, parameter shapes, input shape): every later call is a cache look-up."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    spec = tuple((tuple(leaf.shape), jnp.dtype(leaf.dtype)) for leaf in leaves)
    return dict(_module_outputs(apply_fn, treedef, spec, tuple(input_shape), conv_only))


def conv_layers(apply_fn: ApplyFn, params, input_shape) -> list[str]:
    """Names of the convolutional layers of the model, in call order."""
    return list(module_outputs(apply_fn, params, input_shape))


def resolve_layer(apply_fn: ApplyFn, params, input_shape, layer: str | None) -> str:
    """``layer`` checked (a module with a (1, h, w, K) output), or the last convolution if None."""
    if layer is None:
        convs = conv_layers(apply_fn, params, input_shape)
        if not convs:
            raise UserError("the model has no convolutional layer; GradCAM needs one (use a gradient method)")
        return convs[-1]
    shapes = module_outputs(apply_fn, params, input_shape, conv_only=False)
    if layer not in shapes:
        convs = conv_layers(apply_fn, params, input_shape)
        raise UserError(f"no layer {layer!r} in the model; convolutional layers: {', '.join(convs) or 'none'}")
    if len(shapes[layer]) != 4:
        raise UserError(f"layer {layer!r} has output shape {shapes[layer]}, not a feature map (1, h, w, K)")
    return layer


def layer_activation_and_gradient(apply_fn: ApplyFn, params, x, target, layer: str):
    """``(A, dY/dA)`` of the named layer's output A (h, w, K) for the target logit Y of one example."""
    def run(delta):
        captured = []

        def interceptor(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if context.method_name == "__call__" and _name(context.module) == layer and not captured:
                captured.append(out)
                out = out if delta is None else out + delta
            return out

        with nn.intercept_methods(interceptor):
            logit = apply_fn(params, x[None])[0, target]
        if not captured:
            raise UserError(f"no layer {layer!r} in the model")
        return logit, captured[0]

    shape = jax.eval_shape(lambda: run(None)[1])
    grad, activation = jax.grad(lambda d: run(d), has_aux=True)(jnp.zeros(shape.shape, shape.dtype))
    return activation[0], grad[0]


def _upsample(cam, x):
    cam = jax.image.resize(cam, (x.shape[0], x.shape[1]), method="bilinear")
    return jnp.broadcast_to(cam[..., None], x.shape).astype(x.dtype)


def gradcam_map(activation, grad):
    """GradCAM (Selvaraju et al. 2017): ``ReLU(sum_k alpha_k A_k)``, ``alpha_k = mean_ij dY/dA_ijk``;
    A, dY/dA (h, w, K) -> (h, w)."""
    weights = jnp.mean(grad, axis=(0, 1))
    return jax.nn.relu(jnp.tensordot(activation, weights, axes=1))


def gradcam_pp_map(activation, grad):
    """GradCAM++ (Chattopadhay et al. 2018, Eq. 19 with the exponential output): ``w_k = sum_ij
    a_ijk ReLU(g_ijk)``, ``a_ijk = g^2 / (2 g^2 + sum_ab A_abk g^3)`` (0 where g = 0);
    map ``ReLU(sum_k w_k A_k)``. (h, w, K) -> (h, w)."""
    g2 = grad * grad
    denom = 2 * g2 + jnp.sum(activation, axis=(0, 1)) * g2 * grad
    a = jnp.where((grad != 0) & (denom != 0), g2 / jnp.where(denom == 0, 1.0, denom), 0.0)
    weights = jnp.sum(a * jax.nn.relu(grad), axis=(0, 1))
    return jax.nn.relu(jnp.tensordot(activation, weights, axes=1))


def gradcam(apply_fn: ApplyFn, params, x, target, *, layer: str | None = None) -> jax.Array:
    """GradCAM of the target logit on ``layer`` (default: the last convolution), upsampled to x (H, W, C)."""
    layer = resolve_layer(apply_fn, params, x.shape, layer)
    return _upsample(gradcam_map(*layer_activation_and_gradient(apply_fn, params, x, target, layer)), x)


def gradcam_pp(apply_fn: ApplyFn, params, x, target, *, layer: str | None = None) -> jax.Array:
    """GradCAM++ of the target logit on ``layer`` (default: the last convolution), upsampled to x (H, W, C)."""
    layer = resolve_layer(apply_fn, params, x.shape, layer)
    return _upsample(gradcam_pp_map(*layer_activation_and_gradient(apply_fn, params, x, target, layer)), x)
