"""Data-centric repair of a confused pair or a biased triplet (issue 17 Part 4): find the training points
that most increase the targets' soft error, then fine-tune without them.

The targets' error as a function of the parameters is the soft type1conf of each pair, or the soft cd of
each triplet (Zhong et al. 2022, Sec. 2.2; :func:`repair_jax.influence.functions.confusion_quantity`),
summed over the target groups, on the *selection* split (the study never looks at the test split to choose
its data). Its influence on every training point is Adebayo 2022, Eq. 6.4 with this quantity in
place of the group disparity: ``I_up(z_i) = -grad q^T H^{-1} grad l(z_i)``, through the model's last dense
layer with the penultimate features fixed (:func:`target_influence`), with damping 0.01 x the largest
eigenvalue of H (the default of ``repair-jax influence``). ``I_up(z_i) > 0``: up-weighting z_i raises the targets' error, so removing it
lowers it (to first order by ``I_up(z_i) / N``): z_i is *harmful*.

:func:`dropped_examples` turns the scores into the set the method ``i-drop``
(:func:`repair_jax.repair.methods.i_drop`) leaves out of fine-tuning: the ``rho`` fraction of the harmful
points, most harmful first. The rho grid and its selection are those of every WR method (Zhong et al. 2022, Sec. 4.4), so
the method sits in the same table with the same statistics and thresholds.
"""

from __future__ import annotations

import warnings

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from repair_jax.data import Split
from repair_jax.errors import UserError
from repair_jax.repair.weighted import Targets, check_rho

RELATIVE_DAMPING = 0.01


def target_quantity(loss_fn, x, y, targets: Targets):
    """``q(params)``: the soft type1conf of every target pair (or soft cd of every triplet) of ``loss_fn``'s
    predictions on inputs ``x`` with labels ``y``, summed over the targets."""
    from repair_jax.influence.functions import confusion_quantity

    batch = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
    kind = "pair" if len(targets.groups[0]) == 2 else "triplet"
    parts = [confusion_quantity(loss_fn, batch, **{kind: g}) for g in targets.groups]
    return lambda p: sum(q(p) for q in parts)


def _last_layer(state, feats, logits) -> dict:
    from repair_jax.repair.mm import last_dense_layer

    try:
        last = last_dense_layer(state.params, feats[:256], logits[:256])
    except UserError:
        raise UserError("i-drop attributes through the model's last dense layer (penultimate features to "
                        "logits); this model has none") from None
    return {k: jnp.asarray(v) for k, v in last.items()}


def target_influence(state, train: Split, select: Split, targets: Targets, *,
                     l2: float = 0.0) -> tuple[np.ndarray, dict]:
    """``(scores, solver)``: ``I_up`` (N,) of every training point on the targets' soft error on ``select``
    (module docstring) for the trained ``state``, and the solve's record.

    Through the last dense layer, with the penultimate features fixed (the convex last-layer model of Koh &
    Liang 2017, also :func:`repair_jax.explain.training_point_ranking`'s): its Hessian is (D K + K)^2, formed
    and factorised exactly (:func:`repair_jax.influence.fit_influence`, ``explicit``), where the whole
    network's CG needs hundreds of Hessian-vector products over the training set (minutes per product for a
    CNN on this CPU). A solve that did not converge is a :class:`UserError`."""
    from repair_jax.influence import fit_influence
    from repair_jax.influence.functions import quantity_gradient
    from repair_jax.influence.gradients import last_layer_loss
    from repair_jax.influence.hvp import InfluenceWarning
    from repair_jax.train import predict

    if np.ndim(train.y) != 1:
        raise UserError("influence-based data repair needs single-label classes (not multi-label)")
    logits, feats = predict(state, train.x)
    last = _last_layer(state, np.asarray(feats), np.asarray(logits))
    _, sel_feats = predict(state, select.x)
    q = target_quantity(last_layer_loss, sel_feats, select.y, targets)
    with warnings.catch_warnings():
        # not converging is checked just below from the solve's status, and raised as a UserError
        warnings.simplefilter("ignore", InfluenceWarning)
        fit = fit_influence(last_layer_loss, last, {"x": jnp.asarray(feats), "y": jnp.asarray(train.y)},
                            method="explicit", l2=l2, relative_damping=RELATIVE_DAMPING)
        r = fit.solve(jax.flatten_util.ravel_pytree(quantity_gradient(q, last))[0])
    if not r.converged:
        raise UserError(f"the inverse-HVP solve for the targets' influence did not converge ({r.status}, "
                        f"residual {float(r.residuals.max()):.2e}); the data-centric repair cannot rank the "
                        "training points")
    scores = np.asarray(fit.upweight_scores(r.x)[0], np.float64)
    if not np.all(np.isfinite(scores)):
        raise UserError("the targets' influence scores are not finite")
    return scores, {**r.summary(), "through": "last dense layer (penultimate features fixed)"}


def dropped_examples(scores: np.ndarray, rho: float) -> np.ndarray:
    """Indices of the ``ceil(rho * H)`` most harmful training points (H: the points with score > 0), most
    harmful first; ties broken by index (a stable sort), so the set is deterministic."""
    rho = check_rho(rho)
    scores = np.asarray(scores, np.float64)
    harmful = int(np.sum(scores > 0))
    order = np.argsort(-scores, kind="stable")
    return order[:int(np.ceil(rho * harmful))]
