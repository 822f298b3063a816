"""A user's own model in a run directory: a factory named ``"pkg.module:factory"`` and its weights.

:func:`build_user_model` imports the factory (from the working directory or an installed package)
and calls it with the run's ``model_kwargs``; it must return a ``flax.nnx.Module`` or a
``flax.linen.Module``. :func:`read_weights` reads the user's trained weights from an orbax
checkpoint directory (the Flax ecosystem's format: ``ocp.StandardCheckpointer().save(path,
nnx.state(model))`` or linen ``variables``) or from a flax msgpack file, into the model's own
structure; :func:`repair_jax.runs.import_run` checks the result with one forward pass and writes a run directory
that every ``repair-jax`` subcommand then reads (:func:`repair_jax.runs.load_run`).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp

from repair_jax.classifier import Classifier, check_classifier, from_linen, from_nnx
from repair_jax.errors import UserError


def is_user_model(name: str) -> bool:
    """Whether a run's model name is a factory path ``"pkg.module:factory"`` (not a zoo name)."""
    return ":" in name


def build_user_model(spec: str, kwargs: dict, input_shape, num_classes: int, seed: int = 0):
    """``(model, variables or None)``: the factory's model; linen modules are initialised on zeros of
    ``input_shape`` (the variables a checkpoint is read into), NNX models come with their own."""
    factory = _import_factory(spec)
    try:
        model = factory(**kwargs)
    except Exception as e:
        raise UserError(f"the model factory {spec} failed: {type(e).__name__}: {_first_line(e)}") from None
    if isinstance(model, Classifier):  # e.g. from_apply_fn(fn, params_like): a plain function model
        return model, None
    if isinstance(model, nn.Module):
        try:
            variables = model.init(jax.random.PRNGKey(seed), jnp.zeros((2, *input_shape), jnp.float32))
        except Exception as e:
            raise UserError(f"the linen model of {spec} does not take inputs of shape {tuple(input_shape)}: "
                            f"{type(e).__name__}: {_first_line(e)}") from None
        return model, dict(variables)
    from flax import nnx

    if isinstance(model, nnx.Module):
        return model, None
    raise UserError(f"the model factory {spec} returned a {type(model).__name__}; it must return a "
                    "flax.nnx.Module, a flax.linen.Module or a repair_jax Classifier (from_apply_fn)")


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [""])[0]


def _import_factory(spec: str):
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UserError(f"model {spec!r} must name a factory as pkg.module:function")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # importable from the working directory, as `python -m` does
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UserError(f"cannot import {module_name!r} for model {spec}: {e}") from None
    except Exception as e:
        raise UserError(f"importing {module_name!r} failed: {type(e).__name__}: {_first_line(e)}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UserError(f"{module_name!r} has no function {attr!r}")
    return factory


def classifier_of(model, variables, input_shape, num_classes: int, features: str | None = "auto") -> Classifier:
    """The checked :class:`Classifier` of a linen module with ``variables``, of an NNX model, or a
    factory's own Classifier (a plain function with parameters shaped like the checkpoint's)."""
    if isinstance(model, Classifier):
        return check_classifier(model, input_shape, num_classes)
    if isinstance(model, nn.Module):
        return from_linen(model, variables, input_shape=input_shape, num_classes=num_classes, features=features)
    return from_nnx(model, input_shape=input_shape, num_classes=num_classes, features=features)


def read_weights(clf: Classifier, path: str | Path) -> Classifier:
    """``clf`` with the weights of the checkpoint at ``path``: an orbax checkpoint directory or a
    flax msgpack file, holding the NNX state (``nnx.state(model)``) or the linen variables."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    template = _template(clf)
    if path.is_dir():
        restored = _read_orbax(path, template, _nnx_state_template(clf))
    else:
        try:
            restored = flax.serialization.from_bytes(template, path.read_bytes())
        except Exception as e:
            raise UserError(f"the checkpoint {path} does not match the model ({type(e).__name__}: "
                            f"{_first_line(e)})") from None
    shapes = lambda t: jax.tree_util.tree_map(lambda a: tuple(jnp.shape(a)), t)
    if shapes(restored) != shapes(template):
        raise UserError(f"the checkpoint {path} does not match the model's parameter shapes")
    params, state = _split_weights(clf, restored)
    return clf.replace(params=params, state=state)


def _template(clf: Classifier) -> dict:
    """The checkpoint's expected structure: NNX state as a pure dict, or linen variables."""
    if clf.kind == "nnx":
        from flax import nnx

        return nnx.to_pure_dict(nnx.state(clf.export()))
    if clf.kind == "function":  # a plain function's checkpoint holds its params
        return clf.params
    return {"params": clf.params, **({"batch_stats": clf.state} if clf.state else {})}


def _split_weights(clf: Classifier, restored: dict):
    if clf.kind == "nnx":
        from flax import nnx

        model = clf.export()
        nnx.update(model, _as_state(model, restored))
        fresh = from_nnx(model, input_shape=clf.input_shape, num_classes=clf.num_classes,
                         features=clf.apply.features)
        return fresh.params, fresh.state
    if clf.kind == "function":
        return restored, clf.state
    return restored["params"], restored.get("batch_stats", {})


def _as_state(model, pure: dict):
    from flax import nnx

    state = nnx.state(model)
    nnx.replace_by_pure_dict(state, pure)
    return state


def _nnx_state_template(clf: Classifier):
    """An NNX model's ``nnx.State`` (what ``save(path, nnx.state(model))`` writes), else None."""
    if clf.kind != "nnx":
        return None
    from flax import nnx

    return nnx.state(clf.export())


def _read_orbax(path: Path, template: dict, state_template=None) -> dict:
    """The orbax checkpoint at ``path`` as a pure dict like ``template``; an NNX model's checkpoint
    may hold its ``nnx.State`` (``state_template``'s structure) or that state's pure dict."""
    try:
        import orbax.checkpoint as ocp
    except ImportError:  # pragma: no cover - orbax comes with flax
        raise UserError("reading an orbax checkpoint needs the orbax-checkpoint package") from None
    abstract = lambda t: jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.asarray(a).dtype), t)
    error = None
    for target in ([state_template] if state_template is not None else []) + [template]:
        try:
            with ocp.StandardCheckpointer() as ckpt:
                restored = ckpt.restore(path.resolve(), abstract(target))
            if state_template is not None and target is state_template:
                from flax import nnx
                return nnx.to_pure_dict(restored)
            return restored
        except Exception as e:  # the other layout may fit; the last failure is reported
            error = e
    raise UserError(f"cannot read the orbax checkpoint {path} into the model: {type(error).__name__}: "
                    f"{_first_line(error)}") from None


def load_user_classifier(info: dict, variables: dict | None = None) -> Classifier:
    """The :class:`Classifier` of an imported run's record (``info``: run.json), with ``variables``
    (``{"params", "batch_stats"}`` as stored) as its weights when given."""
    cfg = info["config"]
    model, init = build_user_model(cfg["model"], cfg.get("model_kwargs", {}), info["input_shape"],
                                   len(info["class_names"]))
    clf = classifier_of(model, init, info["input_shape"], len(info["class_names"]), info.get("features", "auto"))
    if variables is not None:
        clf = clf.replace(params=variables["params"], state=variables.get("batch_stats", {}))
    return clf
