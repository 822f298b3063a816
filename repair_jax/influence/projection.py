"""Random-projection influence (TRAK-style): per-example gradients projected to k dimensions, the
projected-gradient kernel factorised once, scores for many test points, ensembled over models.

Source: Park et al. 2023, "TRAK: Attributing Model Behavior at Scale" (ICML; cited in issue 17), Sec. 3
and its Algorithm 1: linearise the model around its trained parameters, reduce the gradient features
with a Johnson-Lindenstrauss random projection, ``phi_i = R^T grad f(z_i)``, attribute as a linear model
on those features does, ``tau(z_t) = phi_t^T (Phi^T Phi)^{-1} Phi^T Q``, and average over several
models ("ensembling").

* :func:`repair_jax.influence.projection.project_gradients`: ``Phi = G R`` (N, k) for the (N, P)
  per-example gradients G (:func:`repair_jax.influence.per_example_grads`, computed ``chunk_size``
  examples at a time and sharded over the local devices as it does) and a random (P, k) matrix R with
  ``E[R R^T] = I``: entries +-1/sqrt(k) (``rademacher``) or N(0, 1/k) (``gaussian``). Row j of R is drawn
  from ``jax.random.fold_in(PRNGKey(seed), j)``, so R depends on the seed only, never on how it is cut:
  when ``P * k`` floats exceed :data:`repair_jax.influence.projection.MAX_PROJECTION_BYTES` (or
  ``param_block`` is given) R is generated ``param_block`` rows at a time inside each chunk's product and
  never held whole; otherwise it is generated once and reused. Memory: one gradient chunk
  ``chunk_size * P``, R or one block of it, and the result ``N * k``; never ``N * P``.
* :func:`repair_jax.influence.projection.fit_projected` ->
  :class:`repair_jax.influence.projection.ProjectedFit`: per model, Phi of the training points and the
  Cholesky factor of the kernel ``K = Phi^T Phi + damping I`` (k x k);
  :meth:`repair_jax.influence.projection.ProjectedFit.scores` gives ``-phi_t^T K^{-1} phi_i`` (M, N), the
  sign of ``I_up,loss`` (positive: upweighting z_i raises the test loss), averaged over the models;
  :meth:`repair_jax.influence.projection.ProjectedFit.self_influence` ``phi_i^T K^{-1} phi_i``.

What this is, precisely: a projected influence of the *loss* with the empirical Fisher ``G^T G / N``
(outer products of the per-example loss gradients, a Gauss-Newton-type approximation) in place of the
Hessian. With R square and invertible and no damping the scores equal ``-g_t^T (G^T G)^{-1} g_i``, i.e.
``1/N`` times ``I_up,loss`` (Adebayo 2022, Eq. 3.1) with the Hessian of the mean training loss replaced by
``G^T G / N``. What of TRAK is *not* reproduced: (1) its model output function, the margin
``log(p / (1 - p))`` of the correct class: we project the gradient of the per-example loss instead;
(2) hence its ``Q = diag(1 - p_i)`` reweighting of the training points in
``tau = phi_t^T (Phi^T Phi)^{-1} Phi^T Q``; (3) the soft-thresholding (sparsification) of the ensembled
scores; (4) retraining or checkpointing the ensemble's models, which the caller supplies. The optional
ridge ``damping`` (default 0, as in the formula above) is ours. Reproduced: the random projection of
per-example gradients, the kernel solve and the average of the per-model scores (ensembling).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from repair_jax.errors import UserError, check_seed
from repair_jax.influence.gradients import LossFn, batch_size_of, map_gradient_chunks

PROJECTIONS = ("rademacher", "gaussian")
#: R is generated whole, once, when ``P * k`` floats take at most this many bytes (and no ``param_block``
#: is given); above it, in blocks of :data:`repair_jax.influence.projection.BLOCK_BYTES`, regenerated per
#: example chunk.
MAX_PROJECTION_BYTES = 512 * 1024 ** 2
BLOCK_BYTES = 64 * 1024 ** 2


def projection_rows(key, rows, k: int, kind: str, dtype) -> jax.Array:
    """Rows ``rows`` (R,) of the (P, k) projection: row j from ``fold_in(key, j)``, entries +-1/sqrt(k)
    (rademacher) or N(0, 1/k) (gaussian), so ``E[R R^T] = I`` (TRAK Sec. 3, the random projection). (R, k)."""
    def one(j):
        sub = jax.random.fold_in(key, j)
        if kind == "gaussian":
            return jax.random.normal(sub, (k,), dtype)
        return jax.random.rademacher(sub, (k,), dtype)
    return jax.vmap(one)(rows) / jnp.sqrt(jnp.asarray(k, dtype))


@functools.partial(jax.jit, static_argnames=("k", "kind", "block"))
def _project_blocked(g, key, k: int, kind: str, block: int):
    """``g @ R`` for g (C, P), R generated ``block`` rows at a time inside a loop (never whole);
    the columns of g are zero-padded to a multiple of ``block``."""
    c, p = g.shape
    nb = -(-p // block)
    if nb * block != p:
        g = jnp.pad(g, ((0, 0), (0, nb * block - p)))

    def body(j, acc):
        rows = j * block + jnp.arange(block)
        part = jax.lax.dynamic_slice_in_dim(g, j * block, block, axis=1)
        return acc + part @ projection_rows(key, rows, k, kind, g.dtype)
    return jax.lax.fori_loop(0, nb, body, jnp.zeros((c, k), g.dtype))


@functools.partial(jax.jit, static_argnames=("p", "k", "kind", "dtype"))
def _whole_projection(key, p: int, k: int, kind: str, dtype):
    return projection_rows(key, jnp.arange(p), k, kind, dtype)


@jax.jit
def _matmul(g, r):
    return g @ r


def _projector(p: int, k: int, kind: str, seed: int, param_block: int | None, dtype):
    """``g (C, P) -> g @ R (C, k)``: R whole (generated once) or in blocks (see the module doc)."""
    key = jax.random.PRNGKey(seed)
    itemsize = np.dtype(dtype).itemsize
    if param_block is None and p * k * itemsize <= MAX_PROJECTION_BYTES:
        r = _whole_projection(key, p, k, kind, np.dtype(dtype))
        return lambda g: _matmul(g, r)
    block = int(param_block) if param_block is not None else max(1, BLOCK_BYTES // (k * itemsize))
    block = min(block, p)
    return lambda g: _project_blocked(g, key, k, kind, block)


def _check_options(k, kind: str, seed, chunk_size, param_block) -> None:
    check_seed("the projection seed", seed)
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise UserError(f"the projection dimension k must be an integer >= 1, got {k!r}")
    if kind not in PROJECTIONS:
        raise UserError(f"unknown projection {kind!r}; choose one of {', '.join(PROJECTIONS)}")
    for name, v in (("chunk_size", chunk_size), ("param_block", param_block)):
        if v is not None and (not isinstance(v, (int, np.integer)) or v < 1):
            raise UserError(f"{name} must be an integer >= 1 or None, got {v!r}")


def project_gradients(loss_fn: LossFn, params, batch: dict, k: int, *, kind: str = "rademacher", seed: int = 0,
                      chunk_size: int | None = None, param_block: int | None = None) -> jax.Array:
    """``Phi = G R`` (N, k): the per-example gradients of ``batch`` times the random (P, k) projection
    (TRAK Sec. 3; module docstring), never materialising G (N, P). Deterministic in ``seed``; the same
    for every ``chunk_size`` and ``param_block`` up to floating-point summation order."""
    _check_options(k, kind, seed, chunk_size, param_block)
    flat = ravel_pytree(params)[0]
    project = _projector(int(flat.size), int(k), kind, seed, param_block, flat.dtype)
    return map_gradient_chunks(project, loss_fn, params, batch, chunk_size=chunk_size)


@jax.jit
def _kernel_cholesky(phi, damping):
    """Lower Cholesky factor of ``Phi^T Phi + damping I`` and whether it is numerically positive definite:
    finite, and every squared pivot above ``k eps`` times the largest diagonal entry (a smaller one means
    the kernel is singular to working precision and its solves would be noise)."""
    kernel = phi.T @ phi + damping * jnp.eye(phi.shape[1], dtype=phi.dtype)
    c = jnp.linalg.cholesky(kernel)
    pivots = jnp.diagonal(c) ** 2
    floor = phi.shape[1] * jnp.finfo(phi.dtype).eps * jnp.max(jnp.diagonal(kernel))
    return c, jnp.all(jnp.isfinite(c)) & jnp.all(pivots > floor)


@dataclasses.dataclass
class ProjectedFit:
    """What :func:`repair_jax.influence.projection.fit_projected` computed once: per model the projected
    training gradients ``phis[m]`` (N, k) and the lower Cholesky factor ``factors[m]`` of
    ``Phi^T Phi + damping I`` (k, k)."""

    loss_fn: Any
    params_list: list
    train_batch: dict
    k: int
    kind: str
    seed: int
    damping: float
    chunk_size: int | None
    param_block: int | None
    phis: list
    factors: list
    project: Any = dataclasses.field(repr=False, default=None)

    def test_features(self, test_batch: dict) -> list:
        """Per model the (M, k) projected test gradients ``phi_t``."""
        _check_like(self.train_batch, test_batch)
        return [map_gradient_chunks(self.project, self.loss_fn, p, test_batch, chunk_size=self.chunk_size)
                for p in self.params_list]

    def scores(self, test_batch: dict) -> jax.Array:
        """(M, N) ``-phi_t^T (Phi^T Phi + damping I)^{-1} phi_i`` averaged over the models (TRAK Sec. 3,
        Algorithm 1 without Q; the sign of ``I_up,loss``, Adebayo 2022, Eq. 3.1)."""
        feats = self.test_features(test_batch)
        return sum(_kernel_scores(c, phi, f) for c, phi, f in zip(self.factors, self.phis, feats)) / len(feats)

    def self_influence(self, indices) -> jax.Array:
        """(K,) ``phi_i^T (Phi^T Phi + damping I)^{-1} phi_i`` for the training points ``indices``, averaged
        over the models (minus the self-influence, as :func:`repair_jax.influence.self_influence`)."""
        idx = np.asarray(indices, int).reshape(-1)
        n = self.phis[0].shape[0]
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise UserError(f"training indices must lie in [0, {n}), got {idx.min()}..{idx.max()}")
        return sum(_kernel_quadratic(c, phi[idx]) for c, phi in zip(self.factors, self.phis)) / len(self.phis)


@jax.jit
def _kernel_scores(factor, phi, feats):
    """``-feats K^{-1} phi^T`` (M, N) for K = factor factor^T."""
    return -(jax.scipy.linalg.cho_solve((factor, True), feats.T).T @ phi.T)


@jax.jit
def _kernel_quadratic(factor, rows):
    """``rows_i^T K^{-1} rows_i`` (K,)."""
    return jnp.sum(rows * jax.scipy.linalg.cho_solve((factor, True), rows.T).T, axis=1)


def _check_like(train_batch: dict, test_batch: dict) -> None:
    """UserError unless ``test_batch`` has the train batch's keys and per-example shapes."""
    a, b = jax.tree_util.tree_structure(train_batch), jax.tree_util.tree_structure(test_batch)
    shapes = lambda t: [tuple(np.shape(x)[1:]) for x in jax.tree_util.tree_leaves(t)]
    if a != b or shapes(train_batch) != shapes(test_batch):
        raise UserError(f"test batch {shapes(test_batch)} does not match the training batch {shapes(train_batch)} "
                        "(keys and per-example shapes)")
    if batch_size_of(test_batch) == 0:
        raise UserError("the test batch is empty")


def _check_params_list(params_list: Sequence) -> list:
    if isinstance(params_list, dict) or not isinstance(params_list, (list, tuple)):
        raise UserError("params_list must be a list of parameter pytrees (pass [params] for one model)")
    if not params_list:
        raise UserError("params_list is empty: fit_projected needs at least one model")

    def layout(p):
        return jax.tree_util.tree_structure(p), [np.shape(a) for a in jax.tree_util.tree_leaves(p)]
    for i, p in enumerate(params_list[1:], 1):
        if layout(p) != layout(params_list[0]):
            raise UserError(f"model {i} of params_list has other parameter shapes than model 0")
    return list(params_list)


def fit_projected(loss_fn: LossFn, params_list: Sequence, train_batch: dict, k: int, *, damping: float = 0.0,
                  kind: str = "rademacher", seed: int = 0, chunk_size: int | None = 512,
                  param_block: int | None = None) -> ProjectedFit:
    """Fits TRAK-style projected influence (module docstring): per model of ``params_list`` (checkpoints or
    independently trained models of one architecture; the same projection R for all) the projected training
    gradients Phi (N, k) and the Cholesky factor of ``Phi^T Phi + damping I``. UserError when that kernel is
    not positive definite (k > N or rank-deficient gradients without damping)."""
    params_list = _check_params_list(params_list)
    _check_options(k, kind, seed, chunk_size, param_block)
    if not damping >= 0:
        raise UserError(f"damping must be >= 0, got {damping}")
    if batch_size_of(train_batch) == 0:
        raise UserError("the training batch is empty")
    flat = ravel_pytree(params_list[0])[0]
    project = _projector(int(flat.size), int(k), kind, seed, param_block, flat.dtype)
    phis, factors = [], []
    for i, params in enumerate(params_list):
        phi = map_gradient_chunks(project, loss_fn, params, train_batch, chunk_size=chunk_size)
        c, ok = _kernel_cholesky(phi, jnp.asarray(damping, phi.dtype))
        if not bool(ok):
            raise UserError(f"the projected kernel Phi^T Phi + {damping:g} I of model {i} is not positive definite "
                            f"(k = {k}, N = {phi.shape[0]}): add damping or lower k")
        phis.append(phi)
        factors.append(c)
    return ProjectedFit(loss_fn, params_list, train_batch, int(k), kind, seed, float(damping), chunk_size,
                        param_block, phis, factors, project)

