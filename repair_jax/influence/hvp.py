"""Hessian-vector products of the training objective and inverse-HVP solvers.

Source: 002_97a11baaf249c571.txt Ch. 3.4 and Ch. 6.4: every influence estimate needs
``H^{-1} v`` with ``H`` the Hessian of the training objective at the trained parameters. Our
training objective is the one the model was fit with (``repair_jax.train.erm_objective``):

    R(theta) = (1/n) sum_i l(z_i, theta) + l2 * 0.5 ||theta||^2

and every solver works on the damped system ``(H + damping I) x = b``.

Solvers (each returns an :class:`IHVPResult` with iterations, relative residual
``||(H + damping I) x - b|| / ||b||`` and a ``converged`` flag; a solve that does not reach its
tolerance emits an :class:`InfluenceWarning`, a non-finite one raises :class:`UserError`):

* ``explicit``: the dense Hessian (built from P Hessian-vector products) and a direct solve;
  for small models only (P <= ``MAX_EXPLICIT_PARAMS``).
* ``cg``: conjugate gradients on HVPs (H must be positive definite: add damping for non-convex
  models).
* ``lissa``: the stochastic recursion of Agarwal et al. used by Koh & Liang,
  ``h_j = b + h_{j-1} - (H + damping I) h_{j-1} / scale``, ``x = h / scale``; it converges when
  ``scale`` exceeds the largest eigenvalue of ``H + damping I``. With ``lissa_batch_size`` each
  step uses the HVP of a random mini-batch (the stochastic estimator); by default the full batch.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from repair_jax.errors import UserError
from repair_jax.influence.gradients import LossFn, _chunks, _take, batch_size_of
from repair_jax.objectives import l2_penalty

SOLVERS = ("explicit", "cg", "lissa")
MAX_EXPLICIT_PARAMS = 20_000


class InfluenceWarning(RuntimeWarning):
    """An inverse-HVP solve that did not converge (its result is returned, flagged)."""


@dataclasses.dataclass
class IHVPResult:
    """Solution ``x`` of ``(H + damping I) x = b`` (a pytree like params) and how it was reached."""

    x: Any
    method: str
    iterations: int
    residual: float
    converged: bool
    tol: float

    def summary(self) -> dict:
        return {"method": self.method, "iterations": int(self.iterations),
                "residual": float(self.residual), "converged": bool(self.converged), "tol": float(self.tol)}


# ----------------------------------------------------------------------------- objective and HVP

def training_objective(loss_fn: LossFn, params, batch: dict, l2: float = 0.0) -> jax.Array:
    """R(theta) = mean_i l(z_i, theta) + l2 * 0.5 ||theta||^2 (the ERM objective, 002 Sec. 6.2)."""
    return jnp.mean(loss_fn(params, batch)) + l2 * l2_penalty(params)


@functools.partial(jax.jit, static_argnames=("loss_fn",))
def _chunk_hvp(loss_fn, params, batch, mask, v):
    """Forward-over-reverse HVP of sum_i mask_i l_i."""
    f = lambda p: jnp.sum(mask * loss_fn(p, batch))
    return jax.jvp(jax.grad(f), (params,), (v,))[1]


def make_hvp(loss_fn: LossFn, params, batch: dict, *, l2: float = 0.0, damping: float = 0.0,
             chunk_size: int | None = None) -> Callable[[Any], Any]:
    """``v -> (H + damping I) v`` for the Hessian H of :func:`training_objective` at ``params``.

    Forward-over-reverse (``jax.jvp`` of ``jax.grad``), accumulated over chunks of
    ``chunk_size`` examples so memory stays bounded.
    """
    if damping < 0:
        raise UserError(f"damping must be >= 0, got {damping}")
    n = batch_size_of(batch)
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    size, spans = _chunks(n, chunk_size)
    parts = []
    for start, count in spans:
        chunk = _take(batch, start, size, n) if size != n else batch
        mask = (jnp.arange(size) < count).astype(dtype) / jnp.asarray(n, dtype)
        parts.append((chunk, mask))

    def hvp(v):
        out = None
        for chunk, mask in parts:
            h = _chunk_hvp(loss_fn, params, chunk, mask, v)
            out = h if out is None else jax.tree_util.tree_map(jnp.add, out, h)
        return jax.tree_util.tree_map(lambda h, x: h + (l2 + damping) * x, out, v)

    return hvp


def flat_operator(hvp: Callable[[Any], Any], params):
    """(matvec on flat vectors, ravel, unravel) for a pytree operator."""
    flat0, unravel = ravel_pytree(params)
    matvec = lambda x: ravel_pytree(hvp(unravel(x.astype(flat0.dtype))))[0]
    return matvec, (lambda t: ravel_pytree(t)[0]), unravel


def hessian_matrix(loss_fn: LossFn, params, batch: dict, *, l2: float = 0.0, damping: float = 0.0,
                   block: int = 256) -> jax.Array:
    """The dense (P, P) matrix H + damping I, built from P HVPs in blocks of ``block`` columns."""
    flat0, unravel = ravel_pytree(params)
    p = flat0.shape[0]
    if p > MAX_EXPLICIT_PARAMS:
        raise UserError(f"the explicit Hessian of {p} parameters is too large (limit "
                        f"{MAX_EXPLICIT_PARAMS}); use the cg or lissa solver")

    @jax.jit
    def cols(basis):
        def one(e):
            v = unravel(e)
            f = lambda q: training_objective(loss_fn, q, batch, l2)
            return ravel_pytree(jax.jvp(jax.grad(f), (params,), (v,))[1])[0]
        return jax.vmap(one)(basis)

    block = min(block, p)
    padded = -(-p // block) * block  # equal blocks: one compilation
    eye = jnp.eye(padded, p, dtype=flat0.dtype)
    h = jnp.concatenate([cols(eye[s:s + block]) for s in range(0, padded, block)])[:p]
    h = 0.5 * (h + h.T)
    return h + damping * jnp.eye(p, dtype=h.dtype)


# ----------------------------------------------------------------------------- solvers (flat)

def _finish(x, matvec, b, method, iterations, tol, unravel) -> IHVPResult:
    bn = float(jnp.linalg.norm(b))
    res = float(jnp.linalg.norm(matvec(x) - b)) / (bn if bn > 0 else 1.0)
    if not (np.isfinite(res) and bool(jnp.all(jnp.isfinite(x)))):
        hint = (" (raise the scale above the largest eigenvalue of H + damping I, or add damping if H has "
                "negative eigenvalues)") if method == "lissa" else \
            " (add damping: the Hessian may not be positive definite)"
        raise UserError(f"the {method} inverse-HVP solve diverged to a non-finite value{hint}")
    converged = res <= tol
    if not converged:
        warnings.warn(f"{method} inverse-HVP solve did not converge: relative residual {res:.3g} > "
                      f"tolerance {tol:.3g} after {iterations} iterations; influence scores are "
                      "approximate (add damping or raise the iteration limit)", InfluenceWarning,
                      stacklevel=3)
    return IHVPResult(unravel(x), method, int(iterations), res, converged, tol)


def solve_explicit(h: jax.Array, b: jax.Array, tol: float = 1e-4):
    """x = H^{-1} b by a direct (Cholesky if positive definite, else LU) solve; (x, min eigenvalue)."""
    evals = jnp.linalg.eigvalsh(h)
    if float(evals[0]) <= 0:
        warnings.warn(f"the Hessian is not positive definite (smallest eigenvalue {float(evals[0]):.3g}); "
                      "add damping", InfluenceWarning, stacklevel=3)
        x = jnp.linalg.solve(h, b)
    else:
        x = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(h), b)
    return x, float(evals[0])


def solve_cg(matvec, b, tol: float = 1e-5, max_iter: int = 1000):
    """Conjugate gradients from x0 = 0; stops at ||r|| <= tol ||b||. Returns (x, iterations)."""
    bn2 = jnp.vdot(b, b)

    def cond(c):
        x, r, p, rs, k = c
        return (k < max_iter) & (rs > (tol ** 2) * bn2)

    def body(c):
        x, r, p, rs, k = c
        hp = matvec(p)
        alpha = rs / jnp.vdot(p, hp)
        x = x + alpha * p
        r = r - alpha * hp
        rs_new = jnp.vdot(r, r)
        p = r + (rs_new / rs) * p
        return x, r, p, rs_new, k + 1

    x0 = jnp.zeros_like(b)
    x, r, p, rs, k = jax.lax.while_loop(cond, body, (x0, b, b, bn2, 0))
    return x, int(k)


def solve_lissa(matvec, b, scale: float, depth: int = 1000, tol: float = 1e-4, check_every: int = 50,
                sample_matvec=None, rng=None, residual_matvec=None):
    """LiSSA: h_j = b + h_{j-1} - A_j h_{j-1} / scale, x = h / scale, A_j the (damped) HVP.

    ``sample_matvec(key, v)`` gives a stochastic HVP (a random mini-batch); otherwise ``matvec``.
    Every ``check_every`` steps the full residual is checked; stops at ``tol``. Returns (x, steps).
    """
    if not scale > 0:
        raise UserError(f"LiSSA scale must be positive, got {scale}")
    step_mv = matvec if sample_matvec is None else None
    h = b
    key = rng if rng is not None else jax.random.PRNGKey(0)
    bn = float(jnp.linalg.norm(b)) or 1.0
    steps = 0

    @jax.jit
    def run_block(h, key):
        def body(carry, k):
            h = carry
            hv = step_mv(h) if step_mv is not None else sample_matvec(k, h)
            return b + h - hv / scale, None
        keys = jax.random.split(key, check_every)
        h, _ = jax.lax.scan(body, h, keys)
        return h

    while steps < depth:
        key, sub = jax.random.split(key)
        h = run_block(h, sub)
        steps += check_every
        x = h / scale
        res = float(jnp.linalg.norm((residual_matvec or matvec)(x) - b)) / bn
        if not np.isfinite(res) or res <= tol:
            break
    return h / scale, steps


# ----------------------------------------------------------------------------- the one entry point

def inverse_hvp(loss_fn: LossFn, params, batch: dict, b, *, method: str = "cg", l2: float = 0.0,
                damping: float = 0.0, tol: float | None = None, max_iter: int | None = None,
                scale: float | None = None, lissa_batch_size: int | None = None, seed: int = 0,
                chunk_size: int | None = None, hessian: jax.Array | None = None) -> IHVPResult:
    """Solves ``(H + damping I) x = b`` for the Hessian H of :func:`training_objective`.

    ``b`` is a pytree like ``params``. ``method``: explicit | cg | lissa. Defaults: tol 1e-5 (cg),
    1e-4 (lissa, explicit); max_iter 1000 (cg), 5000 LiSSA steps. LiSSA's ``scale`` defaults to
    1.1 x the largest eigenvalue of H + damping I (estimated by 30 power iterations).
    ``hessian``: a precomputed dense H + damping I for ``explicit``.
    """
    if method not in SOLVERS:
        raise UserError(f"unknown inverse-HVP solver {method!r}; choose one of {', '.join(SOLVERS)}")
    hvp = make_hvp(loss_fn, params, batch, l2=l2, damping=damping, chunk_size=chunk_size)
    matvec, ravel, unravel = flat_operator(hvp, params)
    matvec = jax.jit(matvec)
    bf = ravel(b)
    if not bool(jnp.all(jnp.isfinite(bf))):
        raise UserError("the right-hand side of the inverse-HVP solve is not finite")
    if method == "explicit":
        tol = 1e-4 if tol is None else tol
        h = hessian if hessian is not None else hessian_matrix(loss_fn, params, batch, l2=l2, damping=damping)
        x, _ = solve_explicit(h, bf, tol)
        return _finish(x, matvec, bf, method, 1, tol, unravel)
    if method == "cg":
        tol = 1e-5 if tol is None else tol
        x, k = solve_cg(matvec, bf, tol, max_iter or 1000)
        return _finish(x, matvec, bf, method, k, tol, unravel)
    tol = 1e-4 if tol is None else tol
    if scale is None:
        scale = 1.1 * largest_eigenvalue(matvec, bf.shape[0], bf.dtype)
    sample_matvec = None
    if lissa_batch_size:
        n = batch_size_of(batch)
        m = min(int(lissa_batch_size), n)

        def sample(key, v):
            idx = jax.random.choice(key, n, (m,), replace=False)
            sub = jax.tree_util.tree_map(lambda a: a[idx], batch)
            f = lambda p: training_objective(loss_fn, p, sub, l2)
            hv = jax.jvp(jax.grad(f), (params,), (unravel(v),))[1]
            return ravel_pytree(hv)[0] + damping * v

        sample_matvec = sample
    x, k = solve_lissa(matvec, bf, scale, max_iter or 5000, tol, sample_matvec=sample_matvec,
                       rng=jax.random.PRNGKey(seed))
    return _finish(x, matvec, bf, method, k, tol, unravel)


def largest_eigenvalue(matvec, p: int, dtype=jnp.float32, iters: int = 30, seed: int = 0) -> float:
    """Power-iteration estimate of the largest eigenvalue of a symmetric PSD operator."""
    v = jax.random.normal(jax.random.PRNGKey(seed), (p,), dtype)
    v = v / jnp.linalg.norm(v)
    mv = matvec
    lam = 0.0
    for _ in range(iters):
        w = mv(v)
        lam = float(jnp.vdot(v, w))
        v = w / (jnp.linalg.norm(w) + 1e-30)
    return max(lam, 1e-12)
