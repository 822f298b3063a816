"""Data-centric repair of a confused pair or a biased triplet (issue 17 Part 4): find the training points
that most increase the targets' soft error, then fine-tune without them.

The targets' error as a function of the parameters is the soft type1conf of each pair, or the soft cd of
each triplet (000_92ecc981581ec3ed.txt Sec. 2.2; :func:`repair_jax.influence.functions.confusion_quantity`),
summed over the target groups, on the *selection* split (the study never looks at the test split to choose
its data). Its influence on every training point is 002_97a11baaf249c571.txt Eq. 6.4 with this quantity in
place of the group disparity: ``I_up(z_i) = -grad q^T H^{-1} grad l(z_i)`` (:func:`repair_jax.influence.s_test`,
:func:`repair_jax.influence.influence_up`, CG with damping 0.01 x the largest eigenvalue of H, the defaults
of ``repair-jax influence``). ``I_up(z_i) > 0``: up-weighting z_i raises the targets' error, so removing it
lowers it (to first order by ``I_up(z_i) / N``): z_i is *harmful*.

:func:`dropped_examples` turns the scores into the set the method ``i-drop``
(:func:`repair_jax.repair.methods.i_drop`) leaves out of fine-tuning: the ``rho`` fraction of the harmful
points, most harmful first. The rho grid and its selection are those of every WR method (000 Sec. 4.4), so
the method sits in the same table with the same statistics and thresholds.
"""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np

from repair_jax.data import Split
from repair_jax.errors import UserError
from repair_jax.repair.weighted import Targets, check_rho

RELATIVE_DAMPING = 0.01


def target_quantity(loss_fn, split: Split, targets: Targets):
    """``q(params)``: the soft type1conf of every target pair (or soft cd of every triplet) on ``split``, summed."""
    from repair_jax.influence.functions import confusion_quantity

    batch = {"x": jnp.asarray(split.x), "y": jnp.asarray(split.y)}
    kind = "pair" if len(targets.groups[0]) == 2 else "triplet"
    parts = [confusion_quantity(loss_fn, batch, **{kind: g}) for g in targets.groups]
    return lambda p: sum(q(p) for q in parts)


def target_influence(state, train: Split, select: Split, targets: Targets, *, l2: float = 0.0,
                     chunk_size: int = 512) -> tuple[np.ndarray, dict]:
    """``(scores, solver)``: ``I_up`` (N,) of every training point on the targets' soft error on ``select``
    (module docstring) for the trained ``state``, and the CG solve's record. A solve that did not converge
    is a :class:`UserError` (scores from it would rank the wrong points)."""
    from repair_jax.influence import ClassifierLoss, influence_up, s_test
    from repair_jax.influence.hvp import InfluenceWarning
    from repair_jax.influence.workflow import FLOAT32_CG_TOL

    if np.ndim(train.y) != 1:
        raise UserError("influence-based data repair needs single-label classes (not multi-label)")
    loss_fn = ClassifierLoss.from_state(state)
    batch = {"x": jnp.asarray(train.x), "y": jnp.asarray(train.y)}
    with warnings.catch_warnings():
        # not converging is checked just below from the solver's status, and raised as a UserError
        warnings.simplefilter("ignore", InfluenceWarning)
        r = s_test(loss_fn, state.params, batch, target_quantity(loss_fn, select, targets), method="cg", l2=l2,
                   relative_damping=RELATIVE_DAMPING, tol=FLOAT32_CG_TOL, chunk_size=chunk_size)
    if not r.converged:
        raise UserError(f"the inverse-HVP solve for the targets' influence did not converge ({r.status}, "
                        f"residual {r.residual:.2e}); the data-centric repair cannot rank the training points")
    scores = np.asarray(influence_up(loss_fn, state.params, batch, r.x, chunk_size=chunk_size), np.float64)
    if not np.all(np.isfinite(scores)):
        raise UserError("the targets' influence scores are not finite")
    return scores, r.summary()


def dropped_examples(scores: np.ndarray, rho: float) -> np.ndarray:
    """Indices of the ``ceil(rho * H)`` most harmful training points (H: the points with score > 0), most
    harmful first; ties broken by index (a stable sort), so the set is deterministic."""
    rho = check_rho(rho)
    scores = np.asarray(scores, np.float64)
    harmful = int(np.sum(scores > 0))
    order = np.argsort(-scores, kind="stable")
    return order[:int(np.ceil(rho * harmful))]
