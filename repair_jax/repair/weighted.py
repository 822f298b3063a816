"""Weighted Regularization (WR): the five repair methods and the two baselines of
Zhong et al. 2022, Sec. 3, as pure functions composed with :func:`repair_jax.train.make_train_step`.

Targets are a :class:`Targets`: one or more pairs (confusion, Sec. 3.x.1) or one or more triplets
``(A, B, C)`` (bias, Sec. 3.x.2; A positive, B negative, C anchor, Sec. 2.2.2). Several pairs /
triplets are the multi-pair extensions of Sec. 3.x.4. ``rho`` in [0, 1] is the method's weight.

* ``orig``    - the trained model, unchanged (Sec. 3.1).
* ``orig-ft`` - fine-tuned with Loss_orig, same schedule as the others (Sec. 3.1): :func:`erm_objective`.
* ``w-aug``   - fine-tune on D' where non-target classes have sampling weight rho (Sec. 3.2):
  :func:`weighted_augmentation_class_weights` + :func:`repair_jax.data.weighted_batches`.
* ``w-bn``    - weighted batch normalisation (Sec. 3.3, Fig. 6): :func:`weighted_batch_norm_objective`.
* ``w-os``    - weighted output smoothing, no training (Sec. 3.4): :func:`weighted_output_smoothing`.
* ``w-loss``  - weighted loss over the confused subset (Sec. 3.5): :func:`weighted_loss_objective`.
* ``w-dbr``   - weighted distance-based regularisation (Sec. 3.6): :func:`weighted_dbr_objective`.

These are the formulas; :mod:`repair_jax.repair.methods` composes them into methods as values.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from repair_jax.errors import UserError
from repair_jax.objectives import forward, l2_penalty, per_example_loss

RHO_GRID = (0.1, 0.3, 0.5, 0.7, 0.9)
W_OS_EXTRA_RHOS = (0.01, 0.001, 0.0001)


@dataclasses.dataclass(frozen=True)
class Targets:
    """Target pairs ``((A, B), ...)`` or target triplets ``((A, B, C), ...)`` (Zhong et al. 2022, Sec. 2.2)."""

    groups: tuple[tuple[int, ...], ...]

    def __post_init__(self):
        if not self.groups:
            raise UserError("no target pair or triplet given")
        sizes = {len(g) for g in self.groups}
        if sizes not in ({2}, {3}):
            raise UserError("targets must be all pairs (A,B) or all triplets (A,B,C)")
        for g in self.groups:
            if len(set(g)) != len(g):
                raise UserError(f"the classes of a target group must differ, got {list(g)}")

    @property
    def kind(self) -> str:
        """``confusion`` for pairs, ``bias`` for triplets."""
        return "confusion" if len(self.groups[0]) == 2 else "bias"

    @property
    def classes(self) -> tuple[int, ...]:
        """Y_target: every class involved in a pair/triplet (Sec. 3.2.4, 3.3.4, 3.4.4), sorted."""
        return tuple(sorted({c for g in self.groups for c in g}))

    def validate(self, num_classes: int) -> None:
        for g in self.groups:
            for c in g:
                if not 0 <= c < num_classes:
                    raise UserError(f"target class {c} is out of range for {num_classes} classes")

    def label(self, names: Sequence[str] | None = None) -> str:
        n = (lambda c: names[c]) if names is not None else str
        return "; ".join(",".join(n(c) for c in g) for g in self.groups)

    def to_json(self) -> dict:
        return {"kind": self.kind, "groups": [list(g) for g in self.groups]}


def check_rho(rho: float) -> float:
    rho = float(rho)
    if not 0.0 <= rho <= 1.0:
        raise UserError(f"rho must lie in [0, 1], got {rho}")
    return rho


def _mask(classes: Sequence[int], num_classes: int) -> jnp.ndarray:
    return jnp.zeros((num_classes,), jnp.float32).at[jnp.asarray(list(classes))].set(1.0)


# ----------------------------------------------------------------------------- w-aug (Sec. 3.2)

def weighted_augmentation_class_weights(targets: Targets, num_classes: int, rho: float) -> np.ndarray:
    """pdf'(x, y) = pdf(x, y) if y in Y_target else rho * pdf(x, y) (Zhong et al. 2022, Sec. 3.2), as class weights (K,).

    Batches are then drawn with :func:`repair_jax.data.weighted_batches` (multi-label: an example
    weighs as its heaviest class, so any example containing a target class has weight 1).
    """
    rho = check_rho(rho)
    w = np.full((num_classes,), rho, np.float64)
    w[list(targets.classes)] = 1.0
    return w


# ----------------------------------------------------------------------------- w-bn (Sec. 3.3)

def weighted_batch_norm_weights(n_regular: int, n_target: int, rho) -> jnp.ndarray:
    """Per-example BatchNorm weights for ``concat([x, x_target])`` (Zhong et al. 2022, Sec. 3.3, Fig. 6b), shape (n+m,).

    Regular examples weigh ``rho / n``, target-class examples ``(1 - rho) / m``: the batch mean is
    ``E_w = rho * E[x] + (1 - rho) * E[x_target]`` and the variance the same mixture of squared
    deviations about E_w. rho = 1 is plain BatchNorm on the regular batch, rho = 0 the statistics of
    the target batch alone; smaller rho puts more weight on the target classes.
    """
    return jnp.concatenate([jnp.full((n_regular,), rho / n_regular, jnp.float32),
                            jnp.full((n_target,), (1.0 - rho) / n_target, jnp.float32)])


def weighted_batch_norm_objective(params, state, batch: dict, *, rho, multilabel: bool = False,
                                  l2: float = 0.0):
    """w-bn loss (Zhong et al. 2022, Sec. 3.3): one forward pass over ``concat([x, x_target])`` in train mode where
    every BatchNorm layer uses the rho-weighted batch statistics of
    :func:`weighted_batch_norm_weights`; only the regular batch's loss is back-propagated.

    ``batch``: ``x`` (n, ...), ``y`` and ``x_target`` (m, ...) drawn from the target classes only;
    ``rho`` a scalar. The BatchNorm running averages are updated with the same weighted statistics
    (``ra <- momentum * ra + (1 - momentum) * weighted_stat``, see :class:`repair_jax.models.BatchNorm`),
    so the repaired model keeps the shifted normalisation at inference.
    """
    x, xt = batch["x"], batch["x_target"]
    n = x.shape[0]
    w = weighted_batch_norm_weights(n, xt.shape[0], jnp.float32(rho))
    logits, _, batch_stats = forward(state, params, jnp.concatenate([x, xt]), train=True, sample_weight=w)
    loss = jnp.mean(per_example_loss(logits[:n], batch["y"], multilabel)) + l2 * l2_penalty(params)
    return loss, (batch_stats, {"loss": loss})


# ----------------------------------------------------------------------------- w-os (Sec. 3.4)

def weighted_output_smoothing(probs, targets: Targets, rho, multilabel: bool = False):
    """w-os (Zhong et al. 2022, Sec. 3.4): multiplies the target classes' output probabilities by rho, (N, K) -> (N, K).

    Single-label (Sec. 3.4.1-3.4.2): for inputs whose predicted class (argmax) is any target class.
    Multi-label (sigmoid probabilities, predicted = p > 0.5): pairs (A, B) - inputs predicted to
    have both A and B; triplets (A, B, C) - inputs predicted to have A and C, or B and C. Several
    pairs/triplets (Sec. 3.4.4): the condition of any of them, scaling all their classes.
    """
    probs = jnp.asarray(probs)
    k = probs.shape[-1]
    tmask = _mask(targets.classes, k)
    if not multilabel:
        pred = jnp.argmax(probs, axis=-1)
        hit = tmask[pred] > 0
    else:
        on = probs > 0.5
        conds = []
        for g in targets.groups:
            if len(g) == 2:
                conds.append(on[:, g[0]] & on[:, g[1]])
            else:
                a, b, c = g
                conds.append((on[:, a] & on[:, c]) | (on[:, b] & on[:, c]))
        hit = jnp.any(jnp.stack(conds), axis=0)
    scale = jnp.where(hit[:, None] & (tmask[None, :] > 0), rho, 1.0)
    return probs * scale


# ----------------------------------------------------------------------------- w-loss (Sec. 3.5)

def confused_subset_mask(logits, y, pair: tuple[int, int], multilabel: bool = False):
    """Indicator (N,) of D(Y_target) for the pair Y_target = {A, B} (Zhong et al. 2022, Sec. 3.5.1).

    Single-label: y in Y_target, f(x) != y and f(x) in Y_target (A predicted as B or B as A).
    Multi-label (type2conf's error event, Sec. 2.2.1): labelled exactly one of A, B and predicted
    to have both.
    """
    a, b = pair
    if not multilabel:
        pred = jnp.argmax(logits, axis=-1)
        return (((y == a) & (pred == b)) | ((y == b) & (pred == a))).astype(jnp.float32)
    on = logits > 0
    both = on[:, a] & on[:, b]
    one = (y[:, a] > 0) != (y[:, b] > 0)
    return (both & one).astype(jnp.float32)


def _masked_mean(values, mask):
    """Mean of ``values`` over ``mask``; 0 for an empty subset (the term then has no gradient)."""
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def target_pairs(targets: Targets) -> list[list[tuple[int, int]]]:
    """Per group, the pairs its error terms use: [(A, B)] for a pair; [(A, C), (B, C)] for a triplet."""
    return [[tuple(g)] if len(g) == 2 else [(g[0], g[2]), (g[1], g[2])] for g in targets.groups]


def weighted_loss(logits, y, targets: Targets, rho, multilabel: bool = False):
    """Loss_rl = rho E_D L + (1 - rho) * (1/G) sum_groups sum_{pairs of group} E_{D(pair)} L.

    Zhong et al. 2022, Sec. 3.5.1 (pair: one term), 3.5.2 (triplet: Y_target+ = {A, C} and Y_target- = {B, C}),
    3.5.4 (G pairs/triplets: one/two terms each, the second half divided by G). Expectations are
    batch means; the confused subsets use the current predictions (no gradient through them).
    """
    per = per_example_loss(logits, y, multilabel)
    stopped = jax.lax.stop_gradient(logits)
    extra = 0.0
    groups = target_pairs(targets)
    for pairs in groups:
        for pair in pairs:
            extra = extra + _masked_mean(per, confused_subset_mask(stopped, y, pair, multilabel))
    return rho * jnp.mean(per) + (1.0 - rho) * extra / len(groups)


def weighted_loss_objective(params, state, batch: dict, *, targets: Targets, rho, multilabel: bool = False,
                            l2: float = 0.0):
    """w-loss objective (Zhong et al. 2022, Sec. 3.5): :func:`weighted_loss` of the batch ``x`` (n, ...), ``y``."""
    logits, _, batch_stats = forward(state, params, batch["x"], train=True)
    loss = weighted_loss(logits, batch["y"], targets, jnp.float32(rho), multilabel) + l2 * l2_penalty(params)
    return loss, (batch_stats, {"loss": loss})


# ----------------------------------------------------------------------------- w-dbr (Sec. 3.6)

def class_representations(features, y, num_classes: int, multilabel: bool = False):
    """P_new(c) = S(n_1..n_t) / N: the mean penultimate feature over the N inputs of class c (Zhong et al. 2022, Sec. 3.6).

    features (N, T), y (N,) labels or (N, K) multi-hot -> (reps (K, T), counts (K,)); a class
    absent from the batch has representation 0 and count 0.
    """
    onehot = y.astype(jnp.float32) if multilabel else jax.nn.one_hot(y, num_classes, dtype=jnp.float32)
    counts = onehot.sum(0)
    reps = (onehot.T @ features) / jnp.maximum(counts, 1.0)[:, None]
    return reps, counts


def class_distance(reps, counts, a: int, b: int):
    """(D_new(A, B), defined) with D_new(A, B) = ||P_new(A) - P_new(B)||_2 (Zhong et al. 2022, Sec. 3.6)."""
    d = jnp.sqrt(jnp.sum(jnp.square(reps[a] - reps[b])) + 1e-12)
    return d, (counts[a] > 0) & (counts[b] > 0)


def distance_regularizer(features, y, targets: Targets, num_classes: int, multilabel: bool = False):
    """The second half of w-dbr, averaged over the G pairs/triplets (Zhong et al. 2022, Sec. 3.6.1, 3.6.2, 3.6.4):
    pair: -D_new(A, B); triplet: |D_new(A, C) - D_new(B, C)|. A term whose classes are missing from
    the batch is 0.
    """
    reps, counts = class_representations(features, y, num_classes, multilabel)
    total = 0.0
    for g in targets.groups:
        if len(g) == 2:
            d, ok = class_distance(reps, counts, g[0], g[1])
            total = total + jnp.where(ok, -d, 0.0)
        else:
            a, b, c = g
            dac, ok1 = class_distance(reps, counts, a, c)
            dbc, ok2 = class_distance(reps, counts, b, c)
            total = total + jnp.where(ok1 & ok2, jnp.abs(dac - dbc), 0.0)
    return total / len(targets.groups)


def weighted_dbr_objective(params, state, batch: dict, *, targets: Targets, rho, num_classes: int,
                           multilabel: bool = False, l2: float = 0.0):
    """w-dbr objective: rho * Loss_orig + (1 - rho) * :func:`distance_regularizer` (Zhong et al. 2022, Sec. 3.6)."""
    logits, feats, batch_stats = forward(state, params, batch["x"], train=True)
    orig = jnp.mean(per_example_loss(logits, batch["y"], multilabel))
    reg = distance_regularizer(feats, batch["y"], targets, num_classes, multilabel)
    rho = jnp.float32(rho)
    loss = rho * orig + (1.0 - rho) * reg + l2 * l2_penalty(params)
    return loss, (batch_stats, {"loss": loss, "loss_orig": orig, "regularizer": reg})
