"""The model protocol: one value for any classifier, Flax NNX, linen or a plain function.

A :class:`Classifier` holds the trainable ``params``, the non-trainable ``state`` (BatchNorm
statistics; empty when the model has none) and one pure function

    ``apply(params, state, x, train=False, sample_weight=None) -> (logits, features, state)``

``logits`` (N, K); ``features`` the penultimate activations (N, T) where the model exposes them, else
``None``; ``state`` the updated statistics in training mode (unchanged in eval mode);
``sample_weight`` (N,) weights the batch statistics of every BatchNorm layer (w-bn). Every package of
repair_jax takes a model through this value, as optax takes any pytree and Captum any module.

Three short adapters build it, and the value gives the user's own kind of object back
(:meth:`Classifier.export`):

* :func:`from_linen` (``module``, ``variables``): any ``flax.linen`` classifier, also repair_jax's zoo;
* :func:`from_nnx` (``model``): any ``flax.nnx`` classifier (``nnx.split`` / ``nnx.merge`` inside);
* :func:`from_apply_fn` (``fn(params, x) -> logits``): a plain function.

``features="auto"`` (the default) takes the input of the model's last dense layer (``nn.Dense`` /
``nnx.Linear``) when the logits are that layer's output; a layer path names another layer whose
output are the features; ``None`` exposes none. Layers are named by path (``"conv2"``,
``"Conv_1"``, ``"blocks/0/conv"``); :meth:`Classifier.layers` lists them and
:meth:`Classifier.tapped` reads one layer's output (for GradCAM, TCAV and carving).

Each adapter checks the model once at the door (a forward pass on zeros of ``input_shape``: logits of
shape (N, K), floating point, finite, K = ``num_classes`` where given) and answers a wrong model with
one :class:`~repair_jax.errors.UserError`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any, Callable, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from repair_jax.errors import UserError

# the mode argument a linen module's __call__ may take, and whether it means "eval" (inverted)
_MODE_ARGS = {"train": False, "training": False, "is_training": False, "deterministic": True,
              "use_running_average": True}


def _path_str(path) -> str:
    return "/".join(str(p) for p in path)


@flax.struct.dataclass
class Classifier:
    """A classifier as repair_jax sees it (see the module docstring). Build one with
    :func:`from_linen`, :func:`from_nnx` or :func:`from_apply_fn`; ``replace(params=..., state=...)``
    gives the same model with other weights."""

    params: Any
    state: Any
    apply: Callable = flax.struct.field(pytree_node=False)
    num_classes: int = flax.struct.field(pytree_node=False)
    input_shape: tuple = flax.struct.field(pytree_node=False)

    @property
    def kind(self) -> str:
        """``linen``, ``nnx`` or ``function``."""
        return self.apply.kind

    @property
    def has_features(self) -> bool:
        """Whether ``apply`` returns penultimate features (w-dbr, MM, concept carving need them)."""
        return self.apply.features is not None

    @property
    def has_batch_norm(self) -> bool:
        """Whether the model has BatchNorm statistics for w-bn to weight."""
        return bool(jax.tree_util.tree_leaves(self.state)) and self.apply.batch_norm

    @property
    def variables(self) -> dict:
        """``{"params", "batch_stats"}``: the weights as repair_jax's checkpoints store them."""
        return {"params": self.params, "batch_stats": self.state}

    def logits(self, x, train: bool = False) -> jax.Array:
        """Logits (N, K) of a batch ``x`` (eval mode by default)."""
        return self.apply(self.params, self.state, jnp.asarray(x), train=train)[0]

    def eval_fn(self) -> Callable[[Any, jax.Array], jax.Array]:
        """``f(params, x) -> logits`` in eval mode with this model's ``state`` held fixed: the form
        the explanation methods and influence losses differentiate."""
        return EvalFn(self.apply, self.state)

    def layers(self, conv_only: bool = False) -> dict[str, tuple[str, tuple]]:
        """Layer path -> (layer type, output shape for a batch of 1), in call order; only
        convolutions with ``conv_only``."""
        return self.apply.layer_outputs(self.params, self.state, self.input_shape, conv_only)

    def tapped(self, path: str) -> Callable:
        """``f(params, x, delta) -> (logits, activation)`` in eval mode, where ``activation`` is the
        output of layer ``path`` plus ``delta`` (zeros of its shape), and the model continues from
        it: ``d logits / d delta`` is the gradient with respect to the layer's output."""
        if path not in self.layers():
            raise UserError(f"the model has no layer {path!r}; its layers are: "
                            f"{', '.join(self.layers()) or 'none'}")
        return _Tapped(self.apply, self.state, path)

    def export(self):
        """The user's own kind of object with these weights: an ``nnx.Module`` (from_nnx), linen
        ``variables`` (from_linen) or ``(params, state)`` (from_apply_fn)."""
        return self.apply.export(self.params, self.state)


@dataclasses.dataclass(frozen=True)
class EvalFn:
    """``f(params, x) -> logits`` of a classifier in eval mode with its ``state`` held fixed
    (:meth:`Classifier.eval_fn`); it knows its model, so layer-based explanations can find the layers."""

    apply: Any
    state: Any = dataclasses.field(compare=False, hash=False)

    def __call__(self, params, x):
        return self.apply(params, self.state, x, train=False)[0]

    # equal by the model's function and the identity of its state (a jit cache key that is cheap)
    def __eq__(self, other):
        return isinstance(other, EvalFn) and other.apply == self.apply and other.state is self.state

    def __hash__(self):
        return hash((self.apply, id(self.state)))


@dataclasses.dataclass(frozen=True, eq=False)
class _Tapped:
    apply: Any
    state: Any
    path: str

    def __call__(self, params, x, delta):
        return self.apply.tap(params, self.state, x, self.path, delta)


# ----------------------------------------------------------------------------- linen

def _mode_arg(fn) -> str | None:
    try:
        names = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return None
    return next((a for a in _MODE_ARGS if a in names), None)


@contextlib.contextmanager
def _interceptors(fns: Sequence):
    with contextlib.ExitStack() as stack:
        for f in fns:
            stack.enter_context(nn.intercept_methods(f))
        yield


def _linen_recorder(sink: dict, features: str | None):
    """Records the input of the last ``nn.Dense`` (features="auto") or the output of layer ``features``."""
    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name != "__call__":
            return out
        m = context.module
        if features == "auto" and isinstance(m, nn.Dense):
            sink["features"], sink["dense_out"] = args[0], out
        elif features != "auto" and _path_str(m.path) == features:
            sink["features"] = out
        return out

    return interceptor


def _linen_tap(path: str, delta, sink: dict):
    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and _path_str(context.module.path) == path and "act" not in sink:
            out = out + delta
            sink["act"] = out
        return out

    return interceptor


def _linen_layer_recorder(layers: dict, conv_only: bool):
    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        m = context.module
        if context.method_name == "__call__" and m.path and hasattr(out, "shape"):
            if not conv_only or isinstance(m, nn.Conv):
                layers.setdefault(_path_str(m.path), (type(m).__name__, tuple(out.shape)))
        return out

    return interceptor


@dataclasses.dataclass(frozen=True)
class LinenApply:
    """``apply`` of a linen module (see :func:`from_linen`)."""

    module: nn.Module
    mode_arg: str | None
    native_weights: bool  # __call__ takes sample_weight (repair_jax's own zoo)
    features: str | None
    batch_norm: bool
    kind: str = "linen"

    @property
    def name(self) -> str:
        return type(self.module).__name__

    # hashed and compared by the module's repr: a module's attributes may be lists (from run.json)
    def _key(self):
        return (repr(self.module), self.mode_arg, self.native_weights, self.features, self.batch_norm)

    def __hash__(self):
        return hash(self._key())

    def __eq__(self, other):
        return isinstance(other, LinenApply) and self._key() == other._key()

    def _call(self, params, state, x, train, sample_weight, interceptors):
        variables = {"params": params, "batch_stats": state} if state else {"params": params}
        kw = {}
        if self.mode_arg is not None:
            kw[self.mode_arg] = (not train) if _MODE_ARGS[self.mode_arg] else train
        if self.native_weights:
            kw["sample_weight"] = sample_weight
        elif sample_weight is not None:
            from repair_jax.batchnorm import linen_weighted_batch_norm
            interceptors = [linen_weighted_batch_norm(sample_weight), *interceptors]
        mutable = ["batch_stats"] if (train and state) else False
        with _interceptors(interceptors):
            out = self.module.apply(variables, x, mutable=mutable, **kw)
        if mutable:
            out, mutated = out
            state = mutated.get("batch_stats", state)
        return out, state

    def __call__(self, params, state, x, train: bool = False, sample_weight=None):
        sink: dict = {}
        rec = [] if self.features is None else [_linen_recorder(sink, self.features)]
        out, state = self._call(params, state, x, train, sample_weight, rec)
        if isinstance(out, (tuple, list)):  # a module returning (logits, features), as repair_jax's own
            return out[0], out[1], state
        return out, sink.get("features"), state

    def tap(self, params, state, x, path, delta):
        sink: dict = {}
        out, _ = self._call(params, state, x, False, None, [_linen_tap(path, delta, sink)])
        return (out[0] if isinstance(out, (tuple, list)) else out), sink["act"]

    def layer_outputs(self, params, state, input_shape, conv_only):
        layers: dict = {}

        def run(p, s):
            self._call(p, s, jnp.zeros((1, *input_shape), jnp.float32), False, None,
                       [_linen_layer_recorder(layers, conv_only)])
        jax.eval_shape(run, params, state)
        return layers

    def export(self, params, state):
        return {"params": params, "batch_stats": state} if state else {"params": params}


def linen_apply(module: nn.Module, features: str | None = "auto", batch_norm: bool = False) -> LinenApply:
    """The protocol function of a linen module (see :func:`from_linen`, which also checks it)."""
    call = type(module).__call__
    native = "sample_weight" in inspect.signature(call).parameters
    return LinenApply(module, _mode_arg(call), native, features, batch_norm)


def protocol_apply(fn) -> Callable:
    """``fn`` as the protocol's ``apply``: a protocol function is returned as it is, a linen module's
    bound ``module.apply`` becomes :func:`linen_apply` of the module."""
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, nn.Module) and getattr(fn, "__name__", "") == "apply":
        return linen_apply(owner)
    return fn


def from_linen(module: nn.Module, variables: dict, *, input_shape: Sequence[int] | None = None,
               num_classes: int | None = None, features: str | None = "auto") -> Classifier:
    """A :class:`Classifier` of a ``flax.linen`` module and its ``variables`` (``{"params", ...}``,
    ``"batch_stats"`` for BatchNorm). The module's ``__call__(x, ...)`` returns logits, or
    ``(logits, features)`` as repair_jax's own models do; a mode argument (``train``, ``training``,
    ``deterministic`` or ``use_running_average``) is set for training and eval. ``input_shape``
    (one example's shape) enables the check at the door and layer listing; ``features``: see the
    module docstring."""
    if not isinstance(module, nn.Module):
        raise UserError(f"from_linen takes a flax.linen Module, got {type(module).__name__}")
    if not isinstance(variables, Mapping) or "params" not in variables:
        raise UserError("from_linen takes the module's variables, a dict with a 'params' collection")
    variables = dict(variables)  # a FrozenDict too
    other = sorted(set(variables) - {"params", "batch_stats"})
    if other:
        raise UserError(f"from_linen supports the collections params and batch_stats; the variables "
                        f"also hold {', '.join(other)}")
    state = variables.get("batch_stats", {})
    apply = linen_apply(module, features, bool(jax.tree_util.tree_leaves(state)))
    clf = Classifier(variables["params"], state, apply, num_classes or 0, tuple(input_shape or ()))
    return _checked(clf) if input_shape is not None else clf


# ----------------------------------------------------------------------------- nnx

@contextlib.contextmanager
def _nnx_dense_recorder(sink: dict):
    from flax import nnx

    original = nnx.Linear.__call__

    def recording(self, x, *args, **kwargs):
        out = original(self, x, *args, **kwargs)
        sink["features"], sink["dense_out"] = x, out
        return out

    nnx.Linear.__call__ = recording
    try:
        yield
    finally:
        nnx.Linear.__call__ = original


class _Hook:
    """What a tap adds and where it records (a plain object: NNX keeps it as static data)."""

    def __init__(self, path, delta, calls: list):
        self.path, self.delta, self.calls = path, delta, calls


def _nnx_tap_module():
    from flax import nnx

    class _Tap(nnx.Module):
        """Wraps a layer while one call is traced: its output (plus ``delta``), recorded in call order."""

        def __init__(self, inner, hook: _Hook):
            self.inner, self.hook = inner, hook

        def __call__(self, *args, **kwargs):
            out = self.inner(*args, **kwargs)
            if self.hook.delta is not None:
                out = out + self.hook.delta
            self.hook.calls.append((self.hook.path, type(self.inner).__name__, out))
            return out

    return _Tap


def _nnx_get(model, path: Sequence):
    node = model
    for p in path:
        node = node[p] if isinstance(p, int) else getattr(node, p)
    return node


def _nnx_set(model, path: Sequence, value):
    parent = _nnx_get(model, path[:-1])
    if isinstance(path[-1], int):
        parent[path[-1]] = value
    else:
        setattr(parent, path[-1], value)


@contextlib.contextmanager
def _nnx_tapping(model, paths: Sequence[tuple], delta=None):
    """Within the block, the layers at ``paths`` of ``model`` record their outputs (the yielded list of
    ``(path, type, output)`` in call order); ``delta`` is added to the output of a single tapped layer.
    The layers are put back afterwards, so ``nnx.split`` sees the model's own structure."""
    Tap, calls, saved = _nnx_tap_module(), [], []
    for path in sorted(paths, key=len, reverse=True):  # children before their parents
        inner = _nnx_get(model, path)
        saved.append((path, inner))
        _nnx_set(model, path, Tap(inner, _Hook(path, delta, calls)))
    try:
        yield calls
    finally:
        for path, inner in reversed(saved):
            _nnx_set(model, path, inner)


def _nnx_modules(model) -> list[tuple[tuple, Any]]:
    from flax import nnx

    return [(tuple(p), m) for p, m in nnx.iter_modules(model) if p and callable(m)]


@dataclasses.dataclass(frozen=True)
class NNXApply:
    """``apply`` of an NNX model (see :func:`from_nnx`): ``nnx.merge`` of the graph and the weights."""

    graphdef: Any
    param_def: Any  # treedefs of the nnx.State of the parameters / the rest, leaves in pure-dict order
    state_def: Any
    features: str | None
    batch_norm: bool
    name: str = "nnx.Module"
    kind: str = "nnx"

    def merge(self, params, state):
        from flax import nnx

        p = jax.tree_util.tree_unflatten(self.param_def, jax.tree_util.tree_leaves(params))
        s = jax.tree_util.tree_unflatten(self.state_def, jax.tree_util.tree_leaves(state))
        return nnx.merge(self.graphdef, p, s)

    def _run(self, model, x, train, sample_weight, sink):
        model.train() if train else model.eval()
        with contextlib.ExitStack() as stack:
            if sample_weight is not None:
                from repair_jax.batchnorm import nnx_weighted_batch_norm
                stack.enter_context(nnx_weighted_batch_norm(sample_weight))
            if self.features == "auto":
                stack.enter_context(_nnx_dense_recorder(sink))
            return model(x)

    def __call__(self, params, state, x, train: bool = False, sample_weight=None):
        from flax import nnx

        model = self.merge(params, state)
        sink: dict = {}
        tapped = [] if self.features in (None, "auto") else [_split_path(self.features)]
        with _nnx_tapping(model, tapped) as calls:
            logits = self._run(model, x, train, sample_weight, sink)
        if tapped:
            sink["features"] = calls[0][2] if calls else None
        feats = None if self.features is None else sink.get("features")
        if feats is not None and feats.ndim > 2:
            feats = feats.reshape(feats.shape[0], -1)
        if train:
            state = nnx.to_pure_dict(nnx.split(model, nnx.Param, ...)[2])
        return logits, feats, state

    def tap(self, params, state, x, path, delta):
        model = self.merge(params, state)
        model.eval()
        with _nnx_tapping(model, [_split_path(path)], delta) as calls:
            logits = model(x)
        return logits, calls[0][2]

    def layer_outputs(self, params, state, input_shape, conv_only):
        from flax import nnx

        found: dict = {}

        def run(p, s):
            model = self.merge(p, s)
            paths = [path for path, m in _nnx_modules(model) if not conv_only or isinstance(m, nnx.Conv)]
            model.eval()
            with _nnx_tapping(model, paths) as calls:
                model(jnp.zeros((1, *input_shape), jnp.float32))
            for path, kind, out in calls:
                found.setdefault(_path_str(path), (kind, tuple(out.shape)))
            return 0

        jax.eval_shape(run, params, state)
        return found

    def export(self, params, state):
        return self.merge(params, state)


def _split_path(path: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in path.split("/"))


def from_nnx(model, *, input_shape: Sequence[int] | None = None, num_classes: int | None = None,
             features: str | None = "auto") -> Classifier:
    """A :class:`Classifier` of a ``flax.nnx`` model whose ``__call__(x)`` returns logits. Training and
    eval mode are set with ``model.train()`` / ``model.eval()`` (BatchNorm, Dropout) on a merged copy:
    the user's model is never mutated; :meth:`Classifier.export` returns a new model with the
    classifier's weights. ``input_shape``, ``num_classes``, ``features``: see :func:`from_linen`."""
    from flax import nnx

    if not isinstance(model, nnx.Module):
        raise UserError(f"from_nnx takes a flax.nnx Module, got {type(model).__name__}")
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    pure_p, pure_s = nnx.to_pure_dict(params), nnx.to_pure_dict(rest)
    for a, b in ((params, pure_p), (rest, pure_s)):
        if len(jax.tree_util.tree_leaves(a)) != len(jax.tree_util.tree_leaves(b)):
            raise UserError("from_nnx: the model's state does not flatten to plain arrays")
    modules = _nnx_modules(model)
    if features not in (None, "auto") and _split_path(features) not in {p for p, _ in modules}:
        raise UserError(f"the model has no layer {features!r} (features); its layers are: "
                        f"{', '.join(_path_str(p) for p, _ in modules) or 'none'}")
    bn = any(isinstance(m, nnx.BatchNorm) for _, m in modules)
    apply = NNXApply(graphdef, jax.tree_util.tree_structure(params), jax.tree_util.tree_structure(rest),
                     features, bn, type(model).__name__)
    clf = Classifier(pure_p, pure_s, apply, num_classes or 0, tuple(input_shape or ()))
    return _checked(clf) if input_shape is not None else clf


# ----------------------------------------------------------------------------- plain functions

@dataclasses.dataclass(frozen=True)
class FunctionApply:
    """``apply`` of a plain ``fn(params, x) -> logits`` (see :func:`from_apply_fn`)."""

    fn: Callable
    takes_state: bool
    features: str | None = None
    batch_norm: bool = False
    kind: str = "function"

    @property
    def name(self) -> str:
        return getattr(self.fn, "__name__", type(self.fn).__name__)

    def __call__(self, params, state, x, train: bool = False, sample_weight=None):
        if sample_weight is not None:
            raise UserError("a plain-function model has no BatchNorm statistics to weight (w-bn)")
        logits = self.fn(params, state, x) if self.takes_state else self.fn(params, x)
        return logits, None, state

    def tap(self, params, state, x, path, delta):
        raise UserError("a plain-function model has no named layers")

    def layer_outputs(self, params, state, input_shape, conv_only):
        return {}

    def export(self, params, state):
        return (params, state) if self.takes_state else params


def from_apply_fn(fn: Callable, params, state=None, *, input_shape: Sequence[int] | None = None,
                  num_classes: int | None = None) -> Classifier:
    """A :class:`Classifier` of a pure function ``fn(params, x) -> logits`` (or
    ``fn(params, state, x)`` when ``state`` is given, held fixed: the function has no training mode).
    It has no features and no named layers: methods that need them refuse it."""
    if not callable(fn):
        raise UserError(f"from_apply_fn takes a function, got {type(fn).__name__}")
    apply = FunctionApply(fn, state is not None)
    clf = Classifier(params, {} if state is None else state, apply, num_classes or 0, tuple(input_shape or ()))
    return _checked(clf) if input_shape is not None else clf


# ----------------------------------------------------------------------------- the door

def _checked(clf: Classifier) -> Classifier:
    """``clf`` after one forward pass on zeros of its input shape (2 examples), with ``num_classes``
    filled in from the logits when it was not given; a wrong model -> one :class:`UserError`."""
    x = jnp.zeros((2, *clf.input_shape), jnp.float32)
    try:
        logits, feats, _ = clf.apply(clf.params, clf.state, x, train=False)
    except UserError:
        raise
    except Exception as e:  # the user's model failed on an input of the declared shape
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"the model fails on inputs of shape {tuple(x.shape)}: {type(e).__name__}: {msg}") from None
    if not hasattr(logits, "shape") or logits.ndim != 2 or logits.shape[0] != 2:
        shape = getattr(logits, "shape", type(logits).__name__)
        raise UserError(f"the model must return logits of shape (N, num_classes); for a batch of 2 it "
                        f"returned {shape}")
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        raise UserError(f"the model's logits must be floating point, got {logits.dtype}")
    k = int(logits.shape[1])
    if clf.num_classes and k != clf.num_classes:
        raise UserError(f"the model returns {k} logits per example but the data has {clf.num_classes} classes")
    if k < 2:
        raise UserError(f"a classifier needs at least 2 classes; the model returns {k} logit(s)")
    if not bool(jnp.all(jnp.isfinite(logits))):
        raise UserError("the model returns non-finite logits (NaN or inf) on zero inputs")
    apply = clf.apply
    if apply.features is not None:
        apply = _resolved_features(clf, feats)
    return clf.replace(num_classes=k, apply=apply)


def _resolved_features(clf: Classifier, feats):
    """The adapter with ``features`` checked: "auto" becomes None when the logits are not the output
    of a last dense layer (the model then has no features); a named layer must exist."""
    apply = clf.apply
    if apply.features == "auto":
        ok = feats is not None and feats.ndim == 2 and _logits_from_last_dense(clf)
        return apply if ok else dataclasses.replace(apply, features=None)
    if feats is None:
        raise UserError(f"the model has no layer {apply.features!r} (features); its layers are: "
                        f"{', '.join(clf.layers()) or 'none'}")
    return apply


def _logits_from_last_dense(clf: Classifier) -> bool:
    layers = clf.layers()
    if not layers:
        return False
    kind, shape = list(layers.values())[-1]
    return kind in ("Dense", "Linear") and shape[-1] == (clf.num_classes or shape[-1])


def check_classifier(clf: Classifier, input_shape: Sequence[int], num_classes: int) -> Classifier:
    """``clf`` checked against a data set's example shape and class count (the door check of the
    adapters, run once when the data is first known)."""
    if not isinstance(clf, Classifier):
        raise UserError(f"expected a repair_jax Classifier (from_linen, from_nnx, from_apply_fn), got "
                        f"{type(clf).__name__}")
    if clf.input_shape == tuple(input_shape) and clf.num_classes == num_classes:
        return clf
    if clf.input_shape and clf.input_shape != tuple(input_shape):
        raise UserError(f"the model takes inputs of shape {clf.input_shape} but the data's are {tuple(input_shape)}")
    if clf.num_classes and clf.num_classes != num_classes:
        raise UserError(f"the model returns {clf.num_classes} logits per example but the data has {num_classes} classes")
    return _checked(clf.replace(input_shape=tuple(input_shape), num_classes=num_classes))


def as_classifier(model, variables: dict | None = None) -> Classifier:
    """The :class:`Classifier` of what a public entry point was given: a Classifier itself, a linen
    module with its ``variables``, an NNX model, a :class:`repair_jax.runs.Run` or a TrainState;
    ``variables`` (``{"params", "batch_stats"}``) replace the weights where given."""
    if isinstance(model, nn.Module):
        if variables is None:
            raise UserError("a linen module needs its variables: pass (module, variables) or from_linen(...)")
        return from_linen(model, variables)
    clf = _classifier_of(model)
    if variables is None:
        return clf
    return clf.replace(params=variables["params"], state=variables.get("batch_stats", {}))


def _classifier_of(model) -> Classifier:
    if isinstance(model, Classifier):
        return model
    if callable(getattr(model, "classifier", None)):  # a repair_jax.runs.Run
        return model.classifier()
    if isinstance(getattr(model, "apply_fn", None), (LinenApply, NNXApply, FunctionApply)):  # a TrainState
        return Classifier(model.params, model.batch_stats, model.apply_fn, 0, ())
    from flax import nnx

    if isinstance(model, nnx.Module):
        return from_nnx(model)
    raise UserError(f"cannot take a {type(model).__name__} as a model: pass a Classifier (from_linen, "
                    "from_nnx, from_apply_fn), a linen module with its variables or an NNX model")


def predict_outputs(clf: Classifier, x: np.ndarray, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray | None]:
    """Eval-mode ``(logits (N, K), features (N, T) or None)`` of all of ``x`` in fixed-size jitted
    chunks (NumPy)."""
    from repair_jax.data import map_batched

    fn = _jitted_outputs(clf.apply)
    return map_batched(lambda chunk: fn(clf.params, clf.state, jnp.asarray(chunk)), x, batch_size)


def predict_logits(clf: Classifier, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Eval-mode logits (N, K) of all of ``x`` (NumPy)."""
    return predict_outputs(clf, x, batch_size)[0]


_JITTED: dict = {}


def _jitted_outputs(apply):
    if apply not in _JITTED:
        _JITTED[apply] = jax.jit(lambda p, s, x: apply(p, s, x, train=False)[:2])
    return _JITTED[apply]


def takes_model(fn):
    """Decorator of a public entry point ``fn(model: Classifier, *args, **kwargs)``: the caller may
    pass a :class:`Classifier`, an NNX model, a run, a TrainState, or the older pair
    ``(linen_module, variables, *args)``; ``fn`` always receives the :class:`Classifier`."""
    import functools

    @functools.wraps(fn)
    def wrapper(model, *args, **kwargs):
        variables = kwargs.pop("variables", None)
        if args and (args[0] is None or (isinstance(args[0], Mapping) and "params" in args[0])):
            variables, args = args[0], args[1:]
        return fn(as_classifier(model, variables), *args, **kwargs)

    return wrapper
