"""Checkpoints and run directories.

A run directory holds ``run.json`` (config, class names, history, final test metric, checkpoint
checksum) and ``checkpoint.msgpack`` (flax serialization of ``{"params", "batch_stats"}``). A run
trained with ``checkpoint_every=k`` also keeps ``checkpoints/epoch_NNNN.msgpack`` every k epochs,
listed in run.json under ``epoch_checkpoints`` with their step size (for TracInCP).
Directories and files are written atomically (:mod:`repair_jax.io`); a missing, truncated or
altered checkpoint is a :class:`UserError`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import optax

from repair_jax.errors import UserError
from repair_jax.io import read_json, write_bytes_atomic, write_json

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

    def state(self, tx: optax.GradientTransformation | None = None):
        """A TrainState of the stored weights (``tx`` defaults to a no-op optimizer)."""
        from repair_jax.train import create_train_state
        return create_train_state(self.model, self.variables, tx or optax.identity())

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


def load_run(path: str | Path) -> Run:
    from repair_jax.models import create_model, init_variables

    path = Path(path)
    if not path.is_dir():
        raise UserError(f"run directory not found: {path}")
    info = read_json(path / RUN_JSON, "run.json")
    for key in ("config", "class_names", "input_shape"):
        if key not in info:
            raise UserError(f"run.json in {path} lacks the key {key!r}; is this a repair-jax run?")
    cfg = info["config"]
    try:
        model = create_model(cfg["model"], len(info["class_names"]), **cfg.get("model_kwargs", {}))
    except KeyError as e:
        raise UserError(f"run.json config in {path} lacks {e}") from None
    template = init_variables(model, jax.random.PRNGKey(0), info["input_shape"])
    variables = restore_checkpoint(path / info.get("checkpoint", CHECKPOINT), template,
                                   info.get("checkpoint_sha256"))
    return Run(path, info, model, variables)
