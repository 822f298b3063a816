"""Hessian-vector products of the training objective and inverse-HVP solvers.

Source: Adebayo 2022, Ch. 3.4 and Ch. 6.4: every influence estimate needs
``H^{-1} v`` with ``H`` the Hessian of the training objective at the trained parameters. Our
training objective is the one the model was fit with (``repair_jax.train.erm_objective``):

    R(theta) = (1/n) sum_i l(z_i, theta) + l2 * 0.5 ||theta||^2

and every solver works on the damped system ``(H + damping I) x = b``.

Solvers (each returns an :class:`IHVPResult` with iterations, relative residual
``||(H + damping I) x - b|| / ||b||``, a ``converged`` flag and a status: converged, not_converged
(residual above the tolerance but below 1) or diverged (residual above 1, i.e. worse than x = 0, or a
LiSSA residual that keeps growing); a solve that does not converge emits an :class:`InfluenceWarning`
saying which, a non-finite one raises :class:`UserError`). ``relative_damping`` sets damping to a
multiple of H's largest eigenvalue (:func:`largest_eigenvalue`), the scale-free default of
``repair-jax influence``. :func:`solve_cg` is the project's conjugate-gradient iteration, pure and
jittable (the linear solve of model guiding's implicit differentiation, through :func:`cg_solve_tree`);
:func:`solve_cg_block` runs the same iteration from the host in jitted segments for the influence solves,
so a long solve reports its progress and a diverging one (a residual that grows, or stalls after negative
curvature) stops early with the damping that would converge (:func:`damping_advice`).

* ``explicit``: the dense Hessian (built from P Hessian-vector products) and a direct solve;
  for small models only (P <= ``MAX_EXPLICIT_PARAMS``).
* ``cg``: conjugate gradients on HVPs (H must be positive definite: add damping for non-convex
  models; a diverging solve names the damping).
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
    """Solution ``x`` of ``(H + damping I) x = b`` (a pytree like params) and how it was reached.

    ``status``: converged | not_converged (relative residual in (tol, 1]) | diverged (worse than
    x = 0, or growing with the iterations). ``damping`` is the damping used; ``largest_eigenvalue``
    the power-iteration estimate of H + damping I's when one was made (relative damping, LiSSA's scale).
    """

    x: Any
    method: str
    iterations: int
    residual: float
    converged: bool
    tol: float
    status: str = "converged"
    damping: float = 0.0
    largest_eigenvalue: float | None = None

    def summary(self) -> dict:
        out = {"method": self.method, "status": self.status, "iterations": int(self.iterations),
               "residual": float(self.residual), "converged": bool(self.converged), "tol": float(self.tol),
               "damping": float(self.damping)}
        if self.largest_eigenvalue is not None:
            out["largest_eigenvalue"] = float(self.largest_eigenvalue)
        return out


# ----------------------------------------------------------------------------- objective and HVP

def training_objective(loss_fn: LossFn, params, batch: dict, l2: float = 0.0) -> jax.Array:
    """R(theta) = mean_i l(z_i, theta) + l2 * 0.5 ||theta||^2 (the ERM objective, Adebayo 2022, Sec. 6.2)."""
    return jnp.mean(loss_fn(params, batch)) + l2 * l2_penalty(params)


@functools.partial(jax.jit, static_argnames=("loss_fn",))
def _chunk_hvp(loss_fn, params, batch, mask, v):
    """Forward-over-reverse HVP of sum_i mask_i l_i."""
    f = lambda p: jnp.sum(mask * loss_fn(p, batch))
    return jax.jvp(jax.grad(f), (params,), (v,))[1]


def _hvp_parts(batch: dict, dtype, chunk_size: int | None) -> list:
    """``[(chunk, mask), ...]``: the batch in chunks of ``chunk_size`` (the last one padded) and the weights
    ``1/n`` of its real rows (0 for the padding)."""
    n = batch_size_of(batch)
    size, spans = _chunks(n, chunk_size)
    parts = []
    for start, count in spans:
        chunk = _take(batch, start, size, n) if size != n else batch
        mask = (jnp.arange(size) < count).astype(dtype) / jnp.asarray(n, dtype)
        parts.append((chunk, mask))
    return parts


def _summed_hvp(loss_fn, params, parts, v):
    out = None
    for chunk, mask in parts:
        h = _chunk_hvp(loss_fn, params, chunk, mask, v)
        out = h if out is None else jax.tree_util.tree_map(jnp.add, out, h)
    return out


def make_hvp(loss_fn: LossFn, params, batch: dict, *, l2: float = 0.0, damping: float = 0.0,
             chunk_size: int | None = None) -> Callable[[Any], Any]:
    """``v -> (H + damping I) v`` for the Hessian H of :func:`training_objective` at ``params``.

    Forward-over-reverse (``jax.jvp`` of ``jax.grad``), accumulated over chunks of
    ``chunk_size`` examples so memory stays bounded.
    """
    if damping < 0:
        raise UserError(f"damping must be >= 0, got {damping}")
    parts = _hvp_parts(batch, jax.tree_util.tree_leaves(params)[0].dtype, chunk_size)

    def hvp(v):
        return jax.tree_util.tree_map(lambda h, x: h + (l2 + damping) * x, _summed_hvp(loss_fn, params, parts, v), v)

    return hvp


@functools.partial(jax.jit, static_argnames=("loss_fn", "unravel"))
def _flat_shifted_hvp(loss_fn, unravel, params, parts, shift, x):
    """``(H + shift I) x`` on flat vectors. Every array (parameters, data chunks) is an argument, never a
    closed-over constant: XLA tries to constant-fold a network applied to constant data (a CNN's first
    convolutions over thousands of images took minutes to compile)."""
    flat0 = ravel_pytree(params)[0]
    return ravel_pytree(_summed_hvp(loss_fn, params, parts, unravel(x.astype(flat0.dtype))))[0] + shift * x


class _BoundHVP(tuple):
    """:func:`_flat_shifted_hvp` bound to ``(loss_fn, unravel)``, equal to (and hashed as) another binding of
    the same two: the static part of :func:`shifted_operator`'s Partial, so a jitted solver taking the
    operator compiles once per loss and parameter structure, not once per operator (``functools.partial``
    compares by identity)."""

    def __new__(cls, loss_fn, unravel):
        return super().__new__(cls, (loss_fn, unravel))

    def __call__(self, params, parts, shift, x):
        return _flat_shifted_hvp(self[0], self[1], params, parts, shift, x)


def shifted_operator(loss_fn: LossFn, params, batch: dict, shift: float = 0.0, chunk_size: int | None = None,
                     unravel=None, parts=None) -> jax.tree_util.Partial:
    """``x -> (H + shift I) x`` on flat (P,) vectors as a :class:`jax.tree_util.Partial` (a pytree whose
    leaves are the parameters and the data chunks): a jitted solver can take it as an argument, so the data
    reach the compiled code as inputs, not constants, and two operators of the same loss and parameter
    structure share its compiled code."""
    unravel = unravel or ravel_pytree(params)[1]
    parts = parts if parts is not None else _hvp_parts(batch, ravel_pytree(params)[0].dtype, chunk_size)
    return jax.tree_util.Partial(_BoundHVP(loss_fn, unravel), params, parts,
                                 jnp.asarray(shift, ravel_pytree(params)[0].dtype))


@functools.partial(jax.jit, static_argnames=("loss_fn", "unravel"))
def _hessian_columns(loss_fn, unravel, params, batch, l2, basis):
    """The HVPs ``H e`` for the rows ``e`` of ``basis`` (parameters and data as inputs, see
    :func:`_flat_shifted_hvp`)."""
    def one(e):
        f = lambda q: training_objective(loss_fn, q, batch, l2)
        return ravel_pytree(jax.jvp(jax.grad(f), (params,), (unravel(e),))[1])[0]
    return jax.vmap(one)(basis)


def hessian_matrix(loss_fn: LossFn, params, batch: dict, *, l2: float = 0.0, damping: float = 0.0,
                   block: int = 256) -> jax.Array:
    """The dense (P, P) matrix H + damping I, built from P HVPs in blocks of ``block`` columns."""
    flat0, unravel = ravel_pytree(params)
    p = flat0.shape[0]
    if p > MAX_EXPLICIT_PARAMS:
        raise UserError(f"the explicit Hessian of {p} parameters is too large (limit "
                        f"{MAX_EXPLICIT_PARAMS}); use the cg or lissa solver")

    block = min(block, p)
    padded = -(-p // block) * block  # equal blocks: one compilation
    eye = jnp.eye(padded, p, dtype=flat0.dtype)
    h = jnp.concatenate([_hessian_columns(loss_fn, unravel, params, batch, l2, eye[s:s + block])
                         for s in range(0, padded, block)])[:p]
    h = 0.5 * (h + h.T)
    return h + damping * jnp.eye(p, dtype=h.dtype)


# ----------------------------------------------------------------------------- solvers (flat)

def _status(res: float, tol: float, growing: bool = False) -> str:
    """converged (res <= tol), diverged (worse than x = 0, i.e. res > 1, or a growing residual) or
    not_converged (better than zero, not yet at the tolerance)."""
    if res <= tol:
        return "converged"
    return "diverged" if (res > 1.0 or growing) else "not_converged"


def _finish(x, matvec, b, method, iterations, tol, unravel, growing=False, hint=None, **extra) -> IHVPResult:
    bn = float(jnp.linalg.norm(b))
    res = float(jnp.linalg.norm(matvec(x) - b)) / (bn if bn > 0 else 1.0)
    if not (np.isfinite(res) and bool(jnp.all(jnp.isfinite(x)))):
        hint = (" (raise the scale above the largest eigenvalue of H + damping I, or add damping if H has "
                "negative eigenvalues)") if method == "lissa" else \
            " (add damping: the Hessian may not be positive definite)"
        raise UserError(f"the {method} inverse-HVP solve diverged to a non-finite value{hint}")
    status = _status(res, tol, growing)
    if status == "diverged":
        cause = ("H + damping I has a negative eigenvalue or the scale is below its largest eigenvalue: "
                 "add damping or raise the scale") if method == "lissa" else \
            "H + damping I is not positive definite: add damping" + (f"; {hint}" if hint else "")
        warnings.warn(f"{method} inverse-HVP solve diverged: relative residual {res:.3g} after {iterations} "
                      "iterations, " + ("growing with the iterations" if growing else "worse than x = 0") +
                      f"; the result is meaningless ({cause})", InfluenceWarning, stacklevel=3)
    elif status == "not_converged":
        warnings.warn(f"{method} inverse-HVP solve did not converge: relative residual {res:.3g} > "
                      f"tolerance {tol:.3g} after {iterations} iterations; influence scores are "
                      "approximate (add damping or raise the iteration limit)", InfluenceWarning,
                      stacklevel=3)
    return IHVPResult(unravel(x), method, int(iterations), res, status == "converged", tol, status=status, **extra)


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


def solve_cg(matvec, b: jax.Array, tol: float = 1e-5, max_iter: int = 1000):
    """Conjugate gradients on a flat (P,) system from x0 = 0; stops at ||r|| <= tol ||b||.

    The project's one CG (also the linear solve of model guiding's implicit differentiation, see
    :func:`cg_solve_tree`). Pure and jit-compatible: returns (x, iterations) as arrays.
    """
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

    x, r, p, rs, k = jax.lax.while_loop(cond, body, (jnp.zeros_like(b), b, b, bn2, 0))
    return x, k


# CG driven from the host: the iterations run in jitted segments, so that a long solve reports its progress
# and an estimate of the time left, and stops when it diverges instead of running to max_iter.

#: A column whose relative residual is this many times its best so far, with no new best for
#: ``patience`` iterations, has diverged (CG's residual is not monotone, but on a positive definite
#: system it does not grow tenfold for long).
CG_GROWTH = 10.0


@dataclasses.dataclass
class CGReport:
    """What :func:`solve_cg_block` observed besides the solution: per column (M,) the iterations, whether
    it met negative curvature (``p^T A p < 0``: A is not positive definite), whether it was stopped as
    diverging (breakdown, or a residual growing or, after negative curvature, stagnating), and the
    smallest Rayleigh quotient ``p^T A p / p^T p`` of A met (an upper bound on A's smallest eigenvalue)."""

    iterations: np.ndarray
    negative_curvature: np.ndarray
    diverged: np.ndarray
    min_curvature: np.ndarray


@jax.jit
def _cg_segment(op, state, bn2, tol, k_stop):
    """CG iterations on the columns of a (P, M) block until each column converged (relative residual
    <= tol), broke down (``p^T A p = 0``) or reached iteration ``k_stop`` (all inputs traced: one compiled
    program per operator structure, whatever the segment length). Negative curvature does not stop a
    column (CG can still solve an indefinite system); its smallest Rayleigh quotient is recorded."""
    def one(x, r, p, rs, k, curv, stop, bn2):
        def cond(c):
            return (c[4] < k_stop) & (c[3] > tol * tol * bn2) & ~c[6]

        def body(c):
            x, r, p, rs, k, curv, stop = c
            hp = op(p)
            php = jnp.vdot(p, hp)
            curv = jnp.minimum(curv, php / jnp.vdot(p, p))  # a Rayleigh quotient of A (< 0: A is indefinite)
            bad = ~(jnp.abs(php) > 0)  # breakdown (p^T A p = 0 or not finite): no step can be taken
            alpha = jnp.where(bad, 0.0, rs / jnp.where(bad, 1.0, php))
            x = x + alpha * p
            r = r - alpha * hp
            rs_new = jnp.vdot(r, r)
            p = r + (rs_new / rs) * p
            return x, r, p, rs_new, k + 1, curv, bad

        return jax.lax.while_loop(cond, body, (x, r, p, rs, k, curv, stop))

    return jax.vmap(one, in_axes=(1, 1, 1, 0, 0, 0, 0, 0), out_axes=(1, 1, 1, 0, 0, 0, 0))(*state, bn2)


def _as_operator(matvec):
    """A jit argument: the operator itself when it is a pytree (a :class:`jax.tree_util.Partial`), else a
    Partial of it (the function is then its static part)."""
    return matvec if isinstance(matvec, jax.tree_util.Partial) else jax.tree_util.Partial(matvec)


def solve_cg_block(matvec, b, tol: float, max_iter: int, *, progress: bool = False, desc: str = "cg solve",
                   patience: int | None = None, report_after: float = 3.0, report_every: float = 10.0,
                   stream=None):
    """CG (as :func:`solve_cg`) on each column of the (P, M) block ``b`` from x0 = 0, run from the host in
    jitted segments of about a second: ``(x (P, M), CGReport)``.

    A column stops when its relative residual reaches ``tol``, at ``max_iter`` iterations, on breakdown
    (``p^T A p = 0``), or as diverging when ``patience`` iterations (default max(50, max_iter // 10)) have
    brought no new best residual and the residual has grown to :data:`CG_GROWTH` times its best or the
    column has met negative curvature (an indefinite system CG is not solving). With
    ``progress``, a solve running over ``report_after`` seconds prints a line to stderr every
    ``report_every`` seconds: iterations, the worst relative residual and an estimate of the time left
    (from the rate at which the residual has fallen so far)."""
    import sys
    import time

    stream = stream or sys.stderr
    patience = max(50, max_iter // 10) if patience is None else patience
    op = _as_operator(matvec)
    b = jnp.asarray(b)
    m = b.shape[1]
    bn2 = jnp.sum(b * b, axis=0)
    state = (jnp.zeros_like(b), b, b, bn2, jnp.zeros(m, jnp.int32), jnp.full(m, jnp.inf, b.dtype),
             jnp.zeros(m, bool))
    watch = _DivergenceWatch(m, tol, patience, np.asarray(bn2, np.float64))
    tol_arr = jnp.asarray(tol, b.dtype)
    t0 = last_report = time.perf_counter()
    k_done, seg = 0, 5
    while True:
        t = time.perf_counter()
        k_stop = min(max_iter, k_done + seg)
        state = jax.block_until_ready(_cg_segment(op, state, bn2, tol_arr, jnp.asarray(k_stop, jnp.int32)))
        dt = time.perf_counter() - t
        k, res, stopped = np.asarray(state[4]), watch.residuals(state), np.asarray(state[6])
        growing = watch.update(k, res, stopped, np.asarray(state[5]) < 0)
        if growing.any():
            state = state[:6] + (jnp.asarray(stopped | growing),)
        active = (res > tol) & (k < max_iter) & ~stopped & ~growing
        k_done = int(k.max())
        now = time.perf_counter()
        if progress and now - t0 >= report_after and (now - last_report >= report_every or last_report == t0):
            last_report = now
            stream.write(_cg_progress_line(desc, k, res, active, tol, max_iter, now - t0, m) + "\n")
            stream.flush()
        if not active.any() or k_done >= max_iter:
            break
        seg = int(min(max(1, seg * (1.0 / max(dt, 1e-3))), 500, patience))  # about a second, checked often enough
    if progress and last_report != t0:
        stream.write(f"{desc}: done after {k_done} iterations, {time.perf_counter() - t0:.0f} s\n")
    curv = np.asarray(state[5], np.float64)
    breakdown = np.asarray(state[6]) & ~watch.growing & (watch.residuals(state) > tol)
    return state[0], CGReport(np.asarray(state[4]), curv < 0, watch.growing | breakdown, curv)


class _DivergenceWatch:
    """The divergence rule of :func:`solve_cg_block` over its segments: per column the best relative
    residual and its iteration; ``growing`` marks the columns to stop."""

    def __init__(self, m: int, tol: float, patience: int, bn2: np.ndarray):
        self.tol, self.patience, self.bn2 = tol, patience, np.where(bn2 > 0, bn2, 1.0)
        self.best, self.k_best, self.growing = np.full(m, np.inf), np.zeros(m, int), np.zeros(m, bool)

    def residuals(self, state) -> np.ndarray:
        return np.sqrt(np.asarray(state[3], np.float64) / self.bn2)

    def update(self, k, res, stopped, negative) -> np.ndarray:
        improved = res < self.best
        self.best, self.k_best = np.where(improved, res, self.best), np.where(improved, k, self.k_best)
        self.growing |= (~stopped & (res > self.tol) & (k - self.k_best >= self.patience)
                         & ((res > CG_GROWTH * self.best) | negative))
        return self.growing


def _cg_progress_line(desc, k, res, active, tol, max_iter, elapsed, m) -> str:
    """``desc: iteration K of at most MAX, relative residual R (tol T), E s; about S s left``."""
    cols = active if active.any() else np.ones_like(active)
    kk, rr = k[cols].max(), res[cols].max()
    per_iter = elapsed / max(int(k.max()), 1)
    rate = -np.log(max(rr, 1e-300)) / max(int(kk), 1)  # log-residual fall per iteration (from 1 at k = 0)
    left = min(max_iter - kk, np.log(rr / tol) / rate) if rate > 0 else max_iter - kk
    which = f" ({int(active.sum())} of {m} right-hand sides running)" if m > 1 else ""
    return (f"{desc}: iteration {int(kk)} of at most {max_iter}, relative residual {rr:.3g} (tol {tol:.3g}), "
            f"{elapsed:.0f} s; about {max(left, 0) * per_iter:.0f} s left{which}")


def damping_advice(report: CGReport, damping: float, largest_eigenvalue_h: float | None, matvec=None,
                   size: int | None = None, dtype=jnp.float32) -> dict:
    """The damping that would let a diverged CG converge. With negative curvature met, A = H + damping I
    has an eigenvalue <= lambda_min(A) < 0, estimated as the smaller of the Rayleigh quotients CG met and
    (given ``matvec`` on ``size`` parameters) ``lambda_max(A) - mu``, mu the largest eigenvalue of
    ``lambda_max(A) I - A`` by power iteration (50 more HVPs); the suggestion is ``damping - 3 lambda_min(A)``
    (both estimates approach from above, slowly on a wide spectrum: the factor 3 covers it). With a growing residual only (A
    barely positive definite, float rounding wins): ten times the damping. ``{}`` when nothing diverged;
    else ``{"suggested_damping": d}`` plus ``"suggested_relative_damping"`` (d / lambda_max(H)) when H's
    largest eigenvalue is known or estimated."""
    if not report.diverged.any():
        return {}
    lam_h = largest_eigenvalue_h
    if report.negative_curvature.any():
        low = float(np.min(report.min_curvature))
        if matvec is not None and size:
            top = (lam_h + damping) if lam_h else largest_eigenvalue(matvec, size, dtype)
            lam_h = lam_h or top - damping
            mu = largest_eigenvalue(lambda v: top * v - matvec(v), size, dtype, iters=50)
            low = min(low, top - mu)
        suggested = damping - 3.0 * low if low < 0 else 10.0 * max(damping, 1e-12)
    else:
        suggested = 10.0 * damping if damping > 0 else 1e-2 * (lam_h or 1.0)
    out = {"suggested_damping": float(suggested)}
    if lam_h:
        out["suggested_relative_damping"] = float(suggested / lam_h)
    return out


def advice_text(advice: dict) -> str:
    """``relative_damping X`` (or ``damping D``) would converge, for a message."""
    if "suggested_relative_damping" in advice:
        return (f"relative_damping {advice['suggested_relative_damping']:.3g} (damping "
                f"{advice['suggested_damping']:.3g}) should make H + damping I positive definite")
    return f"damping {advice['suggested_damping']:.3g} should make H + damping I positive definite"


def cg_solve_tree(matvec, b, *, tol: float = 1e-5, maxiter: int = 1000):
    """``x = solve(matvec, b)`` for pytrees (jaxopt's linear-solver signature): :func:`solve_cg` on
    the raveled system. Jit-compatible; returns x only (a pytree like ``b``)."""
    flat, unravel = ravel_pytree(b)
    x, _ = solve_cg(lambda v: ravel_pytree(matvec(unravel(v)))[0], flat, tol, maxiter)
    return unravel(x)


@functools.partial(jax.jit, static_argnames=("check_every",))
def _lissa_steps(step_mv, b, scale, h, key, check_every: int):
    def body(h, k):
        return b + h - step_mv(k, h) / scale, None
    h, _ = jax.lax.scan(body, h, jax.random.split(key, check_every))
    return h


def _ignore_key(matvec, key, v):
    return matvec(v)


def _lissa_block(step_mv, b, scale, check_every):
    """``check_every`` LiSSA steps from h, jitted with the operator as an argument (a
    :class:`jax.tree_util.Partial`: its arrays are inputs of the compiled code, not constants)."""
    step = step_mv if isinstance(step_mv, jax.tree_util.Partial) else jax.tree_util.Partial(step_mv)
    return lambda h, key: _lissa_steps(step, b, scale, h, key, check_every)


def solve_lissa(matvec, b, scale: float, depth: int = 1000, tol: float = 1e-4, check_every: int = 50,
                sample_matvec=None, rng=None, residual_matvec=None, patience: int = 3):
    """LiSSA: h_j = b + h_{j-1} - A_j h_{j-1} / scale, x = h / scale, A_j the (damped) HVP.

    ``sample_matvec(key, v)`` gives a stochastic HVP (a random mini-batch); otherwise ``matvec``.
    Every ``check_every`` steps the full relative residual is checked; stops at ``tol``, or as
    diverged when it exceeds 1 (worse than x = 0) and grew at each of the last ``patience`` checks.
    Returns (x, steps, diverging).
    """
    if not scale > 0:
        raise UserError(f"LiSSA scale must be positive, got {scale}")
    if sample_matvec is not None:
        step_mv = sample_matvec
    elif isinstance(matvec, jax.tree_util.Partial):
        step_mv = jax.tree_util.Partial(_ignore_key, matvec)
    else:
        step_mv = lambda k, v: matvec(v)
    run_block = _lissa_block(step_mv, b, scale, check_every)
    h, key, steps = b, (rng if rng is not None else jax.random.PRNGKey(0)), 0
    bn = float(jnp.linalg.norm(b)) or 1.0
    history = []
    while steps < depth:
        key, sub = jax.random.split(key)
        h = run_block(h, sub)
        steps += check_every
        history.append(float(jnp.linalg.norm((residual_matvec or matvec)(h / scale) - b)) / bn)
        last = history[-patience - 1:]
        growing = (len(last) == patience + 1 and all(u < v for u, v in zip(last, last[1:]))
                   and history[-1] > history[0])
        if not np.isfinite(history[-1]) or history[-1] <= tol or (growing and history[-1] > 1):
            break
    return h / scale, steps, bool(growing)


# ----------------------------------------------------------------------------- the entry points

DEFAULT_TOL = {"explicit": 1e-4, "cg": 1e-5, "lissa": 1e-4}
DEFAULT_MAX_ITER = {"cg": 1000, "lissa": 5000}


def solve_system(matvec, b: jax.Array, *, method: str = "cg", tol: float | None = None,
                 max_iter: int | None = None, scale: float | None = None, hessian: jax.Array | None = None,
                 sample_matvec=None, seed: int = 0, unravel=None, eigenvalue: float | None = None,
                 damping: float = 0.0, progress: bool = False) -> IHVPResult:
    """Solves ``A x = b`` for a symmetric operator ``matvec`` on flat (P,) vectors, reporting the
    relative residual and a status (see :class:`IHVPResult`).

    ``explicit`` needs the dense ``hessian`` (A itself). LiSSA's ``scale`` defaults to 1.1 x the largest
    eigenvalue of A (``eigenvalue`` if given, else 30 power iterations). ``unravel`` maps the flat
    solution back to a pytree; ``damping`` and ``eigenvalue`` are recorded in the result. CG runs
    :func:`solve_cg_block` (``progress``: report a long solve on stderr; a diverging solve stops early).
    """
    if method not in SOLVERS:
        raise UserError(f"unknown inverse-HVP solver {method!r}; choose one of {', '.join(SOLVERS)}")
    if not bool(jnp.all(jnp.isfinite(b))):
        raise UserError("the right-hand side of the inverse-HVP solve is not finite")
    tol = DEFAULT_TOL[method] if tol is None else tol
    unravel = unravel or (lambda x: x)
    extra = {"damping": damping, "largest_eigenvalue": eigenvalue}
    if method == "explicit":
        if hessian is None:
            raise ValueError("the explicit solver needs the dense matrix (hessian=...)")
        x, _ = solve_explicit(hessian, b, tol)
        return _finish(x, matvec, b, method, 1, tol, unravel, **extra)
    if method == "cg":
        x, report = solve_cg_block(matvec, b[:, None], tol, max_iter or DEFAULT_MAX_ITER["cg"], progress=progress)
        advice = damping_advice(report, damping, None if eigenvalue is None else eigenvalue - damping, matvec,
                                b.shape[0], b.dtype)
        hint = (f"stopped early ({'negative curvature met' if report.negative_curvature[0] else 'a growing residual'})"
                f"; {advice_text(advice)}") if advice else None
        return _finish(x[:, 0], matvec, b, method, int(report.iterations[0]), tol, unravel,
                       growing=bool(report.diverged[0]), hint=hint, **extra)
    if scale is None:
        if eigenvalue is None:
            eigenvalue = extra["largest_eigenvalue"] = largest_eigenvalue(matvec, b.shape[0], b.dtype)
        scale = 1.1 * eigenvalue
    x, k, growing = solve_lissa(matvec, b, scale, max_iter or DEFAULT_MAX_ITER["lissa"], tol,
                                sample_matvec=sample_matvec, rng=jax.random.PRNGKey(seed))
    return _finish(x, matvec, b, method, k, tol, unravel, growing=growing, **extra)


def _sampled_hvp(loss_fn, params, batch, l2, damping, unravel, lissa_batch_size):
    """(key, flat v) -> the damped HVP of a random mini-batch of ``lissa_batch_size`` examples."""
    n = batch_size_of(batch)
    m = min(int(lissa_batch_size), n)

    def sample(key, v):
        idx = jax.random.choice(key, n, (m,), replace=False)
        sub = jax.tree_util.tree_map(lambda a: a[idx], batch)
        f = lambda p: training_objective(loss_fn, p, sub, l2)
        hv = jax.jvp(jax.grad(f), (params,), (unravel(v),))[1]
        return ravel_pytree(hv)[0] + damping * v

    return sample


def inverse_hvp(loss_fn: LossFn, params, batch: dict, b, *, method: str = "cg", l2: float = 0.0,
                damping: float = 0.0, relative_damping: float | None = None, tol: float | None = None,
                max_iter: int | None = None, scale: float | None = None, lissa_batch_size: int | None = None,
                seed: int = 0, chunk_size: int | None = None, hessian: jax.Array | None = None,
                progress: bool = False) -> IHVPResult:
    """Solves ``(H + damping I) x = b`` for the Hessian H of :func:`training_objective`.

    ``b`` is a pytree like ``params``. ``method``: explicit | cg | lissa. Defaults: tol 1e-5 (cg),
    1e-4 (lissa, explicit); max_iter 1000 (cg), 5000 LiSSA steps. LiSSA's ``scale`` defaults to
    1.1 x the largest eigenvalue of H + damping I (estimated by 30 power iterations).
    ``relative_damping`` (instead of ``damping``): damping = relative_damping x the largest
    eigenvalue of H (its scale, power iterations), so that H + damping I has condition number at most
    about 1 / relative_damping wherever H is positive semi-definite, whatever the loss's scale.
    ``hessian``: a precomputed dense H + damping I for ``explicit``.
    """
    if method not in SOLVERS:
        raise UserError(f"unknown inverse-HVP solver {method!r}; choose one of {', '.join(SOLVERS)}")
    matvec, unravel, damping, eig = damped_operator(loss_fn, params, batch, l2=l2, damping=damping,
                                                    relative_damping=relative_damping, chunk_size=chunk_size)
    bf = ravel_pytree(b)[0]
    if method == "explicit" and hessian is None:
        hessian = hessian_matrix(loss_fn, params, batch, l2=l2, damping=damping)
    sample = (_sampled_hvp(loss_fn, params, batch, l2, damping, unravel, lissa_batch_size)
              if method == "lissa" and lissa_batch_size else None)
    return solve_system(matvec, bf, method=method, tol=tol, max_iter=max_iter, scale=scale, hessian=hessian,
                        sample_matvec=sample, seed=seed, unravel=unravel,
                        eigenvalue=None if eig is None else eig + damping, damping=damping, progress=progress)


def damped_operator(loss_fn: LossFn, params, batch: dict, *, l2: float = 0.0, damping: float = 0.0,
                    relative_damping: float | None = None, chunk_size: int | None = None):
    """``(matvec, unravel, damping, eig)``: the jitted ``v -> (H + damping I) v`` on flat (P,) vectors for
    the Hessian H of :func:`training_objective`, the map from flat vectors to pytrees like ``params``, the
    damping used and H's largest eigenvalue (None unless ``relative_damping`` is given, when
    damping = relative_damping x eig, eig by :func:`largest_eigenvalue`; see :func:`inverse_hvp`)."""
    if relative_damping is not None and not relative_damping >= 0:
        raise UserError(f"relative damping must be >= 0, got {relative_damping}")
    flat, unravel = ravel_pytree(params)
    parts = _hvp_parts(batch, flat.dtype, chunk_size)
    base = shifted_operator(loss_fn, params, batch, l2, unravel=unravel, parts=parts)
    eig = None
    if relative_damping is not None:
        eig = largest_eigenvalue(base, flat.shape[0], flat.dtype)
        damping = relative_damping * eig
    if damping < 0:
        raise UserError(f"damping must be >= 0, got {damping}")
    matvec = shifted_operator(loss_fn, params, batch, l2 + damping, unravel=unravel, parts=parts) if damping else base
    return matvec, unravel, damping, eig


def largest_eigenvalue(matvec, p: int, dtype=jnp.float32, iters: int = 30, seed: int = 0) -> float:
    """Power-iteration estimate of the largest eigenvalue of a symmetric PSD operator."""
    v = jax.random.normal(jax.random.PRNGKey(seed), (p,), dtype)
    v = v / jnp.linalg.norm(v)
    lam = 0.0
    for _ in range(iters):
        w = matvec(v)
        lam = float(jnp.vdot(v, w))
        v = w / (jnp.linalg.norm(w) + 1e-30)
    return max(lam, 1e-12)
