"""Fit once, attribute many: influence of every training point on many test points.

Source: Adebayo 2022, Ch. 3.4, Eq. 3.1: ``I_up,loss(z_i, z_t) = -grad l(z_t)^T H^{-1} grad l(z_i)``.
:func:`repair_jax.influence.influence_up_loss` re-forms the curvature for every test point (the dense
Hessian, or the power iterations of the relative damping) and solves for one right-hand side.
:func:`fit_hessian` (picked by name through :func:`repair_jax.influence.fit_influence`, which
:mod:`repair_jax.influence.methods` registers) computes what does not depend on the test point once, the way dattri, TRAK and
Kronfluence cache attribution state:

* the damping (relative damping: x the largest eigenvalue of H, by the same power iterations as
  :func:`repair_jax.influence.inverse_hvp`, so the numbers are the same);
* ``explicit``: the dense ``A = H + damping I`` (P x P) and its factorisation (see :class:`InfluenceFit`);
* (``kfac`` / ``ekfac``, Kronecker-factored curvature instead of H, are :mod:`repair_jax.influence.kfac`: a
  :class:`repair_jax.influence.kfac.KfacFit` with the same interface, built on this module);
* the per-example training gradients ``G`` (N x P), in chunks, when ``N * P`` floats fit under
  ``max_gradient_bytes`` (default 2 GB); otherwise scores use one forward-mode pass per test point
  (:func:`repair_jax.influence.per_example_grad_dot`), which never materialises G.

Then :meth:`InfluenceFit.scores` takes M test points: their gradients ``G_t`` (M x P) in one
per-example pass, one multi-right-hand-side solve ``X = A^{-1} G_t^T`` (P x M: ``cho_solve`` on the
block, or CG vmapped over the M columns) and one product ``-X^T G^T`` (M x N).
:meth:`InfluenceFit.solve` solves for any block of quantity gradients (a disparity metric's, a group's).
Memory: G takes ``N * P`` floats, the dense ``A`` ``P * P`` (explicit only), a block solve ``P * M``; the
vmapped CG holds the activations of ``chunk_size`` examples for up to :data:`CG_COLUMNS` right-hand sides
at a time. Every block solve reports a relative residual, iterations and a status per column
(:class:`BlockSolveResult`); a column that did not converge emits an
:class:`repair_jax.influence.InfluenceWarning` naming it.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from repair_jax.errors import UserError
from repair_jax.influence.gradients import LossFn, batch_size_of, per_example_grad_dot, per_example_grads
from repair_jax.influence.hvp import (
    DEFAULT_MAX_ITER, DEFAULT_TOL, SOLVERS, InfluenceWarning, _status, advice_text, damped_operator, damping_advice,
    hessian_matrix, largest_eigenvalue, solve_cg_block, solve_lissa,
)

MAX_GRADIENT_BYTES = 2 * 1024 ** 3


@dataclasses.dataclass
class BlockSolveResult:
    """Solution ``x`` (P, M) of ``(H + damping I) x = b`` for M right-hand sides, and per column the
    relative residual ``||A x_j - b_j|| / ||b_j||``, the iterations and a status (converged |
    not_converged | diverged, as :class:`repair_jax.influence.IHVPResult`)."""

    x: jax.Array
    method: str
    iterations: np.ndarray
    residuals: np.ndarray
    statuses: list
    tol: float
    damping: float = 0.0
    largest_eigenvalue: float | None = None
    advice: dict = dataclasses.field(default_factory=dict)  # the damping that would converge (diverged CG)

    @property
    def converged(self) -> bool:
        """True when every column converged."""
        return all(s == "converged" for s in self.statuses)

    @property
    def status(self) -> str:
        """The worst column's status."""
        for s in ("diverged", "not_converged"):
            if s in self.statuses:
                return s
        return "converged"

    def column(self, j: int) -> dict:
        return {"residual": float(self.residuals[j]), "iterations": int(self.iterations[j]),
                "status": self.statuses[j], "converged": self.statuses[j] == "converged"}

    def summary(self) -> dict:
        """The :meth:`IHVPResult.summary` keys (residual: the largest over columns) and ``columns``."""
        out = {"method": self.method, "status": self.status, "iterations": int(np.max(self.iterations)),
               "residual": float(np.max(self.residuals)), "converged": self.converged, "tol": float(self.tol),
               "damping": float(self.damping), "columns": [self.column(j) for j in range(len(self.statuses))]}
        if self.largest_eigenvalue is not None:
            out["largest_eigenvalue"] = float(self.largest_eigenvalue)
        return {**out, **self.advice}


@dataclasses.dataclass
class InfluenceFit:
    """What :func:`fit_influence` computed once. ``factor``: for ``explicit``, ``("cholesky", c)`` when
    ``A = H + damping I`` is positive definite (half the flops of LU and backward stable), else
    ``("eigh", (w, V))``: Cholesky fails on an indefinite A (a non-convex model with little damping),
    while the eigendecomposition still gives the exact ``A^{-1} = V diag(1/w) V^T`` of a nonsingular A and
    its smallest eigenvalue for the warning. ``grads``: G (N, P) or None (scores by forward mode)."""

    loss_fn: Any
    params: Any
    train_batch: dict
    method: str
    damping: float
    largest_eigenvalue: float | None
    matvec: Any
    unravel: Any
    tol: float
    max_iter: int
    chunk_size: int | None
    hessian: jax.Array | None = None
    factor: tuple | None = None
    grads: jax.Array | None = None
    scale: float | None = None
    progress: bool = False  # CG: report a solve running over a few seconds on stderr (solve_cg_block)

    def solve(self, b) -> BlockSolveResult:
        """``X = (H + damping I)^{-1} B`` for a (P,) or (P, M) block of flat quantity gradients."""
        b = jnp.asarray(b)
        b = b[:, None] if b.ndim == 1 else b
        if b.ndim != 2 or b.shape[0] != self.size:
            raise UserError(f"right-hand sides must have shape (P,) or (P, M) with P = {self.size}, got {b.shape}")
        if not bool(jnp.all(jnp.isfinite(b))):
            raise UserError("a right-hand side of the inverse-HVP solve is not finite")
        x, iters, ax, report = self._solve_block(b)
        return _block_result(x, ax, b, iters, self, report)

    def _solve_block(self, b):
        """(x (P, M), iterations (M,), A x, CG's report or None) for a checked (P, M) block."""
        if self.method == "explicit":
            x = _factor_solve(self.factor, b)
            return x, np.ones(b.shape[1], int), self.hessian @ x, None
        if self.method == "lissa":
            # a Partial of the operator: its arrays enter the jitted steps as inputs, and fits of one loss
            # and parameter structure share the compiled steps
            block_mv = jax.tree_util.Partial(_columns, self.matvec)
            x, k, _ = solve_lissa(block_mv, b, self.scale, self.max_iter, self.tol)
            return x, np.full(b.shape[1], k), block_mv(x), None
        x, report = _block_cg(self, b)
        return x, report.iterations, jax.vmap(self.matvec, in_axes=1, out_axes=1)(x), report

    @property
    def size(self) -> int:
        return int(ravel_pytree(self.params)[0].shape[0])

    def test_gradients(self, test_batch: dict) -> jax.Array:
        """(M, P) gradients of the M test losses ``grad l(z_t)``."""
        if batch_size_of(test_batch) == 0:
            raise UserError("the test batch is empty")
        return per_example_grads(self.loss_fn, self.params, test_batch, flat=True, chunk_size=self.chunk_size)

    def upweight_scores(self, x) -> jax.Array:
        """``-x_j . grad l(z_i)`` for the (P, M) block ``x``: (M, N) (Eq. 3.1 given ``x = H^{-1} grad q``)."""
        if self.grads is not None:
            return -(x.T @ self.grads.T)
        return jnp.stack([-per_example_grad_dot(self.loss_fn, self.params, self.train_batch, self.unravel(c),
                                                chunk_size=self.chunk_size) for c in x.T])

    def scores(self, test_batch: dict) -> tuple[jax.Array, BlockSolveResult]:
        """``I_up,loss(z_i, z_t)`` for the M points of ``test_batch`` and all N training points:
        ((M, N) scores, the block solve). Row t equals ``influence_up_loss`` on test point t alone."""
        r = self.solve(self.test_gradients(test_batch).T)
        return self.upweight_scores(r.x), r

    def self_influence(self, batch: dict | None = None) -> jax.Array:
        """``g_i^T (H + damping I)^{-1} g_i`` (minus the self-influence I_up(z_i, z_i), Adebayo 2022, Eq. 3.1) of the
        points of ``batch`` (default: the training batch), (N,), one block solve per chunk of ``chunk_size``."""
        batch = self.train_batch if batch is None else batch
        n = batch_size_of(batch)
        if n == 0:
            raise UserError("the batch for self-influence is empty")
        step = self.chunk_size or n
        out = []
        for start in range(0, n, step):
            g = self.test_gradients(jax.tree_util.tree_map(lambda a: a[start:start + step], batch))
            out.append(jnp.sum(g.T * self.solve(g.T).x, axis=0))
        return jnp.concatenate(out)


def _factor_solve(factor, b):
    kind, f = factor
    if kind == "cholesky":
        return jax.scipy.linalg.cho_solve(f, b)
    w, v = f
    return v @ ((v.T @ b) / w[:, None])


@jax.jit
def _cholesky(a):
    c = jnp.linalg.cholesky(a)
    return c, jnp.all(jnp.isfinite(c))


def _factorise(a) -> tuple:
    """("cholesky", (L, lower)) when ``a`` is positive definite, else ("eigh", (w, V)) and a warning."""
    c, ok = _cholesky(a)
    if bool(ok):
        return "cholesky", (c, True)
    w, v = jnp.linalg.eigh(a)
    warnings.warn(f"the Hessian is not positive definite (smallest eigenvalue {float(w[0]):.3g}); "
                  "add damping", InfluenceWarning, stacklevel=3)
    return "eigh", (w, v)


#: Right-hand sides per vmapped CG run: the batched HVP holds ``chunk_size x CG_COLUMNS`` activations.
CG_COLUMNS = 128


def _columns(op, v):
    """``op`` applied to each column of the (P, M) block ``v``."""
    return jax.vmap(op, in_axes=1, out_axes=1)(v)


def _block_cg(fit: InfluenceFit, b):
    """CG (:func:`repair_jax.influence.hvp.solve_cg_block`, the fit's operator: a Partial, so every fit of
    the same loss and parameter structure reuses one compiled segment) over the M columns of ``b``, in
    blocks of :data:`CG_COLUMNS` columns: (x (P, M), the merged :class:`~repair_jax.influence.hvp.CGReport`)."""
    from repair_jax.influence.hvp import CGReport

    m = b.shape[1]
    xs, reports = [], []
    for start in range(0, m, CG_COLUMNS):
        block = b[:, start:start + CG_COLUMNS]
        desc = "cg solve" if m <= CG_COLUMNS else f"cg solve (columns {start}-{start + block.shape[1] - 1} of {m})"
        x, r = solve_cg_block(fit.matvec, block, float(fit.tol), int(fit.max_iter), progress=fit.progress, desc=desc)
        xs.append(x)
        reports.append(r)
    merged = CGReport(*(np.concatenate([getattr(r, f.name) for r in reports])
                        for f in dataclasses.fields(CGReport)))
    return (xs[0] if len(xs) == 1 else jnp.concatenate(xs, 1)), merged


def _block_result(x, ax, b, iters, fit: InfluenceFit, report=None) -> BlockSolveResult:
    """Per-column relative residuals and statuses (a column CG stopped as diverging is ``diverged``);
    non-finite raises, non-converged columns warn (a diverged CG naming the damping that would converge)."""
    bn = jnp.linalg.norm(b, axis=0)
    res = np.asarray(jnp.linalg.norm(ax - b, axis=0) / jnp.where(bn > 0, bn, 1.0))
    advice = (damping_advice(report, fit.damping, fit.largest_eigenvalue, fit.matvec, b.shape[0], b.dtype)
              if report is not None else {})
    if not (np.all(np.isfinite(res)) and bool(jnp.all(jnp.isfinite(x)))):
        raise UserError(f"the {fit.method} inverse-HVP solve diverged to a non-finite value (add damping: "
                        "the Hessian may not be positive definite" + (f"; {advice_text(advice)}" if advice else "")
                        + ")")
    diverged = report.diverged if report is not None else np.zeros(len(res), bool)
    statuses = ["diverged" if d and r > fit.tol else _status(float(r), fit.tol) for r, d in zip(res, diverged)]
    if advice and any(s == "diverged" for s in statuses):
        cause = "negative curvature met" if report.negative_curvature.any() else "a growing residual"
        warnings.warn(f"{fit.method} inverse-HVP solve diverged ({cause}: H + damping I is not positive definite "
                      f"enough at damping {fit.damping:.3g}) and was stopped; {advice_text(advice)}",
                      InfluenceWarning, stacklevel=3)
    bad = [j for j, s in enumerate(statuses) if s != "converged"]
    if bad:
        warnings.warn(f"{fit.method} inverse-HVP solve did not converge for {len(bad)} of {len(statuses)} "
                      f"right-hand sides (columns {bad[:10]}{'...' if len(bad) > 10 else ''}; largest relative "
                      f"residual {res.max():.3g} > tolerance {fit.tol:.3g}); those scores are approximate (add "
                      "damping or raise the iteration limit)", InfluenceWarning, stacklevel=3)
    return BlockSolveResult(x, fit.method, np.asarray(iters), res, statuses, fit.tol, fit.damping,
                            None if fit.largest_eigenvalue is None else fit.largest_eigenvalue + fit.damping,
                            advice if any(s == "diverged" for s in statuses) else {})


def training_gradients(loss_fn: LossFn, params, batch: dict, *, store: bool | None = None,
                       max_bytes: int = MAX_GRADIENT_BYTES, chunk_size: int | None = None):
    """The (N, P) per-example training gradients when they fit: N * P * itemsize bytes <= ``max_bytes``.
    ``store``: None (materialise when they fit, else None), True (UserError when they do not), False (None)."""
    flat = ravel_pytree(params)[0]
    n, p = batch_size_of(batch), int(flat.shape[0])
    need = n * p * flat.dtype.itemsize
    if store is False or (store is None and need > max_bytes):
        return None
    if need > max_bytes:
        raise UserError(f"the per-example training gradients take {need / 1e9:.3g} GB ({n} x {p} "
                        f"{flat.dtype.name}), over max_gradient_bytes = {max_bytes / 1e9:.3g} GB; raise it or "
                        "pass store_gradients=None to score by forward mode")
    return per_example_grads(loss_fn, params, batch, flat=True, chunk_size=chunk_size)


def fit_hessian(loss_fn: LossFn, params, train_batch: dict, *, method: str = "explicit", l2: float = 0.0,
                damping: float = 0.0, relative_damping: float | None = None, chunk_size: int | None = 512,
                tol: float | None = None, max_iter: int | None = None, store_gradients: bool | None = None,
                max_gradient_bytes: int = MAX_GRADIENT_BYTES, scale: float | None = None,
                progress: bool = False) -> InfluenceFit:
    """Fits the reusable part of Eq. 3.1 (Adebayo 2022, Ch. 3.4) with the exact Hessian H of the training
    objective ``mean_i l(z_i) + l2/2 ||theta||^2`` (see the module docstring), for the solver ``method`` of
    :data:`repair_jax.influence.hvp.SOLVERS`: damping, for ``explicit`` the dense ``H + damping I``
    (P <= 20,000) and its factorisation, for ``lissa`` its scale (default 1.1 x the largest eigenvalue of
    ``H + damping I``, 30 power iterations), and G (N x P, memory ``N * P`` floats) unless over
    ``max_gradient_bytes``. Options as :func:`repair_jax.influence.inverse_hvp` (``relative_damping``
    replaces ``damping``; tol defaults 1e-4 explicit and lissa, 1e-5 cg; max_iter 1000 cg, 5000 LiSSA
    steps). LiSSA (:func:`repair_jax.influence.hvp.solve_lissa`) runs on the whole block with the HVP
    vmapped over its columns and stops on the block's relative residual (Frobenius norms).

    ``progress``: CG solves running over a few seconds report their progress and an estimate of the time
    left on stderr. A CG solve that diverges (negative curvature, or a residual grown tenfold for many
    iterations) stops early, marked ``diverged``, with the damping that would converge in its summary
    (:func:`repair_jax.influence.hvp.damping_advice`). Pick a method by name with
    :func:`repair_jax.influence.fit_influence`."""
    if method not in SOLVERS:
        raise UserError(f"unknown Hessian solver {method!r}; choose one of {', '.join(SOLVERS)}")
    if batch_size_of(train_batch) == 0:
        raise UserError("the training batch is empty")
    matvec, unravel, damping, eig = damped_operator(loss_fn, params, train_batch, l2=l2, damping=damping,
                                                    relative_damping=relative_damping, chunk_size=chunk_size)
    fit = InfluenceFit(loss_fn, params, train_batch, method, float(damping), eig, matvec, unravel,
                       DEFAULT_TOL[method] if tol is None else float(tol),
                       int(max_iter or DEFAULT_MAX_ITER["lissa" if method == "lissa" else "cg"]), chunk_size,
                       progress=progress)
    if method == "lissa":
        if scale is not None and not scale > 0:
            raise UserError(f"LiSSA scale must be positive, got {scale}")
        fit.scale = float(scale) if scale is not None else 1.1 * largest_eigenvalue(
            matvec, fit.size, ravel_pytree(params)[0].dtype)
    if method == "explicit":
        fit.hessian = hessian_matrix(loss_fn, params, train_batch, l2=l2, damping=damping)
        fit.factor = _factorise(fit.hessian)
    fit.grads = training_gradients(loss_fn, params, train_batch, store=store_gradients,
                                   max_bytes=max_gradient_bytes, chunk_size=chunk_size)
    return fit
