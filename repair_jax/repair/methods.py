"""Repair methods as values (Zhong et al. 2022, Sec. 3): one constructor per method, one registry.

A :class:`RepairMethod` is a small named tuple of pure pieces that the sweep composes without ever
asking which method it holds:

* ``objective(multilabel, num_classes, l2)`` -> the training objective
  ``(params, state, batch) -> (loss, (batch_stats, metrics))`` for :func:`repair_jax.train.fit`, or
  ``None`` for a method that does not fine-tune (orig, w-os);
* ``batches(train, batch_size, num_batches, num_classes, multilabel)`` -> ``(batch_indices, make_batch)``
  for ``fit`` (``batch_indices`` ``None``: shuffled batches);
* ``transform_outputs(probs, multilabel)`` -> the probabilities the method predicts with (identity but
  for w-os);
* ``deterministic`` - the method has no seed (one run stands for it); ``extra_rhos`` - values tried in
  turn after the grid while none reduces the error by lambda1 (w-os, Sec. 4.4); ``needs_batch_norm``,
  ``needs_features``: what the model must have (a method that cannot work on a model refuses it).

``rho`` is an argument of the constructor, closed over by the pieces. Adding a method is one
constructor plus one entry of :data:`METHODS` (a :class:`MethodEntry`: the constructor and the flags its
methods declare - ``takes_rho``, ``needs_harm``, ``fine_tunes``, ``deterministic``, ... - which the sweep, the
report and the studies read without building a method).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple

import numpy as np

from repair_jax.data import Split, class_subset_batches, shuffled_batches, weighted_batches
from repair_jax.errors import UserError
from repair_jax.objectives import erm_objective
from repair_jax.repair.weighted import (
    W_OS_EXTRA_RHOS, Targets, check_rho, weighted_augmentation_class_weights, weighted_batch_norm_objective,
    weighted_dbr_objective, weighted_loss_objective, weighted_output_smoothing,
)


class RepairMethod(NamedTuple):
    """One repair method with its hyper-parameters bound (see the module docstring for the fields)."""

    name: str
    rho: float | None
    objective: Callable | None
    batches: Callable | None
    transform_outputs: Callable
    deterministic: bool
    extra_rhos: tuple[float, ...] = ()
    needs_batch_norm: bool = False
    needs_features: bool = False  # the model must expose penultimate features (Classifier.has_features)

    @property
    def fine_tunes(self) -> bool:
        return self.objective is not None

    @property
    def label(self) -> str:
        return self.name if self.rho is None else f"{self.name}({self.rho:g})"


def _identity_outputs(probs, multilabel: bool = False):
    return probs


def _shuffled(train: Split, batch_size: int, num_batches: int, num_classes: int, multilabel: bool):
    """Plain shuffled batches of the training split (the default order of :func:`repair_jax.train.fit`)."""
    return None, train.batch


def _erm(multilabel: bool, num_classes: int, l2: float):
    return functools.partial(erm_objective, multilabel=multilabel, l2=l2)


def orig() -> RepairMethod:
    """The trained model, unchanged (Zhong et al. 2022, Sec. 3.1)."""
    return RepairMethod("orig", None, None, None, _identity_outputs, deterministic=True)


def orig_ft() -> RepairMethod:
    """Fine-tuned with Loss_orig on the schedule every WR method uses (Zhong et al. 2022, Sec. 3.1)."""
    return RepairMethod("orig-ft", None, _erm, _shuffled, _identity_outputs, deterministic=False)


def w_aug(targets: Targets, rho: float) -> RepairMethod:
    """w-aug (Zhong et al. 2022, Sec. 3.2): Loss_orig on batches where non-target classes have sampling weight rho."""
    rho = check_rho(rho)

    def batches(train: Split, batch_size: int, num_batches: int, num_classes: int, multilabel: bool):
        cw = weighted_augmentation_class_weights(targets, num_classes, rho)
        return (lambda rng: weighted_batches(train.y, cw, batch_size, num_batches, rng)), train.batch

    return RepairMethod("w-aug", rho, _erm, batches, _identity_outputs, deterministic=False)


def w_bn(targets: Targets, rho: float) -> RepairMethod:
    """w-bn (Zhong et al. 2022, Sec. 3.3): BatchNorm statistics weighted between the batch and a target-class batch."""
    rho = check_rho(rho)

    def objective(multilabel: bool, num_classes: int, l2: float):
        return functools.partial(weighted_batch_norm_objective, rho=rho, multilabel=multilabel, l2=l2)

    def batches(train: Split, batch_size: int, num_batches: int, num_classes: int, multilabel: bool):
        y = np.asarray(train.y)
        in_targets = (np.isin(y, targets.classes) if not multilabel
                      else y[:, list(targets.classes)].sum(1) > 0)
        if not np.any(in_targets):
            raise UserError("w-bn needs training examples of the target classes; the training split has none")
        indices = lambda rng: zip(shuffled_batches(len(train), batch_size, rng),
                                  class_subset_batches(train.y, targets.classes, num_classes, batch_size,
                                                       num_batches, rng))
        return indices, lambda pair: {**train.batch(pair[0]), "x_target": train.x[pair[1]]}

    return RepairMethod("w-bn", rho, objective, batches, _identity_outputs, deterministic=False,
                        needs_batch_norm=True)


def w_os(targets: Targets, rho: float) -> RepairMethod:
    """w-os (Zhong et al. 2022, Sec. 3.4): the target classes' output probabilities scaled by rho; no training."""
    rho = check_rho(rho)
    transform = lambda probs, multilabel=False: np.asarray(
        weighted_output_smoothing(probs, targets, rho, multilabel))
    return RepairMethod("w-os", rho, None, None, transform, deterministic=True, extra_rhos=W_OS_EXTRA_RHOS)


def w_loss(targets: Targets, rho: float) -> RepairMethod:
    """w-loss (Zhong et al. 2022, Sec. 3.5): rho Loss_orig + (1 - rho) the loss over the confused subsets."""
    rho = check_rho(rho)

    def objective(multilabel: bool, num_classes: int, l2: float):
        return functools.partial(weighted_loss_objective, targets=targets, rho=rho, multilabel=multilabel, l2=l2)

    return RepairMethod("w-loss", rho, objective, _shuffled, _identity_outputs, deterministic=False)


def w_dbr(targets: Targets, rho: float) -> RepairMethod:
    """w-dbr (Zhong et al. 2022, Sec. 3.6): rho Loss_orig + (1 - rho) the distance-based regulariser."""
    rho = check_rho(rho)

    def objective(multilabel: bool, num_classes: int, l2: float):
        return functools.partial(weighted_dbr_objective, targets=targets, rho=rho, num_classes=num_classes,
                                 multilabel=multilabel, l2=l2)

    return RepairMethod("w-dbr", rho, objective, _shuffled, _identity_outputs, deterministic=False,
                        needs_features=True)


def i_drop(targets: Targets, rho: float, harm: np.ndarray | None = None) -> RepairMethod:
    """i-drop (issue 17 Part 4, a data-centric repair; :mod:`repair_jax.repair.data_centric`): Loss_orig
    fine-tuning on shuffled batches of the training split without the rho fraction of its points whose
    influence on the targets' soft error (``harm``, (N,) ``I_up`` scores) is largest and positive. The sweep
    computes ``harm`` once for the trained model (:func:`repair_jax.repair.data_centric.target_influence`)."""
    from repair_jax.repair.data_centric import dropped_examples

    rho = check_rho(rho)

    def batches(train: Split, batch_size: int, num_batches: int, num_classes: int, multilabel: bool):
        if harm is None:
            raise UserError("i-drop needs the training points' influence on the targets (run it through the sweep)")
        if len(harm) != len(train):
            raise UserError(f"i-drop has {len(harm)} influence scores for {len(train)} training points")
        keep = np.setdiff1d(np.arange(len(train)), dropped_examples(harm, rho))
        bs = min(batch_size, len(keep))
        return (lambda rng: (keep[b] for b in shuffled_batches(len(keep), bs, rng))), None

    return RepairMethod("i-drop", rho, _erm, batches, _identity_outputs, deterministic=False)


@dataclasses.dataclass(frozen=True)
class MethodEntry:
    """A registry entry: the constructor ``build`` and what its methods declare before any is built (the
    sweep, the report and the studies read these; a test checks that every built value agrees).
    ``takes_rho``: built as ``build(targets, rho)`` (the rho grid tunes it), else ``build()``;
    ``needs_harm``: also ``harm=`` (the training points' influence on the targets, from the sweep). The
    other fields are those of :class:`RepairMethod`. Called, it is its constructor."""

    build: Callable[..., RepairMethod]
    takes_rho: bool
    fine_tunes: bool
    deterministic: bool
    needs_harm: bool = False
    extra_rhos: tuple[float, ...] = ()
    needs_batch_norm: bool = False
    needs_features: bool = False

    def __call__(self, *args, **kwargs) -> RepairMethod:
        return self.build(*args, **kwargs)


METHODS: dict[str, MethodEntry] = {
    "orig": MethodEntry(orig, takes_rho=False, fine_tunes=False, deterministic=True),
    "orig-ft": MethodEntry(orig_ft, takes_rho=False, fine_tunes=True, deterministic=False),
    "w-aug": MethodEntry(w_aug, takes_rho=True, fine_tunes=True, deterministic=False),
    "w-bn": MethodEntry(w_bn, takes_rho=True, fine_tunes=True, deterministic=False, needs_batch_norm=True),
    "w-os": MethodEntry(w_os, takes_rho=True, fine_tunes=False, deterministic=True, extra_rhos=W_OS_EXTRA_RHOS),
    "w-loss": MethodEntry(w_loss, takes_rho=True, fine_tunes=True, deterministic=False),
    "w-dbr": MethodEntry(w_dbr, takes_rho=True, fine_tunes=True, deterministic=False, needs_features=True),
    "i-drop": MethodEntry(i_drop, takes_rho=True, fine_tunes=True, deterministic=False, needs_harm=True),
}
#: Zhong et al.'s (2022) methods (Sec. 3), the default of every study; i-drop is opt-in.
WR_METHODS = ("orig", "orig-ft", "w-aug", "w-bn", "w-os", "w-loss", "w-dbr")
BASELINES = ("orig", "orig-ft")  # the study's reference points (Zhong et al. 2022, Sec. 4.3-4.4): no rho


def lookup(name: str) -> MethodEntry:
    """The entry registered as ``name``; an unknown name is a :class:`UserError`."""
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


def takes_rho(name: str) -> bool:
    """Whether method ``name`` declares a ``rho`` (the methods the rho grid tunes)."""
    return lookup(name).takes_rho


def needs_harm(name: str) -> bool:
    """Whether method ``name`` declares that it ranks training points by their influence on the targets."""
    return lookup(name).needs_harm


def make_method(name: str, targets: Targets | None = None, rho: float | None = None,
                harm: np.ndarray | None = None) -> RepairMethod:
    """Method ``name`` built from the arguments its entry declares: ``(targets, rho)`` when it takes a rho,
    ``harm=`` when it needs one; a rho given to a method without one (or missing) is a :class:`UserError`."""
    entry = lookup(name)
    if entry.takes_rho != (rho is not None):
        raise UserError(f"method {name} {'needs' if entry.takes_rho else 'takes no'} rho")
    args = (targets, rho) if entry.takes_rho else ()
    return entry.build(*args, **({"harm": harm} if entry.needs_harm else {}))
