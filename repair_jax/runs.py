"""Checkpoints and run directories.

A run directory holds ``run.json`` (config, class names, history, final test metric, checkpoint
checksum) and ``checkpoint.msgpack`` (flax serialization of ``{"params", "batch_stats"}``). A run
trained with ``checkpoint_every=k`` also keeps ``checkpoints/epoch_NNNN.msgpack`` every k epochs,
listed in run.json under ``epoch_checkpoints`` with their step size (for TracInCP).
:func:`train_run` trains a config into a new run directory; :func:`trained_run` reuses the run a directory holds
when it was trained with the same config (the studies' one train-or-reuse step).
Directories and files are written atomically (:mod:`repair_jax.io`); a missing, truncated or
altered checkpoint is a :class:`UserError`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import flax.serialization
import jax
import numpy as np
import optax

from repair_jax.errors import UserError
from repair_jax.io import read_json, write_bytes_atomic, write_json

if TYPE_CHECKING:  # annotations only: train builds on the data and model floors, runs on train
    from repair_jax.train import TrainConfig

CHECKPOINT = "checkpoint.msgpack"
RUN_JSON = "run.json"
EPOCH_CHECKPOINTS = "checkpoints"


def save_checkpoint(path: str | Path, variables: dict) -> str:
    """Writes ``{"params", "batch_stats"}`` atomically; returns the SHA-256 of the bytes."""
    tree = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    data = flax.serialization.to_bytes(jax.device_get(tree))
    write_bytes_atomic(path, data)
    return hashlib.sha256(data).hexdigest()


def restore_checkpoint(path: str | Path, template: dict, sha256: str | None = None) -> dict:
    """Reads a checkpoint into the structure of ``template``; checks the checksum if given."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    data = path.read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise UserError(f"checkpoint is corrupt (checksum mismatch): {path}")
    tree = {"params": template["params"], "batch_stats": template.get("batch_stats", {})}
    try:
        restored = flax.serialization.from_bytes(tree, data)
    except Exception as e:
        raise UserError(f"checkpoint is corrupt or does not match the model: {path} ({type(e).__name__})") from None
    shapes = lambda t: jax.tree_util.tree_map(lambda a: tuple(a.shape), t)
    if shapes(restored) != shapes(tree):
        raise UserError(f"checkpoint does not match the model's parameter shapes: {path}")
    return restored


@dataclasses.dataclass
class Run:
    """A trained model loaded from a run directory."""

    path: Path
    info: dict
    model: Any
    variables: dict

    @property
    def config(self):
        from repair_jax.train import TrainConfig
        return TrainConfig(**self.info["config"])

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.info["class_names"])

    def dataset(self):
        """The run's data set with the same split (same seed, data dir and train limit)."""
        return self.config.load_dataset()

    def classifier(self):
        """The run's model and weights as a :class:`~repair_jax.classifier.Classifier` (a zoo model or
        a user's model imported with ``repair-jax import``)."""
        from repair_jax.classifier import from_linen
        from repair_jax.user_models import is_user_model, load_user_classifier

        if is_user_model(self.info["config"]["model"]):
            return load_user_classifier(self.info, self.variables)
        return from_linen(self.model, self.variables, input_shape=self.info["input_shape"],
                          num_classes=len(self.info["class_names"]))

    def state(self, tx: optax.GradientTransformation | None = None):
        """A TrainState of the stored weights (``tx`` defaults to a no-op optimizer)."""
        from repair_jax.train import create_train_state
        return create_train_state(self.classifier(), tx or optax.identity())

    def epoch_checkpoints(self) -> list[tuple[dict, dict]]:
        """``[(record, variables)]`` of the checkpoints kept during training, oldest first; record:
        ``{"epoch", "file", "sha256", "learning_rate"}``. Empty for a run that kept none."""
        return [(rec, restore_checkpoint(self.path / rec["file"], self.variables, rec.get("sha256")))
                for rec in self.info.get("epoch_checkpoints", [])]


def save_epoch_checkpoint(directory: Path, epoch: int, learning_rate: float, variables: dict) -> dict:
    """Writes ``checkpoints/epoch_NNNN.msgpack`` under ``directory``; returns its run.json record."""
    rel = f"{EPOCH_CHECKPOINTS}/epoch_{epoch:04d}.msgpack"
    (Path(directory) / EPOCH_CHECKPOINTS).mkdir(exist_ok=True)
    sha = save_checkpoint(Path(directory) / rel, variables)
    return {"epoch": epoch, "file": rel, "sha256": sha, "learning_rate": float(learning_rate)}


def write_run(directory: Path, info: dict, variables: dict) -> None:
    """Writes checkpoint + run.json into ``directory`` (normally a temporary atomic dir)."""
    sha = save_checkpoint(directory / CHECKPOINT, variables)
    write_json(directory / RUN_JSON, {**info, "checkpoint": CHECKPOINT, "checkpoint_sha256": sha})


def read_run_info(path: str | Path) -> dict:
    """The run.json record of the run directory ``path``, checked (cheap: no model, no data)."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"run directory not found: {path}")
    info = read_json(path / RUN_JSON, "run.json")
    for key in ("config", "class_names", "input_shape"):
        if not isinstance(info, dict) or key not in info:
            raise UserError(f"run.json in {path} lacks the key {key!r}; is this a repair-jax run?")
    return info


def load_run(path: str | Path) -> Run:
    """The run directory ``path``: its model (a zoo model, or a user's ``"pkg.module:factory"``
    written by ``repair-jax import``) with the stored weights."""
    from repair_jax.models import create_model, init_variables
    from repair_jax.user_models import is_user_model, load_user_classifier

    path = Path(path)
    info = read_run_info(path)
    cfg = info["config"]
    if is_user_model(str(cfg.get("model", ""))):
        clf = load_user_classifier(info)
        variables = restore_checkpoint(path / info.get("checkpoint", CHECKPOINT), clf.variables,
                                       info.get("checkpoint_sha256"))
        return Run(path, info, clf.export(), variables)
    try:
        model = create_model(cfg["model"], len(info["class_names"]), **cfg.get("model_kwargs", {}))
    except KeyError as e:
        raise UserError(f"run.json config in {path} lacks {e}") from None
    # shapes only (no initialisation is computed, nothing is compiled): the checkpoint gives the values
    template = jax.eval_shape(lambda: init_variables(model, jax.random.PRNGKey(0), info["input_shape"]))
    variables = restore_checkpoint(path / info.get("checkpoint", CHECKPOINT), template,
                                   info.get("checkpoint_sha256"))
    return Run(path, info, model, variables)


def train_run(cfg, out: str | Path, force: bool = False, progress: bool = True, data_parallel: bool = False,
              checkpoint_every: int = 0, dataset=None) -> dict:
    """Trains ``cfg`` (a :class:`~repair_jax.train.TrainConfig`) and writes the run directory ``out``
    atomically; returns run.json's record. An existing non-empty ``out`` is replaced only with ``force``.
    ``dataset`` (default ``cfg.load_dataset()``) trains on a data set changed by the caller (e.g. flipped labels
    or a planted tag); run.json then records its training split's digest (:func:`data_digest`).

    ``checkpoint_every=k`` > 0 also keeps the weights after every k-th epoch (and the last one) with
    the step size in force at that epoch's last step, for TracInCP (``repair-jax influence --method tracin``).
    run.json's ``config`` records the three seeds (split, init, order) spelled out.
    """
    import time

    from repair_jax.errors import require_at_least
    from repair_jax.io import atomic_dir
    from repair_jax.train import data_mesh, steps_per_epoch, train_model

    require_at_least("checkpoint_every", checkpoint_every, 0)
    cfg = cfg.resolved()
    cfg.validate()
    with atomic_dir(out, overwrite=force) as tmp:
        t0 = time.perf_counter()
        mesh = data_mesh() if (data_parallel or jax.device_count() > 1) else None
        ds = cfg.load_dataset() if dataset is None else dataset
        kept: list[dict] = []
        keep = _epoch_keeper(cfg, tmp, steps_per_epoch(cfg, len(ds.train)), checkpoint_every, kept)
        model, state, history, ds = train_model(cfg, dataset=ds, progress=progress, mesh=mesh,
                                                on_epoch_end=keep if checkpoint_every else None)
        info = _run_record(cfg, ds, state, history, time.perf_counter() - t0)
        if dataset is not None:
            info["data_digest"] = data_digest(dataset)
        if kept:
            info["epoch_checkpoints"] = kept
        write_run(tmp, info, {"params": state.params, "batch_stats": state.batch_stats})
    return info


def _epoch_keeper(cfg, directory: Path, per_epoch: int, every: int, kept: list):
    """``on_epoch_end`` that saves every ``every``-th epoch (and the last) into ``kept``."""
    from repair_jax.train import learning_rate_at

    def keep(epoch, state):
        if epoch % every and epoch != cfg.epochs:
            return
        lr = learning_rate_at(cfg, cfg.epochs * per_epoch, epoch * per_epoch - 1)
        kept.append(save_epoch_checkpoint(directory, epoch, lr, {"params": state.params,
                                                                 "batch_stats": state.batch_stats}))
    return keep


def _run_record(cfg, ds, state, history: list, wall: float) -> dict:
    """run.json's record of a finished training run (without the checkpoint fields)."""
    from repair_jax.train import evaluate

    return {
        "config": dataclasses.asdict(cfg), "dataset": ds.name, "class_names": list(ds.class_names),
        "num_classes": ds.num_classes, "multilabel": ds.multilabel, "input_shape": list(ds.input_shape),
        "split_sizes": {s: len(ds.split(s)) for s in ("train", "val", "pool", "test")},
        "history": history, ("test_map" if ds.multilabel else "test_accuracy"): evaluate(state, ds.test, ds.multilabel),
        "wall_time": wall, "devices": [str(d) for d in jax.devices()], "jax_version": jax.__version__,
    }


def data_digest(dataset) -> str:
    """A short SHA-256 of a data set's training split (inputs and labels): what a run trained on a changed
    data set records, so that :func:`trained_run` reuses it only for the same data."""
    h = hashlib.sha256()
    for a in (dataset.train.x, dataset.train.y):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def trained_run(run_dir: Path, train: TrainConfig | None, progress: bool = False, force: bool = False,
                dataset=None):
    """The run in ``run_dir``, trained there first (with ``train``, on ``dataset`` when given) when it holds no
    run.json or ``force``: the studies' one train-or-reuse step. An existing run trained otherwise than ``train``,
    or on other data than ``dataset``, is refused (one line naming the field)."""
    from repair_jax.io import first_difference, to_jsonable

    run_dir = Path(run_dir)
    if force or not (run_dir / "run.json").is_file():
        if train is None:
            raise UserError(f"no trained run in {run_dir} (no run.json there)")
        train_run(train, run_dir, force=force, progress=progress, dataset=dataset)
    run = load_run(run_dir)
    if train is not None:
        # seeds compared resolved (run.json spells out split/init/order seeds that a config leaves to `seed`)
        field = first_difference(to_jsonable(dataclasses.asdict(run.config.resolved())),
                                 to_jsonable(dataclasses.asdict(train.resolved())))
        if field is not None:
            raise UserError(f"the run in {run_dir} was trained otherwise ({field} differs from the config's train)")
    if dataset is not None and run.info.get("data_digest") != data_digest(dataset):
        raise UserError(f"the run in {run_dir} was trained on other data (data_digest differs)")
    return run


def import_run(model_spec: str, checkpoint: str | Path, out: str | Path, *, dataset: str = "digits",
               model_kwargs: dict | None = None, data_dir: str | None = None, seed: int = 0,
               features: str | None = "auto", force: bool = False) -> dict:
    """Writes the run directory ``out`` for a user's model (``"pkg.module:factory"``) and trained
    weights (``checkpoint``) on ``dataset`` (split by ``seed``): the model is checked by one forward
    pass and its test accuracy recorded. Returns run.json's record."""
    from repair_jax.io import atomic_dir
    from repair_jax.train import TrainConfig, create_train_state
    from repair_jax.user_models import build_user_model, check_classifier, classifier_of, read_weights

    cfg = TrainConfig(dataset=dataset, model=model_spec, model_kwargs=dict(model_kwargs or {}), epochs=0,
                      seed=seed, data_dir=data_dir).resolved()
    cfg.validate()
    ds = cfg.load_dataset()
    model, init = build_user_model(model_spec, cfg.model_kwargs, ds.input_shape, ds.num_classes, seed)
    clf = read_weights(classifier_of(model, init, ds.input_shape, ds.num_classes, features), checkpoint)
    clf = check_classifier(clf, ds.input_shape, ds.num_classes)
    with atomic_dir(out, overwrite=force) as tmp:
        info = _run_record(cfg, ds, create_train_state(clf, optax.identity()), [], 0.0)
        info.update({"imported_from": str(Path(checkpoint).resolve()), "model_kind": clf.kind,
                     "features": clf.apply.features})
        write_run(tmp, info, clf.variables)
    return info
