"""Attribution quality as the data-attribution field measures it: the linear datamodeling score (LDS),
leave-one-out correlation and noisy-label detection.

Sources: Park et al. 2023 (TRAK), Sec. 2 (the LDS) and dattri's benchmark (Deng et al. 2024), both
cited in issue 17; the leave-one-out check of Koh & Liang 2017 (Adebayo 2022, Ch. 3.4).

* **LDS.** Draw M random training subsets S_j of ``round(alpha * N)`` points (:func:`draw_subsets`),
  retrain a model on each (:func:`retrain_on_subsets`: full-batch L-BFGS of the 0/1-weighted objective
  ``sum_i w_ji l(z_i) / sum_i w_ji + l2/2 ||theta||^2``, vmapped over the M weight vectors, so shapes stay
  static) and record the *loss* of each test point under each retrained model (the model output function
  here is the test loss, the quantity that ``I_up,loss`` predicts; TRAK uses the margin). The attribution
  predicts the output of S_j as ``sum_{i in S_j} tau(z_t)_i`` (:func:`predicted_outputs`); the LDS of
  test point t is the Spearman correlation over the M subsets of predicted and actual outputs
  (:func:`linear_datamodeling_score`), reported per test point and as the mean.
* **LOO.** Remove one training point, retrain to convergence
  (:func:`repair_jax.influence.full_batch.minimize_objective`) and compare the actual change of every test
  loss with ``-tau_i / n`` (:func:`loo_correlation`).
* **Noisy labels.** Flip a share of the training labels, refit, rank training points by self-influence
  ``g_i^T H^{-1} g_i`` (TracIn: ``||g_i||^2``) and report the ROC AUC of finding the flipped ones
  (:func:`noisy_label_auc`).

Scores ``tau`` follow the ``I_up,loss`` convention (positive: upweighting z_i raises the test loss), so a
good attribution has a positive LDS. :func:`attribution_scores` gives them for every method of
:data:`LDS_METHODS` (every method of :data:`repair_jax.influence.INFLUENCE_METHODS`, each by its own
``attribute`` / ``self_influence``); TracIn is TracInCP with one checkpoint (the final parameters) and
learning rate 1, the gradient dot product, negated into this convention. trak is the random-projection
influence of :mod:`repair_jax.influence.projection` (see :func:`repair_jax.influence.methods.trak_fit`);
kfac / ekfac are K-FAC / EK-FAC (:mod:`repair_jax.influence.kfac`, true Fisher, seed 0): H replaced by its
Kronecker-factored approximation, with the same damping.
"""

from __future__ import annotations

import jax
import numpy as np

from repair_jax.errors import UserError
from repair_jax.influence.full_batch import retrain
from repair_jax.influence.gradients import LossFn
from repair_jax.influence.methods import INFLUENCE_METHODS, TRAK_DIM, get_influence_method
from repair_jax.stats import pearson, spearman

#: The methods the harness scores: every registered one.
LDS_METHODS = tuple(INFLUENCE_METHODS)


def validate_lds_args(alpha: float, num_subsets: int, methods=()) -> None:
    """UserError for alpha outside (0, 1), fewer than 2 subsets or an unknown method."""
    if not 0 < alpha < 1:
        raise UserError(f"alpha (the subset fraction) must lie in (0, 1), got {alpha}")
    if num_subsets < 2:
        raise UserError(f"the LDS needs at least 2 subsets, got {num_subsets}")
    for m in methods:
        get_influence_method(m)


def draw_subsets(n: int, num_subsets: int, alpha: float = 0.5, seed: int = 0) -> np.ndarray:
    """(M, N) bool masks of M random subsets of ``round(alpha * n)`` training points each (TRAK Sec. 2),
    deterministic in ``seed``."""
    validate_lds_args(alpha, num_subsets)
    size = int(round(alpha * n))
    if not 0 < size < n:
        raise UserError(f"alpha = {alpha} of {n} training points leaves an empty or full subset")
    rng = np.random.default_rng(seed)
    masks = np.zeros((num_subsets, n), bool)
    for j in range(num_subsets):
        masks[j, rng.choice(n, size, replace=False)] = True
    return masks


def retrain_on_subsets(loss_fn: LossFn, params, train_batch: dict, masks, *, l2: float = 0.0,
                       steps: int = 300, tol: float = 1e-9):
    """Retrains from ``params`` on each of the M subsets of ``masks`` (M, N): at most ``steps`` of the full-batch
    L-BFGS of :func:`repair_jax.influence.full_batch.retrain` on the 0/1-weighted objective, vmapped over the
    subsets. Returns (flat parameters (M, P), gradient norms (M,), unravel)."""
    return retrain(loss_fn, params, train_batch, masks, l2=l2, max_iter=steps, tol=tol)


def subset_outputs(loss_fn: LossFn, flat_params, unravel, test_batch: dict) -> np.ndarray:
    """(M, T) test losses of the M retrained models (flat parameters (M, P))."""
    return np.asarray(jax.jit(jax.vmap(lambda x: loss_fn(unravel(x), test_batch)))(flat_params))


def predicted_outputs(scores, masks) -> np.ndarray:
    """(M, T) attribution-predicted outputs ``sum_{i in S_j} tau(z_t)_i`` for scores (T, N), masks (M, N)."""
    scores, masks = np.asarray(scores, np.float64), np.asarray(masks, np.float64)
    if scores.ndim != 2 or masks.ndim != 2 or scores.shape[1] != masks.shape[1]:
        raise UserError(f"scores (T, N) and masks (M, N) disagree: {scores.shape}, {masks.shape}")
    return masks @ scores.T


def _columnwise(fn, a, b) -> np.ndarray:
    return np.asarray([fn(a[:, t], b[:, t]) for t in range(a.shape[1])])


def linear_datamodeling_score(predicted, actual) -> dict:
    """LDS (TRAK Sec. 2): per test point the Spearman correlation over the M subsets of ``predicted`` and
    ``actual`` outputs (both (M, T)); {"per_test_point": (T,), "mean": mean over the defined ones}."""
    predicted, actual = np.asarray(predicted), np.asarray(actual)
    if predicted.shape != actual.shape or predicted.ndim != 2:
        raise UserError(f"predicted and actual outputs must both be (M, T), got {predicted.shape}, {actual.shape}")
    per = _columnwise(spearman, predicted, actual)
    return {"per_test_point": per, "mean": float(np.nanmean(per)) if np.isfinite(per).any() else float("nan")}


def loo_changes(loss_fn: LossFn, params, train_batch: dict, test_batch: dict, indices, *, l2: float = 0.0,
                tol: float = 1e-8, max_iter: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Actual change of every test loss on removing each training point of ``indices`` and retraining to
    convergence (:func:`repair_jax.influence.loo.leave_one_out` with the (T,) test losses as the quantity):
    ((K, T) changes, (K,) final gradient norms)."""
    from repair_jax.influence.loo import leave_one_out

    r = leave_one_out(loss_fn, params, train_batch, jax.jit(lambda p: loss_fn(p, test_batch)), indices, l2=l2,
                      tol=tol, max_iter=max_iter)
    return r["actual"], r["grad_norms"]


def loo_correlation(scores, indices, actual_changes) -> dict:
    """Predicted ``-tau_i / n`` (scores (T, N)) vs actual leave-one-out changes (K, T) for the K removed
    ``indices``: Spearman and Pearson per test point and over all (point, test point) pairs."""
    scores = np.asarray(scores, np.float64)
    pred = -scores[:, np.asarray(indices)].T / scores.shape[1]
    actual = np.asarray(actual_changes, np.float64)
    per = _columnwise(spearman, pred, actual)
    return {"spearman_per_test_point": per, "spearman_mean": float(np.nanmean(per)),
            "spearman_all": spearman(pred.ravel(), actual.ravel()), "pearson_all": pearson(pred.ravel(), actual.ravel()),
            "predicted": pred, "actual": actual}


def noisy_label_auc(self_influence, flipped) -> float:
    """ROC AUC (sklearn) of ranking the flipped training points first by ``self_influence`` (N,)."""
    from sklearn.metrics import roc_auc_score

    flipped = np.asarray(flipped, bool)
    if flipped.all() or not flipped.any():
        raise UserError("noisy-label AUC needs both flipped and clean training points")
    return float(roc_auc_score(flipped, np.asarray(self_influence, np.float64)))


def attribution_scores(method: str, loss_fn: LossFn, params, train_batch: dict, test_batch: dict, *,
                       l2: float = 0.0, damping: float = 0.0, tol: float | None = None,
                       max_iter: int | None = None, chunk_size: int | None = None,
                       projection_dim: int = TRAK_DIM) -> np.ndarray:
    """(T, N) scores ``tau(z_t)_i`` in the ``I_up,loss`` convention (Adebayo 2022, Eq. 3.1) for ``method`` of
    :data:`LDS_METHODS`, by its registered ``attribute`` (:mod:`repair_jax.influence.methods`): a method with a
    fitted inverse-HVP operator solves for all T test gradients in one block
    (:func:`repair_jax.influence.fit_influence`), tracin is ``-grad l(z_t) . grad l(z_i)`` at ``params``
    (TracInCP with one checkpoint and learning rate 1), trak uses ``projection_dim`` (the solver options tol
    and max_iter do not apply to either)."""
    return get_influence_method(method).attribute(loss_fn, params, train_batch, test_batch, l2=l2, damping=damping,
                                                  tol=tol, max_iter=max_iter, chunk_size=chunk_size,
                                                  projection_dim=projection_dim)


def self_influence(method: str, loss_fn: LossFn, params, train_batch: dict, indices, *, l2: float = 0.0,
                   damping: float = 0.0, tol: float | None = None, max_iter: int | None = None,
                   chunk_size: int | None = None, projection_dim: int = TRAK_DIM) -> np.ndarray:
    """``g_i^T (H + damping I)^{-1} g_i`` (minus the self-influence I_up(z_i, z_i)) for the training points
    ``indices`` (K,) with ``method``'s curvature, in one block solve (registered ``self_influence``):
    ``||g_i||^2`` for tracin; for trak H is the projected empirical Fisher."""
    return get_influence_method(method).self_influence(loss_fn, params, train_batch, indices, l2=l2, damping=damping,
                                                       tol=tol, max_iter=max_iter, chunk_size=chunk_size,
                                                       projection_dim=projection_dim)
