"""I-REPAIR: influence-masked back-propagation on a small repair set (Henriksen et al. 2022).

The repair problem (Henriksen et al. 2022, Sec. 3): a trained network N, a *repair set* R of inputs that N
misclassifies and a *correct set* C of inputs that N classifies correctly (Definition 2); a repair
operation changes weights only (Definition 1) and is judged by the accuracy drop it induces
(Definitions 5-7), measured here on a held-out test split, never on C.

- :func:`estimate_influence` is Algorithm 1 (the mean gradient of a loss over a set; the per-example
  mean *absolute* gradient is offered as a documented variant).
- :func:`influence_scores` is Algorithm 2 l. 9, ``scores = (|I_R⊥| + eps) / (|I_C| + eps) / gamma``.
- :func:`i_repair` is Algorithm 2: each iteration takes R⊥ (the inputs of R still misclassified),
  stops when it is empty, masks every parameter whose score is < 1 and makes one optimizer step on
  R⊥. The whole loop is one jitted ``jax.lax.while_loop`` over a fixed-shape repair set (R⊥ is a
  mask), so it never recompiles between iterations.
- Baselines of Sec. 5: :func:`retrain` (the same optimizer and stopping rule, back-propagation on
  R ∪ C, nothing locked) and :func:`random_locking_repair` (RQ ii: each parameter frozen with
  probability p). MM repair is :mod:`repair_jax.repair.mm`.
- The three are one loop, :func:`repair_loop`, given a locking rule (a mask function):
  :class:`InfluenceLocking` (Algorithm 2 l. 7-13), :func:`fixed_locking` (a mask drawn once) and
  :func:`no_locking`. A new locking rule is one more such function.

The network is evaluated in inference mode throughout (BatchNorm running statistics are used and
not updated), so only weights and biases change (Definition 1).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from repair_jax.classifier import Classifier, check_classifier, takes_model
from repair_jax.errors import UserError
from repair_jax.influence import layerwise_per_example_grads
from repair_jax.train import optimizer as make_tx

CORRECT_LOSSES = ("magnitude", "cross_entropy")
INFLUENCE_VARIANTS = ("mean", "mean_abs")
BACKPROP_SETS = ("repair_perp", "repair_and_correct")


# ----------------------------------------------------------------------------- repair / correct sets

def repair_set(labels: np.ndarray, predictions: np.ndarray, classes, size: int,
               rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """Indices of a repair set R (Henriksen et al. 2022, Definition 2): ``size`` misclassified inputs of each class.

    ``labels``/``predictions`` (N,) ints over the repair pool. A class with fewer than ``size``
    misclassified inputs contributes all it has (as Henriksen et al. 2022, Sec. 5 does); each such case gives a note.
    Returns (sorted indices, notes). A class with no misclassified input is a UserError.
    """
    if size <= 0:
        raise UserError(f"repair set size must be positive, got {size}")
    wrong = labels != predictions
    chosen, notes = [], []
    for c in classes:
        idx = np.flatnonzero(wrong & (labels == c))
        if len(idx) == 0:
            raise UserError(f"class {c} has no misclassified input in the repair pool")
        if len(idx) < size:
            notes.append(f"class {c} has only {len(idx)} misclassified inputs in the pool; using all of them")
        chosen.append(rng.choice(idx, size=min(size, len(idx)), replace=False))
    return np.sort(np.concatenate(chosen)), notes


def correct_set(labels: np.ndarray, predictions: np.ndarray, size: int, num_classes: int,
                rng: np.random.Generator, exclude: np.ndarray | None = None) -> np.ndarray:
    """Indices of a correct set C (Henriksen et al. 2022, Definition 2): ``size`` correctly classified inputs, uniform
    over classes (Henriksen et al. 2022, Sec. 5: |C| = 40 spread over all classes; a class with too few correct inputs
    gives all it has and the others fill in); ``exclude`` indices are never used."""
    if size <= 0:
        raise UserError(f"correct set size must be positive, got {size}")
    ok = labels == predictions
    if exclude is not None:
        ok[exclude] = False
    if ok.sum() < size:
        raise UserError(f"the repair pool has too few correctly classified inputs for |C| = {size}")
    # round-robin over the classes (in a random order): uniform when every class has enough inputs
    per_class = [list(rng.permutation(np.flatnonzero(ok & (labels == c)))) for c in range(num_classes)]
    order = rng.permutation(num_classes)
    chosen: list[int] = []
    while len(chosen) < size:
        for c in order:
            if per_class[c] and len(chosen) < size:
                chosen.append(per_class[c].pop())
    return np.sort(np.asarray(chosen, dtype=np.int64))


# ----------------------------------------------------------------------------- losses and Algorithm 1

def cross_entropy_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example cross-entropy, logits (N, K), labels (N,) -> (N,)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def output_magnitude_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example ``sum_i |N(x)_i|`` over the logits (Henriksen et al. 2022, Sec. 5 RQ ii, the correct-set loss).

    The network outputs before softmax are used: the softmax outputs sum to one, so their
    magnitude would have zero gradient. ``labels`` is unused.
    """
    del labels
    return jnp.sum(jnp.abs(logits), axis=-1)


def _loss_fn(name: str):
    return {"magnitude": output_magnitude_loss, "cross_entropy": cross_entropy_loss}[name]


def weighted_mean_gradient(apply_fn, loss, params, x, y, weights):
    """Gradient of ``sum_n w_n loss_n / sum_n w_n``: the one place back-propagation is called."""
    def mean_loss(p):
        per_ex = loss(apply_fn(p, x), y)
        return jnp.sum(per_ex * weights) / jnp.maximum(jnp.sum(weights), 1e-12)
    return jax.grad(mean_loss)(params)


def per_example_gradients(apply_fn, loss, params, x, y):
    """Per-example gradients, a pytree with a leading axis N, by the layer-wise outer products of
    :func:`repair_jax.influence.layerwise_per_example_grads` (traceable inside the repair loop)."""
    return layerwise_per_example_grads(lambda p, b: loss(apply_fn(p, b["x"]), b["y"]), params, {"x": x, "y": y})


def estimate_influence(apply_fn, loss, params, x, y, weights, variant: str = "mean"):
    """Algorithm 1 of Henriksen et al. 2022, Sec. 4: the influence of every parameter on a set of inputs.

    ``variant="mean"`` is the paper's ``I = sum_(x,l) grad L(N, x, l) / |X|`` (signed gradients
    averaged); ``variant="mean_abs"`` averages per-example *absolute* gradients, so gradients of
    opposite sign on different inputs do not cancel. ``weights`` (N,) in {0, 1} selects the inputs
    of the fixed-shape set (R⊥ is a mask over R). Returns a pytree shaped like ``params``.
    """
    if variant == "mean":
        return weighted_mean_gradient(apply_fn, loss, params, x, y, weights)
    g = per_example_gradients(apply_fn, loss, params, x, y)
    denom = jnp.maximum(jnp.sum(weights), 1e-12)
    return jax.tree_util.tree_map(
        lambda a: jnp.tensordot(weights, jnp.abs(a), axes=1) / denom, g)


def influence_scores(i_repair, i_correct, gamma, epsilon):
    """Algorithm 2 l. 9: ``scores = (|I_R⊥| + eps) / (|I_C| + eps) / gamma`` per parameter.

    gamma = 0 gives infinite scores (every parameter unlocked: Observation 2).
    """
    return jax.tree_util.tree_map(
        lambda r, c: (jnp.abs(r) + epsilon) / (jnp.abs(c) + epsilon) / gamma, i_repair, i_correct)


def is_repaired(logits: jax.Array, labels: jax.Array, margin) -> jax.Array:
    """(N,) bool: the true class wins, and with ``margin`` delta > 0 its softmax score exceeds every
    other by more than delta (Henriksen et al. 2022, Sec. 5 RQ iii, ``N(x)_c - N(x)_i > delta`` on softmax outputs)."""
    k = logits.shape[-1]
    onehot = jax.nn.one_hot(labels, k, dtype=bool)
    correct = jnp.argmax(logits, -1) == labels
    probs = jax.nn.softmax(logits, -1)
    p_true = jnp.sum(jnp.where(onehot, probs, 0.0), -1)
    p_other = jnp.max(jnp.where(onehot, -jnp.inf, probs), -1)
    return correct & (p_true - p_other > margin)


# ----------------------------------------------------------------------------- configuration / results

@dataclasses.dataclass(frozen=True)
class IRepairConfig:
    """Hyper-parameters of Algorithm 2 and its baselines.

    gamma >= 0 (Henriksen et al. 2022 use 2 for the ResNet, {0.01..1} for Table 1); epsilon of l. 9; ub the bound on
    iterations; RMSprop with learning rate ``lr`` (Henriksen et al. 2022, Sec. 5: 1e-5 ResNet, 1e-4 FC network);
    ``margin`` delta of RQ iii; ``correct_loss`` the influence loss for C ("magnitude", the default,
    or "cross_entropy"); ``influence`` the Algorithm 1 variant ("mean" or "mean_abs").
    """

    gamma: float = dataclasses.field(default=1.0,
        metadata={"help": 'gamma of the influence score (Henriksen et al. 2022, Algorithm 2 l. 9)'})
    epsilon: float = dataclasses.field(default=1e-8, metadata={"help": 'epsilon of the influence score'})
    ub: int = dataclasses.field(default=5000, metadata={"help": 'iteration bound (>= 1)'})
    lr: float = dataclasses.field(default=1e-4, metadata={"help": 'RMSprop learning rate'})
    optimizer: str = "rmsprop"  # rmsprop | adam | sgd
    margin: float = dataclasses.field(default=0.0, metadata={"help": "softmax margin delta for 'repaired' (RQ iii)"})
    correct_loss: str = dataclasses.field(default="magnitude",
        metadata={"help": 'the influence loss of the correct set C'})
    influence: str = dataclasses.field(default="mean",
        metadata={"help": 'Algorithm 1 as in the paper (mean) or per-example mean absolute gradients'})

    def validate(self) -> None:
        if not self.gamma >= 0:
            raise UserError(f"gamma must be >= 0, got {self.gamma}")
        if not self.epsilon > 0:
            raise UserError(f"epsilon must be > 0, got {self.epsilon}")
        if self.ub < 0:
            raise UserError(f"the iteration bound ub must be >= 0, got {self.ub}")
        if not self.lr > 0:
            raise UserError(f"learning rate must be positive, got {self.lr}")
        if self.optimizer not in ("rmsprop", "adam", "sgd"):
            raise UserError(f"unknown optimizer {self.optimizer!r}; choose rmsprop, adam or sgd")
        if not 0 <= self.margin < 1:
            raise UserError(f"margin must be in [0, 1) (softmax scores), got {self.margin}")
        if self.correct_loss not in CORRECT_LOSSES:
            raise UserError(f"unknown correct-set loss {self.correct_loss!r}; choose {', '.join(CORRECT_LOSSES)}")
        if self.influence not in INFLUENCE_VARIANTS:
            raise UserError(f"unknown influence variant {self.influence!r}; choose {', '.join(INFLUENCE_VARIANTS)}")


@dataclasses.dataclass
class IRepairResult:
    """What Algorithm 2 returns (l. 16-17) plus the loop's bookkeeping.

    ``variables`` the repaired network's variables; ``repaired`` (|R|,) bool, True for X_R^T (every
    such input is classified correctly by the repaired network: Observation 1), its complement
    X_R^⊥; ``iterations`` optimizer steps taken; ``unlocked_fraction`` the mean over iterations of
    the fraction of parameters unlocked (1.0 for retraining).
    """

    variables: dict
    repaired: np.ndarray
    iterations: int
    unlocked_fraction: float
    classifier: Any = None  # the repaired model (its export() gives the user's own kind of object)

    @property
    def unrepaired(self) -> np.ndarray:
        return ~self.repaired


# ----------------------------------------------------------------------------- locking rules (mask functions)

class LockingInputs(NamedTuple):
    """What a locking rule sees at one iteration of Algorithm 2 (inside the jitted loop).

    ``grads`` the back-propagated gradient of this iteration (on R⊥, or on R ∪ C for retraining);
    ``w_r`` (|R|,) the R⊥ indicator as weights; ``fixed_mask`` the mask given to the loop (random locking).
    """

    apply_fn: Callable
    params: Any
    grads: Any
    xr: jax.Array
    yr: jax.Array
    w_r: jax.Array
    xc: jax.Array
    yc: jax.Array
    gamma: jax.Array
    epsilon: jax.Array
    fixed_mask: Any


class InfluenceLocking(NamedTuple):
    """I-REPAIR's rule, Algorithm 2 l. 7-13: unlock the parameters whose influence score is >= 1.

    ``correct_loss`` the loss whose influence on C is measured; ``influence`` the Algorithm 1 variant.
    A value (hashable by its fields), so the jitted loop compiles once per rule.
    """

    correct_loss: str = "magnitude"
    influence: str = "mean"

    def __call__(self, s: LockingInputs):
        ones_c = jnp.ones(s.yc.shape, jnp.float32)
        i_c = estimate_influence(s.apply_fn, _loss_fn(self.correct_loss), s.params, s.xc, s.yc, ones_c,
                                 self.influence)  # l. 7
        i_r = s.grads if self.influence == "mean" else estimate_influence(
            s.apply_fn, cross_entropy_loss, s.params, s.xr, s.yr, s.w_r, self.influence)  # l. 8
        scores = influence_scores(i_r, i_c, s.gamma, s.epsilon)  # l. 9
        return jax.tree_util.tree_map(lambda sc: sc >= 1.0, scores)  # l. 10-13


def fixed_locking(s: LockingInputs):
    """The mask given to the loop, the same at every iteration (random locking, Henriksen et al. 2022, Sec. 5 RQ ii)."""
    return s.fixed_mask


def no_locking(s: LockingInputs):
    """Every parameter unlocked (retraining)."""
    return jax.tree_util.tree_map(lambda g: jnp.ones(g.shape, bool), s.grads)


# ----------------------------------------------------------------------------- the jitted loop

@functools.partial(jax.jit, static_argnames=("model", "locking", "backprop_on", "optimizer"))
def _repair_loop(params, batch_stats, xr, yr, valid_r, xc, yc, fixed_mask, gamma, epsilon, lr,
                 margin, ub, *, model, locking: Callable, backprop_on: str, optimizer: str):
    """Algorithm 2 as one ``while_loop``: carry (params, opt_state, it, active, unlocked_sum)."""
    def apply_fn(p, x):
        return model(p, batch_stats, x, train=False)[0]

    tx = make_tx(optimizer, lr)
    n_params = sum(a.size for a in jax.tree_util.tree_leaves(params))

    def misclassified(p):  # Algorithm 2 l. 5: R⊥ as a mask over the fixed-shape R
        return valid_r & ~is_repaired(apply_fn(p, xr), yr, margin)

    def cond(carry):
        _, _, it, active, _ = carry
        return (it < ub) & jnp.any(active)  # l. 4 and l. 6

    def body(carry):
        p, opt_state, it, active, unlocked_sum = carry
        w_r = active.astype(jnp.float32)
        if backprop_on == "repair_and_correct":  # retraining: all of R and C
            x = jnp.concatenate([xr, xc])
            y = jnp.concatenate([yr, yc])
            w = jnp.concatenate([valid_r.astype(jnp.float32), jnp.ones(yc.shape, jnp.float32)])
            grads = weighted_mean_gradient(apply_fn, cross_entropy_loss, p, x, y, w)
        else:  # back-propagation on R⊥ (l. 15); with the paper's Algorithm 1 it equals I_R⊥
            grads = weighted_mean_gradient(apply_fn, cross_entropy_loss, p, xr, yr, w_r)
        mask = locking(LockingInputs(apply_fn, p, grads, xr, yr, w_r, xc, yc, gamma, epsilon, fixed_mask))
        grads = jax.tree_util.tree_map(lambda g, m: jnp.where(m, g, 0.0), grads, mask)  # l. 14
        updates, opt_state = tx.update(grads, opt_state, p)
        updates = jax.tree_util.tree_map(lambda u, m: jnp.where(m, u, 0.0), updates, mask)  # frozen: no move
        p = optax.apply_updates(p, updates)
        unlocked = sum(jnp.sum(m) for m in jax.tree_util.tree_leaves(mask)) / n_params
        return p, opt_state, it + 1, misclassified(p), unlocked_sum + unlocked

    carry = (params, tx.init(params), jnp.zeros((), jnp.int32), misclassified(params),
             jnp.zeros((), jnp.float32))
    p, _, it, active, unlocked_sum = jax.lax.while_loop(cond, body, carry)
    return p, valid_r & ~active, it, unlocked_sum / jnp.maximum(it, 1)


def _check_sets(repair_x, repair_y, correct_x, correct_y):
    repair_x, correct_x = np.asarray(repair_x, np.float32), np.asarray(correct_x, np.float32)
    repair_y, correct_y = np.asarray(repair_y, np.int32), np.asarray(correct_y, np.int32)
    if len(repair_x) == 0:
        raise UserError("the repair set is empty")
    if len(correct_x) == 0:
        raise UserError("the correct set is empty")
    if repair_x.shape[0] != repair_y.shape[0] or correct_x.shape[0] != correct_y.shape[0]:
        raise UserError("inputs and labels of the repair / correct set differ in length")
    if repair_y.ndim != 1 or correct_y.ndim != 1:
        raise UserError("I-REPAIR needs single-label integer targets (N,)")
    return repair_x, repair_y, correct_x, correct_y


@takes_model
def repair_loop(model: Classifier, repair_x, repair_y, correct_x, correct_y, config: IRepairConfig, *,
                locking: Callable = InfluenceLocking(), backprop_on: str = "repair_perp",
                fixed_mask=None) -> IRepairResult:
    """The one loop of Algorithm 2 with a locking rule ``locking(LockingInputs) -> mask`` (a pytree of
    bools like the params, True = may move): :class:`InfluenceLocking`, :func:`fixed_locking` (with
    ``fixed_mask``) or :func:`no_locking`. ``backprop_on``: ``"repair_perp"`` (R⊥, l. 15) or
    ``"repair_and_correct"`` (R ∪ C, the retraining baseline). ``locking`` must be hashable (a
    module-level function or a NamedTuple rule): the loop is compiled once per rule.
    """
    config.validate()
    if backprop_on not in BACKPROP_SETS:
        raise UserError(f"backprop_on must be one of {', '.join(BACKPROP_SETS)}, got {backprop_on!r}")
    repair_x, repair_y, correct_x, correct_y = _check_sets(repair_x, repair_y, correct_x, correct_y)
    clf = check_classifier(model, repair_x.shape[1:], _num_classes(model, repair_y, correct_y))
    params, batch_stats = clf.params, clf.state
    if fixed_mask is None:
        fixed_mask = jax.tree_util.tree_map(lambda a: jnp.ones(a.shape, bool), params)
    valid = np.ones(len(repair_y), bool)
    try:
        p, repaired, it, unlocked = _repair_loop(
            params, batch_stats, repair_x, repair_y, valid, correct_x, correct_y, fixed_mask,
            jnp.float32(config.gamma), jnp.float32(config.epsilon), jnp.float32(config.lr),
            jnp.float32(config.margin), jnp.int32(config.ub), model=clf.apply, locking=locking,
            backprop_on=backprop_on, optimizer=config.optimizer)
    except (TypeError, ValueError) as e:
        raise UserError(f"the model does not accept these inputs: {str(e).splitlines()[0]}") from None
    repaired_clf = clf.replace(params=p)
    return IRepairResult(repaired_clf.variables, np.asarray(repaired), int(it), float(unlocked), repaired_clf)


def _num_classes(model, *labels) -> int:
    """The model's class count where it declares one, else one more than the largest label."""
    k = getattr(model, "num_classes", 0)
    return int(k) if k else int(max(int(np.max(y)) for y in labels)) + 1


@takes_model
def i_repair(model: Classifier, repair_x, repair_y, correct_x, correct_y,
             config: IRepairConfig = IRepairConfig()) -> IRepairResult:
    """Algorithm 2 of Henriksen et al. 2022, Sec. 4 (I-REPAIR) on ``model`` (a :class:`~repair_jax.classifier.Classifier`,
    or the pair ``module, variables``).

    repair_x (|R|, ...) / repair_y (|R|,) the repair set, correct_x / correct_y the correct set
    (Henriksen et al. 2022, Definition 2). Returns :class:`IRepairResult`.
    """
    return repair_loop(model, repair_x, repair_y, correct_x, correct_y, config,
                       locking=InfluenceLocking(config.correct_loss, config.influence))


@takes_model
def retrain(model: Classifier, repair_x, repair_y, correct_x, correct_y,
            config: IRepairConfig = IRepairConfig()) -> IRepairResult:
    """Retraining baseline (Henriksen et al. 2022, Sec. 5): back-propagation on the available data R ∪ C with the same
    optimizer, learning rate and stopping rule (all of R repaired, or ``ub`` steps); nothing locked."""
    return repair_loop(model, repair_x, repair_y, correct_x, correct_y, config,
                       locking=no_locking, backprop_on="repair_and_correct")


def random_locking_mask(params, p: float, key: jax.Array):
    """Freezes each parameter independently with probability ``p`` (Henriksen et al. 2022, Sec. 5 RQ ii): a pytree of
    bools, True where the parameter may move."""
    if not 0 <= p <= 1:
        raise UserError(f"locking probability must be in [0, 1], got {p}")
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [jax.random.uniform(k, a.shape) >= p for k, a in zip(keys, leaves)])


@takes_model
def random_locking_repair(model: Classifier, repair_x, repair_y, correct_x, correct_y, p: float,
                          seed: int = 0, config: IRepairConfig = IRepairConfig()) -> IRepairResult:
    """Randomised repair (Henriksen et al. 2022, Sec. 5 RQ ii): Algorithm 2 with the influence mask replaced by a random
    one drawn once (each parameter frozen with probability ``p``); back-propagation on R⊥."""
    mask = random_locking_mask(model.params, p, jax.random.PRNGKey(seed))
    return repair_loop(model, repair_x, repair_y, correct_x, correct_y, config,
                       locking=fixed_locking, fixed_mask=mask)
