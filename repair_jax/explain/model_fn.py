"""The model as the explanation methods see it: ``apply_fn(params, x) -> logits`` in eval mode.

Every attribution method takes ``apply_fn(params, x)`` mapping a batch ``x`` (N, H, W, C) to logits
(N, K); BatchNorm uses its running statistics (``train=False``), closed over by :func:`eval_apply_fn`.

The public entry points (:func:`repair_jax.explain.attribute`, TCAV's layer functions) take the user's
model through the protocol of :mod:`repair_jax.classifier` (:func:`takes_explained_model`): a
:class:`~repair_jax.classifier.Classifier`, an NNX model, a linen module with its variables, a run or
a TrainState, or, as before, a plain ``apply_fn`` followed by its ``params``. An ``apply_fn`` made by
:meth:`Classifier.eval_fn` keeps its model: :func:`model_classifier` gives it back to the methods that
need the model's layers (GradCAM, TCAV) or its kind (modified back-propagation).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax

from repair_jax.errors import UserError

ApplyFn = Callable[[Any, jax.Array], jax.Array]


def eval_apply_fn(source, variables: dict | None = None) -> tuple[ApplyFn, Any]:
    """``(apply_fn, params)`` of any model :func:`repair_jax.classifier.as_classifier` takes (a
    Classifier, an NNX model, a linen module with its ``variables``, a run, a TrainState).

    ``apply_fn(params, x)`` returns the logits (N, K) of the model in eval mode (BatchNorm running
    statistics held fixed).
    """
    from repair_jax.classifier import as_classifier

    clf = as_classifier(source, variables)
    return clf.eval_fn(), clf.params


def is_model(obj) -> bool:
    """Whether ``obj`` is a model for :func:`eval_apply_fn` rather than a plain ``apply_fn``: a
    Classifier, a linen or NNX module, or any other non-callable (a run, a TrainState)."""
    from flax import nnx
    import flax.linen as nn

    from repair_jax.classifier import Classifier

    return isinstance(obj, (Classifier, nn.Module, nnx.Module)) or not callable(obj)


def split_model_args(model, args: tuple) -> tuple[ApplyFn, Any, tuple]:
    """``(apply_fn, params, rest)`` of an entry point's positional arguments: ``(model, *rest)``,
    ``(linen_module, variables, *rest)`` or the older ``(apply_fn, params, *rest)``."""
    import flax.linen as nn

    if not is_model(model):
        if not args:
            raise UserError("a plain apply_fn must be followed by its params")
        return model, args[0], tuple(args[1:])
    variables = None
    if isinstance(model, nn.Module):
        if not args:
            raise UserError("a linen module needs its variables: pass (module, variables, ...)")
        variables, args = args[0], args[1:]
    apply_fn, params = eval_apply_fn(model, variables)
    return apply_fn, params, tuple(args)


def takes_explained_model(fn: Callable) -> Callable:
    """Decorator of an entry point ``fn(apply_fn, params, *args, **kwargs)``: callers may instead pass
    a model first, ``fn(model, *args)`` (see :func:`split_model_args`); ``fn`` receives the model's
    eval ``apply_fn`` and ``params``."""
    @functools.wraps(fn)
    def wrapper(model, *args, **kwargs):
        apply_fn, params, rest = split_model_args(model, args)
        return fn(apply_fn, params, *rest, **kwargs)

    return wrapper


def model_classifier(apply_fn: ApplyFn, params, input_shape=()):
    """The :class:`~repair_jax.classifier.Classifier` behind an ``apply_fn`` made by
    :meth:`Classifier.eval_fn` (with these ``params``, which may be traced), or ``None`` for any other
    function (the older form: a function of a linen module, whose layers are found by interception)."""
    from repair_jax.classifier import Classifier, EvalFn  # the protocol's eval function holds its model

    if not isinstance(apply_fn, EvalFn):
        return None
    return Classifier(params, apply_fn.state, apply_fn.apply, 0, tuple(input_shape))


def refuse_opaque(apply_fn: ApplyFn, params, method: str, needs: str) -> None:
    """A one-line :class:`UserError` when the model is a plain function (from_apply_fn): ``method``
    needs ``needs``, which such a model does not expose."""
    clf = model_classifier(apply_fn, params)
    if clf is not None and clf.kind == "function":
        raise UserError(f"{method} needs {needs}, which a plain-function model (from_apply_fn) does not "
                        f"expose; wrap the model with from_linen or from_nnx, or use a gradient method (grad, ig)")


def target_logit(apply_fn: ApplyFn, params, x: jax.Array, target) -> jax.Array:
    """The scalar logit ``f_{theta,target}(x)`` of one example ``x`` (H, W, C) (Adebayo 2022, Sec. 3.2 notation)."""
    return apply_fn(params, x[None])[0, target]


def input_gradient(apply_fn: ApplyFn, params, x: jax.Array, target) -> jax.Array:
    """``d f_{theta,target}(x) / dx`` with ``x``'s shape."""
    return jax.grad(lambda z: target_logit(apply_fn, params, z, target))(x)


def path_gradients(apply_fn: ApplyFn, params, points: jax.Array, target) -> jax.Array:
    """Input gradients at many points (M, H, W, C) -> (M, H, W, C), one vmapped call."""
    return jax.vmap(lambda z: input_gradient(apply_fn, params, z, target))(points)
