"""Leave-one-out validation of influence estimates (Koh & Liang 2017, as cited in Adebayo 2022, Ch. 3.4).

For each of k training points: remove it, retrain to convergence (warm start from the trained
parameters, full-batch L-BFGS of :mod:`repair_jax.influence.full_batch`, the k retrainings vmapped), and
compare the actual change of the test quantity with the predicted ``-I_up(z_i) / n``.
Run it in float64 (``with jax.enable_x64(True)``) for tight convergence.
"""

from __future__ import annotations

import numpy as np

from repair_jax.errors import UserError
from repair_jax.influence.full_batch import minimize_objective, retrain
from repair_jax.influence.gradients import batch_size_of


def _retrained_changes(loss_fn, base_params, train_batch: dict, quantity_fn, removed, *, l2, tol, max_iter):
    """Retrains from ``base_params`` once per list of ``removed`` training indices; returns
    ([q(retrained) as float64 arrays], (k,) gradient norms, [retrained params])."""
    n = batch_size_of(train_batch)
    weights = np.ones((len(removed), n))
    for row, idx in zip(weights, removed):
        row[np.asarray(idx, int)] = 0
    xs, norms, unravel = retrain(loss_fn, base_params, train_batch, weights, l2=l2, tol=tol, max_iter=max_iter)
    params = [unravel(x) for x in xs]
    return [np.asarray(quantity_fn(p), np.float64) for p in params], norms, params


def leave_one_out(loss_fn, params, train_batch: dict, quantity_fn, indices, *, l2: float = 0.0,
                  tol: float = 1e-10, max_iter: int = 2000) -> dict:
    """Actual change of ``quantity_fn`` (a scalar, or an array of shape Q such as every test loss) when each
    training point in ``indices`` is removed and the model is retrained to convergence from ``params``.
    Returns {"actual": (k,) + Q, "grad_norms": (k,), "base": q(params retrained on all points), "params"};
    ``params`` is first re-converged on all points."""
    n = batch_size_of(train_batch)
    for i in indices:
        if not 0 <= int(i) < n:
            raise UserError(f"training index {i} is out of range [0, {n})")
    base_params, _ = minimize_objective(loss_fn, params, train_batch, l2=l2, tol=tol, max_iter=max_iter)
    base = np.asarray(quantity_fn(base_params), np.float64)
    values, norms, _ = _retrained_changes(loss_fn, base_params, train_batch, quantity_fn, [[int(i)] for i in indices],
                                          l2=l2, tol=tol, max_iter=max_iter)
    return {"actual": np.asarray([v - base for v in values]), "grad_norms": norms,
            "base": float(base) if base.ndim == 0 else base, "params": base_params}


def remove_top_k(loss_fn, params, train_batch: dict, quantity_fn, scores, ks, *, l2: float = 0.0,
                 tol: float = 1e-10, max_iter: int = 2000) -> dict:
    """Group removal check of an influence ranking: for each k in ``ks``, remove the k training points
    with the largest ``scores`` (I_up on ``quantity_fn``: the k most harmful), retrain to convergence
    warm-started from ``params`` re-converged on all points (L-BFGS, :func:`minimize_objective`), and
    compare the actual change of ``quantity_fn`` with the first-order prediction sum_{removed} -I_up / n.

    ``scores`` should be computed at converged parameters. Returns {"k": (m,), "predicted": (m,),
    "actual": (m,), "grad_norms": (m,), "base": q on all points, "base_params", "params": [m retrained]}.
    """
    n = batch_size_of(train_batch)
    scores = np.asarray(scores, np.float64)
    if scores.shape != (n,):
        raise UserError(f"scores have shape {scores.shape}, expected ({n},)")
    if not ks or any(not 0 < int(k) < n for k in ks):
        raise UserError(f"every k must lie in [1, {n - 1}], got {ks}")
    base_params, _ = minimize_objective(loss_fn, params, train_batch, l2=l2, tol=tol, max_iter=max_iter)
    base = float(quantity_fn(base_params))
    order = np.argsort(-scores, kind="stable")
    removed = [order[:int(k)] for k in ks]
    values, norms, retrained = _retrained_changes(loss_fn, base_params, train_batch, quantity_fn, removed, l2=l2,
                                                  tol=tol, max_iter=max_iter)
    return {"k": np.asarray(ks, int), "predicted": np.asarray([-scores[r].sum() / n for r in removed]),
            "actual": np.asarray([float(v) - base for v in values]), "grad_norms": norms, "base": base,
            "base_params": base_params, "params": retrained}
