"""Class activation maps: GradCAM and GradCAM++ on a layer named by its path (Selvaraju et al. 2017;
Chattopadhay et al. 2018; as in Sharma's Dependable AI report, "GradCAM & GradCAM++ Analysis").

A layer is named by its path, as :meth:`repair_jax.classifier.Classifier.layers` lists them: a
``flax.linen`` module path joined with ``/`` (``Conv_3``, ``BasicBlock_7/Conv_1``) or a ``flax.nnx``
attribute path (``conv2``, ``blocks/0/conv``). Any layer whose output is a feature map (1, h, w, K)
may be named (e.g. a ResNet ``BasicBlock``, whose output is rectified).

The default layer is the last convolution in call order (``nn.Conv`` / ``nnx.Conv``), for linen and
NNX alike: its output A, the map of the last conv block before that block's normalisation and ReLU.
The rectified output of the last conv block (what a Captum user passes as ``layer4`` of a ResNet)
cannot be found by path in general: a ReLU is a function call (``nn.relu``, ``nnx.relu``), not a
layer with a path. GradCAM rectifies the weighted map itself (``ReLU(sum_k alpha_k A_k)``); name a
block module (``BasicBlock_7``, ``blocks/3``) to read a block's rectified output instead.

The map is upsampled bilinearly to the input's height and width and repeated over its channels. A
plain-function model (``from_apply_fn``) has no layers: GradCAM refuses it.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from repair_jax.errors import UserError
from repair_jax.explain.model_fn import ApplyFn, model_classifier, refuse_opaque, takes_explained_model


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
    clf = model_classifier(apply_fn, params, input_shape)
    if clf is not None:  # a protocol model (linen, NNX, function): its own layer listing
        return tuple((name, shape) for name, (_, shape) in clf.layers(conv_only).items())
    names, shapes = [], {}  # the older form: a function of a linen module, layers by interception
    with nn.intercept_methods(_recorder(names, shapes, conv_only)):
        jax.eval_shape(lambda p: apply_fn(p, jnp.zeros((1, *input_shape), jnp.float32)), params)
    return tuple((n, shapes[n]) for n in names)


def module_outputs(apply_fn: ApplyFn, params, input_shape, conv_only: bool = True) -> dict[str, tuple]:
    """Layer path -> output shape (batch of 1), in call order; only convolutions (``nn.Conv``,
    ``nnx.Conv``) by default. Through :meth:`Classifier.layers` for an ``apply_fn`` of
    :meth:`Classifier.eval_fn`, by linen interception for any other function. Traced once per
    (apply_fn, parameter shapes, input shape): every later call is a cache look-up."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    spec = tuple((tuple(leaf.shape), jnp.dtype(leaf.dtype)) for leaf in leaves)
    return dict(_module_outputs(apply_fn, treedef, spec, tuple(input_shape), conv_only))


@takes_explained_model
def conv_layers(apply_fn: ApplyFn, params, input_shape) -> list[str]:
    """Paths of the convolutional layers of the model, in call order: ``conv_layers(model,
    input_shape)`` or ``conv_layers(apply_fn, params, input_shape)``."""
    return list(module_outputs(apply_fn, params, input_shape))


def layer_shape(apply_fn: ApplyFn, params, input_shape, layer: str) -> tuple:
    """The output shape (batch of 1) of layer ``layer``; a layer the model does not have -> a
    :class:`UserError` listing the model's layers."""
    refuse_opaque(apply_fn, params, "a layer-based method (GradCAM, TCAV)", "named layers")
    shapes = module_outputs(apply_fn, params, input_shape, conv_only=False)
    if layer not in shapes:
        raise UserError(f"no layer {layer!r} in the model; its layers are: {', '.join(shapes) or 'none'}")
    return shapes[layer]


def resolve_layer(apply_fn: ApplyFn, params, input_shape, layer: str | None) -> str:
    """``layer`` checked (a layer with a (1, h, w, K) output), or the last convolution if None."""
    refuse_opaque(apply_fn, params, "GradCAM", "named layers")
    if layer is None:
        convs = conv_layers(apply_fn, params, input_shape)
        if not convs:
            raise UserError("the model has no convolutional layer; GradCAM needs one (use a gradient method)")
        return convs[-1]
    shape = layer_shape(apply_fn, params, input_shape, layer)
    if len(shape) != 4:
        raise UserError(f"layer {layer!r} has output shape {shape}, not a feature map (1, h, w, K)")
    return layer


def layer_activation_and_gradient(apply_fn: ApplyFn, params, x, target, layer: str):
    """``(A, dY/dA)`` of the named layer's output A (h, w, K) for the target logit Y of one example."""
    clf = model_classifier(apply_fn, params, x.shape)
    if clf is None:
        return _intercepted_activation_and_gradient(apply_fn, params, x, target, layer)
    tapped = clf.tapped(layer)
    shape = layer_shape(apply_fn, params, x.shape, layer)

    def run(delta):
        logits, activation = tapped(params, x[None], delta)
        return logits[0, target], activation

    grad, activation = jax.grad(run, has_aux=True)(jnp.zeros(shape, x.dtype))
    return activation[0], grad[0]


def _intercepted_activation_and_gradient(apply_fn: ApplyFn, params, x, target, layer: str):
    """:func:`layer_activation_and_gradient` of the older form (a function of a linen module)."""
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
    """GradCAM of the target logit on ``layer`` (a linen or NNX layer path; default: the output of the
    last convolution, see the module docstring), upsampled to x (H, W, C)."""
    layer = resolve_layer(apply_fn, params, x.shape, layer)
    return _upsample(gradcam_map(*layer_activation_and_gradient(apply_fn, params, x, target, layer)), x)


def gradcam_pp(apply_fn: ApplyFn, params, x, target, *, layer: str | None = None) -> jax.Array:
    """GradCAM++ of the target logit on ``layer`` (as :func:`gradcam`), upsampled to x (H, W, C)."""
    layer = resolve_layer(apply_fn, params, x.shape, layer)
    return _upsample(gradcam_pp_map(*layer_activation_and_gradient(apply_fn, params, x, target, layer)), x)
