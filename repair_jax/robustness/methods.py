"""Robust-training methods as values (Pradhan et al. 2020, Sec. 3): each is a :class:`RobustMethod` built from the
objectives and steps of :mod:`repair_jax.robustness.augment`, :mod:`repair_jax.robustness.augmix` and
:mod:`repair_jax.robustness.adversarial`; :data:`METHODS` names them.

A method's ``make_step(config, seed)`` reads the options it needs from ``config`` by name (``max_rotation``;
``eps_linf`` for SAT/UAT; ``eps_noise_l2`` for ANT) and ``train`` reads ``config.train``, a
:class:`~repair_jax.train.TrainConfig` (its epochs and batch size; ``seed`` replaces its seed, which orders the
batches): any object with those fields (the robustness study's config is one).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

from repair_jax.data import Dataset
from repair_jax.objectives import erm_objective
from repair_jax.robustness.adversarial import (
    adversarial_noise_step, init_noise_training, init_universal_state, shared_adversarial_objective,
    universal_adversarial_step,
)
from repair_jax.robustness.augment import augmented_objective, augmented_step, standard_augment
from repair_jax.robustness.augmix import augmix_objective
from repair_jax.train import TrainConfig, fit, train_step_fn


class RobustMethod(NamedTuple):
    """A robustness method as a value: ``init(state, dataset, seed) -> state`` (the training state it
    needs, e.g. with the adversary's parameters) and ``make_step(config, seed) ->
    step(state, batch) -> (state, metrics)`` (one unjitted training step). :meth:`train` runs them
    through :func:`repair_jax.train.fit`; the benchmarks time one step of the same ``make_step``."""

    init: Callable
    make_step: Callable

    def train(self, state, dataset: Dataset, config: object, seed: int):
        """``(state, history)``: the history of :func:`repair_jax.train.fit` (per-epoch loss, timings)."""
        return fit(self.init(state, dataset, seed), dataset, _train_config(config, seed),
                   step=self.make_step(config, seed), progress=False)


def _train_config(config, seed: int) -> TrainConfig:
    return dataclasses.replace(config.train, seed=seed)


def _with_objective(make_objective):
    """A method that only changes the objective: standard augmentation, then ``make_objective``."""
    def make_step(config, seed):
        aug = standard_augment(config.max_rotation)
        return train_step_fn(augmented_objective(make_objective(config, seed), aug, seed))
    return RobustMethod(lambda state, dataset, seed: state, make_step)


def _with_state(init, make_step):
    """A method whose training step carries more than the model (``init`` adds it to the state):
    standard augmentation, then ``make_step``'s step."""
    def augmented(config, seed):
        return augmented_step(make_step(config, seed), standard_augment(config.max_rotation), seed)
    return RobustMethod(init, augmented)


METHODS: dict[str, RobustMethod] = {
    "plain": _with_objective(lambda c, s: erm_objective),
    "augmix": _with_objective(lambda c, s: augmix_objective(seed=s)),
    "sat": _with_objective(lambda c, s: shared_adversarial_objective(c.eps_linf, heap_size=8, norm="linf")),
    "uat": _with_state(lambda st, ds, s: init_universal_state(st, ds.input_shape),
                       lambda c, s: universal_adversarial_step(c.eps_linf, "linf")),
    "ant": _with_state(lambda st, ds, s: init_noise_training(st, ds.input_shape[-1], seed=s),
                       lambda c, s: adversarial_noise_step(c.eps_noise_l2, seed=s)),
}
