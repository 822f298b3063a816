"""Jitted train/eval steps and data-parallel training over local devices (losses: :mod:`repair_jax.objectives`).

An *objective* is a pure function ``objective(params, state, batch) -> (loss, (batch_stats, metrics))``.
:func:`make_train_step` turns any objective into a jitted ``train_step(state, batch) -> (state,
metrics)``; repair methods (w-loss, w-dbr, w-bn, ...) are other objectives, not other trainers.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from repair_jax.data import Dataset, Split, map_batched, shuffled_batches  # noqa: F401 (map_batched: the training API)
from repair_jax.errors import UserError, check_seed
from repair_jax.objectives import (  # noqa: F401  (re-exported: the training API)
    Objective, TrainState, erm_objective, forward, group_dro_objective, l2_penalty, per_example_loss,
    sigmoid_binary_cross_entropy, softmax_cross_entropy,
)
from repair_jax.progress import progress as progress_bar


def train_step_fn(objective: Objective) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """Unjitted ``train_step(state, batch) -> (state, metrics)``: one gradient step of ``objective``
    (the form :func:`fit`'s ``step`` takes; :func:`make_train_step` jits it)."""
    def train_step(state: TrainState, batch: dict):
        grad_fn = jax.value_and_grad(objective, has_aux=True)
        (loss, (batch_stats, metrics)), grads = grad_fn(state.params, state, batch)
        state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
        return state, metrics

    return train_step


def make_train_step(objective: Objective) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """Jitted ``train_step(state, batch) -> (state, metrics)`` for any objective."""
    return jax.jit(train_step_fn(objective))


def make_gather_step(step: Callable[[TrainState, dict], tuple[TrainState, dict]]):
    """Jitted ``gather_step(state, data, idx) -> (state, metrics)``: ``step(state, batch)`` on the
    batch gathered on the device from ``data`` (the training arrays, placed there once) at ``idx``.
    One dispatch per step and no host copy of the batch."""
    return jax.jit(lambda state, data, idx: step(state, jax.tree_util.tree_map(lambda a: a[idx], data)))


@functools.partial(jax.jit, static_argnames=("apply_fn",))
def _eval_logits(apply_fn, params, batch_stats, x):
    # keyed by the model's apply (hashable by the model), never by the whole TrainState: its optimizer
    # ``tx`` is static too, and a fresh one (``optax.identity()`` makes new closures per call) would
    # compile this again for every state (I-REPAIR sweeps: 3 programs and ~4 MB per job)
    logits, feats, _ = apply_fn(params, batch_stats, x, train=False, sample_weight=None)
    return logits, feats


def predict(state: TrainState, x: np.ndarray, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Logits and penultimate features for all of ``x``, in fixed-size (padded) jitted chunks; compiled
    once per model and chunk shape, whatever the state's optimizer."""
    logits, feats = map_batched(
        lambda chunk: _eval_logits(state.apply_fn, state.params, state.batch_stats, jnp.asarray(chunk)), x, batch_size)
    return logits, feats


def predict_labels(state: TrainState, x: np.ndarray, multilabel: bool = False) -> np.ndarray:
    """Class indices (N,) or multi-hot predictions at probability 0.5 (N, K)."""
    logits, _ = predict(state, x)
    return (logits > 0).astype(np.int32) if multilabel else logits.argmax(-1).astype(np.int32)


def evaluate(state: TrainState, split: Split, multilabel: bool = False) -> float:
    """Accuracy (single-label) or mean average precision over classes (multi-label)."""
    logits, _ = predict(state, split.x)
    if multilabel:
        from repair_jax.metrics import mean_average_precision
        return float(mean_average_precision(jnp.asarray(split.y), jnp.asarray(logits)))
    return float(np.mean(logits.argmax(-1) == split.y))


# ----------------------------------------------------------------------------- configuration

@dataclasses.dataclass
class TrainConfig:
    """Everything that determines a training run (stored in run.json)."""

    dataset: str = "digits"
    model: str = "mlp"
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    epochs: int = 20
    batch_size: int = 64
    optimizer: str = "adam"  # adam | sgd
    lr: float = 1e-3
    momentum: float = 0.9
    schedule: str = "cosine"  # cosine | constant | step (x0.1 at 50% and 75%, Zhong et al. 2022, Sec. 4.1)
    l2: float = 0.0
    seed: int = 0
    data_dir: str | None = None
    train_limit: int | None = None
    # Each source of randomness has its own seed; None means ``seed`` (so one seed still drives all three).
    split_seed: int | None = None  # the 4-way data split and the train-limit subset
    init_seed: int | None = None  # the initial weights
    order_seed: int | None = None  # the order of the batches

    def seed_for(self, which: str) -> int:
        """The seed of ``which`` in ("split", "init", "order"): its own field, else ``seed``."""
        own = getattr(self, f"{which}_seed")
        return self.seed if own is None else own

    def resolved(self) -> "TrainConfig":
        """This config with the three seeds spelled out (what run.json records)."""
        return dataclasses.replace(self, **{f"{w}_seed": self.seed_for(w) for w in ("split", "init", "order")})

    def load_dataset(self) -> Dataset:
        """The data set and split of this run (same name, split seed, data dir and train limit); a name
        ``BASE:LEVEL`` (e.g. ``fashion_mnist:longtail(100)``) is BASE at that imbalance level."""
        from repair_jax.data import load_dataset
        from repair_jax.imbalance import split_imbalance_name

        base, level = split_imbalance_name(self.dataset)
        return load_dataset(base, seed=self.seed_for("split"), data_dir=self.data_dir,
                            train_limit=self.train_limit, imbalance=level)

    def require_defaults(self, names: tuple[str, ...], reason: str) -> None:
        """Refuses a recipe that sets one of ``names`` (fields its user does not read) away from TrainConfig's
        default, with ``reason`` (what the user reads instead) in the message: it is never quietly ignored."""
        default = TrainConfig()
        for name in names:
            if getattr(self, name) != getattr(default, name):
                raise UserError(f"train.{name} is not used: {reason}; leave it at its default "
                                f"({getattr(default, name)!r}), got {getattr(self, name)!r}")

    def validate(self) -> None:
        for name in ("seed", "split_seed", "init_seed", "order_seed"):
            if getattr(self, name) is not None:
                check_seed(name, getattr(self, name))
        if self.train_limit is not None and self.train_limit <= 0:
            raise UserError(f"train limit must be positive, got {self.train_limit}")
        if self.epochs < 0:
            raise UserError(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size <= 0:
            raise UserError(f"batch size must be positive, got {self.batch_size}")
        if not self.lr > 0:
            raise UserError(f"learning rate must be positive, got {self.lr}")
        if self.optimizer not in ("adam", "sgd", "rmsprop"):
            raise UserError(f"unknown optimizer {self.optimizer!r}; choose adam, sgd or rmsprop")
        if self.schedule not in ("cosine", "constant", "step"):
            raise UserError(f"unknown schedule {self.schedule!r}; choose cosine, constant or step")


def learning_rate_schedule(config: TrainConfig, total_steps: int):
    """The step size of ``config`` as an optax schedule over ``total_steps`` (a float when constant)."""
    total_steps = max(total_steps, 1)
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(config.lr, total_steps)
    if config.schedule == "step":
        return optax.piecewise_constant_schedule(
            config.lr, {int(total_steps * 0.5): 0.1, int(total_steps * 0.75): 0.1})
    return config.lr


def learning_rate_at(config: TrainConfig, total_steps: int, step: int) -> float:
    """The step size the optimizer of ``config`` uses at ``step`` (0-based) of ``total_steps``."""
    lr = learning_rate_schedule(config, total_steps)
    return float(lr(step) if callable(lr) else lr)


def optimizer(name: str, learning_rate, momentum: float | None = None) -> optax.GradientTransformation:
    """The one optimizer factory: ``sgd`` (Nesterov momentum when ``momentum`` is given, else plain),
    ``rmsprop`` or ``adam``, with a step size or an optax schedule."""
    if name == "sgd":
        return optax.sgd(learning_rate, momentum=momentum, nesterov=momentum is not None)
    if name == "rmsprop":
        return optax.rmsprop(learning_rate)
    return optax.adam(learning_rate)


def make_optimizer(config: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    return optimizer(config.optimizer, learning_rate_schedule(config, total_steps), config.momentum)


def create_train_state(model, variables_or_tx, tx: optax.GradientTransformation | None = None) -> TrainState:
    """The train state of a model under an optimizer: ``create_train_state(classifier, tx)`` for a
    :class:`~repair_jax.classifier.Classifier` (or anything :func:`~repair_jax.classifier.as_classifier`
    takes), ``create_train_state(module, variables, tx)`` for a linen module and its variables."""
    from repair_jax.classifier import as_classifier

    if tx is None:
        clf, tx = as_classifier(model), variables_or_tx
    else:
        clf = as_classifier(model, variables_or_tx)
    return TrainState.create(apply_fn=clf.apply, params=clf.params, tx=tx, batch_stats=clf.state)


# ----------------------------------------------------------------------------- data parallelism

def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh with axis ``data`` over all devices (all hosts' after ``jax.distributed.initialize``)."""
    devices = np.asarray(devices if devices is not None else jax.devices())
    return Mesh(devices, ("data",))


def replicate(tree, mesh: Mesh):
    return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_batch(batch: dict, mesh: Mesh) -> dict:
    """Places a host batch on the mesh, split along the leading (example) axis."""
    n_dev = mesh.devices.size
    n = next(iter(batch.values())).shape[0] * jax.process_count()
    if n % n_dev:
        raise UserError(f"batch size {n} is not divisible by the {n_dev} devices of the mesh")
    sharding = NamedSharding(mesh, P("data"))
    if jax.process_count() > 1:  # each host holds its slice of the global batch
        return jax.tree_util.tree_map(
            lambda a: jax.make_array_from_process_local_data(sharding, a), batch)
    return jax.device_put(batch, sharding)


# ----------------------------------------------------------------------------- the loop

def fit(state: TrainState, dataset: Dataset, config: TrainConfig, objective: Objective | None = None,
        mesh: Mesh | None = None, progress: bool = True, epochs: int | None = None,
        batch_indices: Callable[[np.random.Generator], Any] | None = None,
        make_batch: Callable[[np.ndarray], dict] | None = None,
        on_epoch_end: Callable[[int, TrainState], None] | None = None,
        step: Callable[[TrainState, dict], tuple[TrainState, dict]] | None = None) -> tuple[TrainState, list[dict]]:
    """Trains ``state`` for ``epochs`` (default ``config.epochs``) and returns (state, history).

    ``objective`` defaults to :func:`erm_objective`. ``step(state, batch) -> (state, metrics)``
    replaces the objective's gradient step where the state carries more than the model (e.g. the
    adversaries of :mod:`repair_jax.robustness.adversarial`); ``metrics["loss"]`` is the loss tracked. ``batch_indices(rng)`` yields the index batches
    of one epoch (default: shuffled, last partial batch dropped); ``make_batch(idx)`` builds the batch
    dict (default: ``dataset.train.batch(idx)``). Without a mesh and a custom ``make_batch``, the
    training set is placed on the device once and each step gathers its batch there
    (:func:`make_gather_step`), so the host only draws indices. With a ``mesh`` each batch is sharded over its
    ``data`` axis and the state is replicated (data-parallel training; the result equals
    single-device training up to floating-point reduction order).
    History rows: epoch, train_loss, val_metric, epoch_time, input_time (host batch preparation).
    ``on_epoch_end(epoch, state)`` (epoch counted from 1) runs after each epoch, e.g. to save a checkpoint.
    A non-finite or exploding mean epoch loss stops training (:func:`check_loss`). ``progress``: a bar
    on a terminal, one line per finished epoch otherwise (:mod:`repair_jax.progress`). The batch order
    is drawn from ``config.seed_for("order")``.
    """
    config.validate()
    epochs = config.epochs if epochs is None else epochs
    if objective is not None and step is not None:
        raise ValueError("give an objective or a step, not both")
    if objective is None:
        objective = functools.partial(erm_objective, multilabel=dataset.multilabel, l2=config.l2)
    step = step or train_step_fn(objective)
    if batch_indices is None:
        bs = min(config.batch_size, len(dataset.train))
        batch_indices = lambda rng: shuffled_batches(len(dataset.train), bs, rng)
    if mesh is not None:
        state = replicate(state, mesh)
    prepare, apply = _step_functions(step, dataset, mesh, make_batch)
    rng = np.random.default_rng(config.seed_for("order"))
    history, first_loss = [], None
    with progress_bar(epochs, f"train {config.model}", enabled=progress, leave=False) as bar:
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            state, losses, input_time = _run_epoch(state, prepare, apply, batch_indices(rng))
            if losses and first_loss is None:
                first_loss = float(losses[0][0])
            train_loss = float(jnp.mean(jnp.concatenate(losses))) if losses else float("nan")
            if losses:
                check_loss(train_loss, first_loss, epoch)
            val = evaluate(state, dataset.val, dataset.multilabel) if len(dataset.val) else float("nan")
            history.append({"epoch": epoch, "train_loss": train_loss, "val_metric": val,
                            "epoch_time": time.perf_counter() - t0, "input_time": input_time})
            bar.update(note=f"loss {train_loss:.4f} val {val:.4f}")
            if on_epoch_end is not None:
                on_epoch_end(epoch, state)
    return state, history


def _step_functions(step, dataset: Dataset, mesh: Mesh | None, make_batch):
    """``(prepare(idx), apply(state, prepared) -> (state, metrics))`` of :func:`fit`: without a mesh and a
    custom ``make_batch`` the training set is placed on the device once and ``apply`` gathers there."""
    if make_batch is None and mesh is None:
        on_device = jax.device_put(dataset.train.batch())
        gather_step = make_gather_step(step)
        return (lambda idx: jax.device_put(np.asarray(idx))), (lambda s, i: gather_step(s, on_device, i))
    make_batch = make_batch or dataset.train.batch
    return (lambda idx: _host_batch(make_batch, idx, mesh)), jax.jit(step)


# A training loss this many times its first step's value (or 1, whichever is larger) has exploded.
EXPLODING_FACTOR = 1e3


def check_loss(loss: float, first_loss: float, epoch: int) -> None:
    """Stops training whose mean epoch loss is non-finite or has exploded (> EXPLODING_FACTOR x
    max(|first step's loss|, 1)) with one clear :class:`UserError`."""
    if not np.isfinite(loss) or loss > EXPLODING_FACTOR * max(abs(first_loss), 1.0):
        raise UserError(f"training diverged at epoch {epoch} (mean loss {loss:.4g}, first step "
                        f"{first_loss:.4g}); lower the learning rate")


def _host_batch(make_batch, idx, mesh: Mesh | None) -> dict:
    """The batch of ``idx`` built on the host, sharded over ``mesh`` if given (each host its slice)."""
    if mesh is not None and jax.process_count() > 1:  # every host draws the same indices
        idx = idx[jax.process_index()::jax.process_count()]
    batch = make_batch(idx)
    return shard_batch(batch, mesh) if mesh is not None else batch


def _run_epoch(state: TrainState, prepare, apply, batches) -> tuple[TrainState, list, float]:
    """One epoch: ``apply(state, prepare(idx)) -> (state, metrics)`` for each ``idx`` of ``batches``;
    returns the state, the per-step losses (device arrays of shape (1,)) and the input time (drawing the
    indices and ``prepare``)."""
    losses, input_time, batches = [], 0.0, iter(batches)
    while True:
        t_in = time.perf_counter()  # input time includes drawing the indices
        idx = next(batches, None)
        if idx is None:
            return state, losses, input_time + time.perf_counter() - t_in
        prepared = prepare(idx)
        input_time += time.perf_counter() - t_in
        state, metrics = apply(state, prepared)
        losses.append(jnp.reshape(metrics["loss"], (1,)))


def steps_per_epoch(config: TrainConfig, n_train: int) -> int:
    return max(1, n_train // min(config.batch_size, n_train))


def train_model(config: TrainConfig, dataset: Dataset | None = None, progress: bool = True,
                mesh: Mesh | None = None, on_epoch_end: Callable[[int, TrainState], None] | None = None):
    """Builds the model of ``config``, trains it on ``dataset`` (loaded from the config if None).

    Returns (model, state, history, dataset). ``on_epoch_end``: see :func:`fit`.
    """
    from repair_jax.models import create_model, init_variables

    config.validate()
    if dataset is None:
        dataset = config.load_dataset()
    from repair_jax.classifier import from_linen

    model = create_model(config.model, dataset.num_classes, **config.model_kwargs)
    variables = init_variables(model, jax.random.PRNGKey(config.seed_for("init")), dataset.input_shape)
    clf = from_linen(model, variables, input_shape=dataset.input_shape, num_classes=dataset.num_classes)
    steps = config.epochs * steps_per_epoch(config, len(dataset.train))
    state = create_train_state(clf, make_optimizer(config, steps))
    state, history = fit(state, dataset, config, mesh=mesh, progress=progress, on_epoch_end=on_epoch_end)
    return model, state, history, dataset
