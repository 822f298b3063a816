"""Pure losses and objectives: the formulas a training step differentiates, with no training loop.

An *objective* is a pure function ``objective(params, state, batch) -> (loss, (batch_stats, metrics))``;
:func:`repair_jax.train.make_train_step` turns any objective into a jitted step. Repair methods
(w-loss, w-dbr, w-bn, ...) and the influence machinery import their losses from here, never from the
training loop.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


class TrainState(train_state.TrainState):
    """optax/flax train state of a :class:`repair_jax.classifier.Classifier`: ``apply_fn`` is the
    classifier's ``apply``, ``params`` its parameters and ``batch_stats`` its non-trainable state
    (BatchNorm statistics; ``{}`` when it has none). Built by :func:`repair_jax.train.create_train_state`."""

    batch_stats: Any = dataclasses.field(default_factory=dict)


Objective = Callable[[Any, TrainState, dict], tuple[jax.Array, tuple[Any, dict]]]


# ----------------------------------------------------------------------------- losses (pure)

def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example cross-entropy, logits (N, K), integer labels (N,) -> (N,)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def sigmoid_binary_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Per-example multi-label BCE summed over classes, logits/targets (N, K) -> (N,)."""
    return jnp.sum(optax.sigmoid_binary_cross_entropy(logits, targets), axis=-1)


def per_example_loss(logits: jax.Array, y: jax.Array, multilabel: bool) -> jax.Array:
    return sigmoid_binary_cross_entropy(logits, y) if multilabel else softmax_cross_entropy(logits, y)


def l2_penalty(params) -> jax.Array:
    """0.5 * ||params||^2 over every parameter."""
    return 0.5 * sum(jnp.sum(jnp.square(p)) for p in jax.tree_util.tree_leaves(params))


def forward(state: TrainState, params, x, train: bool, sample_weight=None):
    """(logits, features, new_batch_stats) of the classifier protocol (:mod:`repair_jax.classifier`);
    in eval mode batch_stats are returned unchanged; ``features`` is None for a model without them."""
    return state.apply_fn(params, state.batch_stats, x, train=train, sample_weight=sample_weight)


def erm_objective(params, state: TrainState, batch: dict, *, multilabel: bool = False,
                  l2: float = 0.0):
    """Mean loss over the batch + l2 * 0.5 ||params||^2 (000 Sec. 3.1, Loss_orig)."""
    logits, _, batch_stats = forward(state, params, batch["x"], train=True)
    loss = jnp.mean(per_example_loss(logits, batch["y"], multilabel)) + l2 * l2_penalty(params)
    return loss, (batch_stats, {"loss": loss})


def group_dro_objective(params, state: TrainState, batch: dict, *, num_groups: int, eta: float = 1.0,
                        l2: float = 0.0):
    """Group DRO (Sagawa et al. 2019, cited in 002 Sec. 5.3): sum_g q_g * mean loss of group g, with
    q = softmax(eta * stop_gradient(group losses)) over the groups present in the batch.

    A stateless per-batch form of Sagawa et al.'s exponentiated-gradient group weights (eta -> inf
    gives the batch's worst-group loss). ``batch["group"]`` (B,) int in [0, num_groups).
    """
    logits, _, batch_stats = forward(state, params, batch["x"], train=True)
    losses = softmax_cross_entropy(logits, batch["y"])
    onehot = jax.nn.one_hot(batch["group"], num_groups, dtype=losses.dtype)
    counts = onehot.sum(0)
    group_loss = (onehot * losses[:, None]).sum(0) / jnp.maximum(counts, 1.0)
    present = counts > 0
    q = jax.nn.softmax(jnp.where(present, eta * jax.lax.stop_gradient(group_loss), -jnp.inf))
    loss = jnp.sum(q * group_loss) + l2 * l2_penalty(params)
    return loss, (batch_stats, {"loss": loss, "worst_group_loss": jnp.max(jnp.where(present, group_loss, 0.0))})
