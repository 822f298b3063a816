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
``repair-jax influence``. :func:`solve_cg` is the project's one conjugate-gradient solver (also the
linear solve of model guiding's implicit differentiation, through :func:`cg_solve_tree`).

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


def _finish(x, matvec, b, method, iterations, tol, unravel, growing=False, **extra) -> IHVPResult:
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
            "H + damping I is not positive definite: add damping"
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
                 damping: float = 0.0) -> IHVPResult:
    """Solves ``A x = b`` for a symmetric operator ``matvec`` on flat (P,) vectors, reporting the
    relative residual and a status (see :class:`IHVPResult`).

    ``explicit`` needs the dense ``hessian`` (A itself). LiSSA's ``scale`` defaults to 1.1 x the largest
    eigenvalue of A (``eigenvalue`` if given, else 30 power iterations). ``unravel`` maps the flat
    solution back to a pytree; ``damping`` and ``eigenvalue`` are recorded in the result.
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
        x, k = solve_cg(matvec, b, tol, max_iter or DEFAULT_MAX_ITER["cg"])
        return _finish(x, matvec, b, method, int(k), tol, unravel, **extra)
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
                seed: int = 0, chunk_size: int | None = None, hessian: jax.Array | None = None) -> IHVPResult:
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
                        eigenvalue=None if eig is None else eig + damping, damping=damping)


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
