"""Full-batch training to convergence: the one L-BFGS of repair_jax (``optax.lbfgs``, zoom line search).

Influence functions are checked against retraining (Koh & Liang 2017, as cited in Adebayo 2022, Ch. 3.4;
the LDS of TRAK, Sec. 2), which needs the minimiser of the 0/1-weighted training objective

    sum_i w_i l(z_i) / sum(w) + l2/2 ||theta||^2

to a small gradient norm. :func:`lbfgs` is jit- and vmap-friendly; :func:`retrain` runs it on M weightings
at once, :func:`minimize_objective` on one. The solver runs in the dtype of the parameters: for float64 (a
gradient norm near 1e-8 and below) cast parameters and data to float64 inside ``jax.enable_x64(True)``.
A run that stops above its tolerance (iteration cap, or a line search that no longer moves) is reported
with a :class:`NotConvergedWarning` and its gradient norm.

The gradient-norm tolerance presumes a differentiable objective. A ReLU network's is not on its kinks, and
its minimum can lie there: the gradient norm then stays far above any tolerance however long L-BFGS runs
(the LDS study's 8-unit digits MLP: 3.6e-3 after 7,338 steps, when no step moved it any more, with 9
(point, unit) pre-activations within 1e-12 of zero). A fit that must converge takes a smooth activation
(``activation="softplus"``, :data:`repair_jax.models.MLP_ACTIVATIONS`).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from repair_jax.errors import UserError
from repair_jax.influence.gradients import batch_size_of


class NotConvergedWarning(UserWarning):
    """L-BFGS stopped with a gradient norm above its tolerance."""


class LbfgsResult(NamedTuple):
    x: jax.Array
    grad_norm: jax.Array
    iterations: jax.Array


def lbfgs(objective, x0, *, max_iter: int, tol: float) -> LbfgsResult:
    """Minimises ``objective`` (flat x -> scalar) from ``x0`` with at most ``max_iter`` optax L-BFGS steps,
    stopping once the gradient norm is at most ``tol`` or a step leaves x unchanged (the line search
    found no decrease; nothing more to gain in this precision). A step to a non-finite point is not taken.
    Converged iff ``grad_norm <= tol``. Under ``jax.vmap`` the loop runs until every member has stopped;
    stopped members keep their point."""
    import optax

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(objective)

    def body(carry):
        i, x, state, _, _ = carry
        v, g = value_and_grad(x, state=state)
        gn = jnp.linalg.norm(g)
        u, new_state = opt.update(g, state, x, value=v, grad=g, value_fn=objective)
        new_x = optax.apply_updates(x, u)
        keep = (gn > tol) & jnp.all(jnp.isfinite(new_x))
        moved = keep & jnp.any(new_x != x)
        pick = lambda a, b: jnp.where(keep, a, b)
        return i + moved, pick(new_x, x), jax.tree_util.tree_map(pick, new_state, state), gn, moved

    def running(carry):
        i, _, _, gn, moved = carry
        return (i < max_iter) & (gn > tol) & moved

    init = (jnp.asarray(0), x0, opt.init(x0), jnp.asarray(jnp.inf, x0.dtype), jnp.asarray(True))
    i, x, _, _, _ = jax.lax.while_loop(running, body, init)
    return LbfgsResult(x, jnp.linalg.norm(jax.grad(objective)(x)), i)


def weighted_objective(loss_fn, unravel, batch: dict, l2: float):
    """(flat theta, w (N,)) -> ``sum_i w_i l(z_i) / sum(w) + l2/2 ||theta||^2``."""
    def f(x, w):
        return jnp.sum(w * loss_fn(unravel(x), batch)) / jnp.sum(w) + 0.5 * l2 * jnp.sum(x * x)
    return f


def warn_if_not_converged(grad_norms, tol: float, max_iter: int) -> None:
    """One :class:`NotConvergedWarning` naming how many of the runs stopped above ``tol``."""
    grad_norms = np.atleast_1d(np.asarray(grad_norms))
    bad = ~(grad_norms <= tol)
    if bad.any():
        warnings.warn(f"L-BFGS did not converge in {bad.sum()} of {bad.size} run(s): gradient norm up to "
                      f"{grad_norms.max():.3g} > tol {tol:.3g} (max_iter {max_iter}, dtype {grad_norms.dtype})",
                      NotConvergedWarning, stacklevel=3)


def retrain(loss_fn, params, batch: dict, weights, *, l2: float = 0.0, max_iter: int = 2000,
            tol: float = 1e-10):
    """Minimises the weighted objective (module docstring) from ``params`` for each row of ``weights``
    (M, N), vmapped (:func:`lbfgs`). Returns (flat parameters (M, P), gradient norms (M,), unravel); warns
    (:class:`NotConvergedWarning`) when a run stops above ``tol``."""
    flat0, unravel = ravel_pytree(params)
    n = batch_size_of(batch)
    weights = jnp.asarray(weights, flat0.dtype)
    if weights.ndim != 2 or weights.shape[1] != n:
        raise UserError(f"training weights must have shape (M, {n}), got {weights.shape}")
    objective = weighted_objective(loss_fn, unravel, batch, l2)
    run = jax.jit(jax.vmap(lambda w: lbfgs(lambda x: objective(x, w), flat0, max_iter=max_iter, tol=tol)))
    res = run(weights)
    norms = np.asarray(res.grad_norm)
    warn_if_not_converged(norms, tol, max_iter)
    return res.x, norms, unravel


def minimize_objective(loss_fn, params, batch: dict, *, l2: float = 0.0, weights=None, tol: float = 1e-10,
                       max_iter: int = 2000):
    """Full-batch L-BFGS (:func:`retrain` with one weighting) of the weighted objective from ``params``;
    ``weights`` (N,) in {0, 1} removes points (default: all kept). Returns (params, final gradient norm)."""
    n = batch_size_of(batch)
    w = np.ones((1, n)) if weights is None else np.asarray(weights, np.float64)[None]
    xs, norms, unravel = retrain(loss_fn, params, batch, w, l2=l2, max_iter=max_iter, tol=tol)
    return unravel(xs[0]), float(norms[0])


def fit_full_batch(ds, y_train: np.ndarray, *, hidden: tuple[int, ...], l2: float, max_iter: int, seed: int,
                   tol: float = 1e-6, dtype=None, train_limit: int | None = None, activation: str | None = None):
    """(loss_fn, params, gradient norm, batch): an MLP with ``hidden`` layers of ``activation`` (None: ReLU;
    :data:`repair_jax.models.MLP_ACTIVATIONS`; none: softmax regression) initialised from ``seed`` and fit by :func:`minimize_objective` on the first ``train_limit`` points of
    (ds.train.x, y_train); ``dtype`` casts the initial parameters and data (float64 under ``jax.enable_x64``)."""
    from repair_jax.classifier import from_linen
    from repair_jax.influence.gradients import ClassifierLoss
    from repair_jax.models import create_model, init_variables

    m = create_model("mlp", ds.num_classes, hidden=tuple(hidden),
                     **({} if activation is None else {"activation": activation}))
    params = init_variables(m, jax.random.PRNGKey(seed), ds.input_shape)["params"]
    loss = ClassifierLoss.from_classifier(from_linen(m, {"params": params}))
    n = len(y_train) if train_limit is None else min(train_limit, len(y_train))
    batch = {"x": jnp.asarray(ds.train.x[:n], dtype), "y": jnp.asarray(y_train[:n])}
    if dtype is not None:
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), params)
    params, gnorm = minimize_objective(loss, params, batch, l2=l2, tol=tol, max_iter=max_iter)
    return loss, params, gnorm, batch
