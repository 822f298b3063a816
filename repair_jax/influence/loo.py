"""Leave-one-out validation of influence estimates (Koh & Liang 2017, as cited in Adebayo 2022, Ch. 3.4).

For each of k training points: remove it, retrain to convergence (warm start from the trained
parameters, full-batch L-BFGS on :func:`repair_jax.influence.training_objective`), and compare the
actual change of the test quantity with the predicted ``-I_up(z_i) / n``.
Run it in float64 (``with jax.enable_x64(True)``) for tight convergence.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
from jax.flatten_util import ravel_pytree

from repair_jax.errors import UserError
from repair_jax.influence.gradients import batch_size_of


def minimize_objective(loss_fn, params, batch: dict, *, l2: float = 0.0, weights=None, tol: float = 1e-10,
                       max_iter: int = 2000):
    """Full-batch L-BFGS (scipy) of ``sum_i w_i l(z_i)/sum(w) + l2/2 ||theta||^2`` from ``params``.

    ``weights`` (N,) in {0, 1} removes points (the objective is the mean over the kept points).
    Returns (params, final gradient norm).
    """
    flat0, unravel = ravel_pytree(params)
    n = batch_size_of(batch)
    w = jnp.ones(n, flat0.dtype) if weights is None else jnp.asarray(weights, flat0.dtype)

    @jax.jit
    def fg(x):
        def f(x):
            p = unravel(x)
            return jnp.sum(w * loss_fn(p, batch)) / jnp.sum(w) + l2 * 0.5 * jnp.sum(x * x)
        return jax.value_and_grad(f)(x)

    def fun(x):
        v, g = fg(jnp.asarray(x, flat0.dtype))
        return float(v), np.asarray(g, np.float64)

    res = scipy.optimize.minimize(fun, np.asarray(flat0, np.float64), jac=True, method="L-BFGS-B",
                                  options={"maxiter": max_iter, "gtol": tol, "ftol": 1e-15, "maxcor": 30})
    x = jnp.asarray(res.x, flat0.dtype)
    return unravel(x), float(np.linalg.norm(fun(res.x)[1]))


def pearson(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def leave_one_out(loss_fn, params, train_batch: dict, quantity_fn, indices, *, l2: float = 0.0,
                  tol: float = 1e-10, max_iter: int = 2000) -> dict:
    """Actual change of ``quantity_fn`` (a scalar, or an array of shape Q such as every test loss) when each
    training point in ``indices`` is removed and the model is retrained to convergence from ``params``.
    Returns {"actual": (k,) + Q, "grad_norms": (k,), "base": q(params retrained on all points), "params"};
    ``params`` is first re-converged on all points."""
    n = batch_size_of(train_batch)
    base_params, _ = minimize_objective(loss_fn, params, train_batch, l2=l2, tol=tol, max_iter=max_iter)
    value = lambda p: np.asarray(quantity_fn(p), np.float64)
    base = value(base_params)
    actual, norms = [], []
    for i in indices:
        if not 0 <= int(i) < n:
            raise UserError(f"training index {i} is out of range [0, {n})")
        w = np.ones(n)
        w[int(i)] = 0
        p_i, gn = minimize_objective(loss_fn, base_params, train_batch, l2=l2, weights=w, tol=tol,
                                     max_iter=max_iter)
        actual.append(value(p_i) - base)
        norms.append(gn)
    return {"actual": np.asarray(actual), "grad_norms": np.asarray(norms),
            "base": float(base) if base.ndim == 0 else base, "params": base_params}


def spearman(a, b) -> float:
    """Spearman rank correlation (scipy), nan where undefined (as :func:`pearson`)."""
    import scipy.stats

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(scipy.stats.spearmanr(a, b).statistic)


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
    predicted, actual, norms, retrained = [], [], [], []
    for k in ks:
        w = np.ones(n)
        w[order[:int(k)]] = 0
        p_k, gn = minimize_objective(loss_fn, base_params, train_batch, l2=l2, weights=w, tol=tol,
                                     max_iter=max_iter)
        predicted.append(float(-scores[order[:int(k)]].sum() / n))
        actual.append(float(quantity_fn(p_k)) - base)
        norms.append(gn)
        retrained.append(p_k)
    return {"k": np.asarray(ks, int), "predicted": np.asarray(predicted), "actual": np.asarray(actual),
            "grad_norms": np.asarray(norms), "base": base, "base_params": base_params, "params": retrained}
