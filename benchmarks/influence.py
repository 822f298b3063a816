"""Influence engine timings, ratios taken in one run on this machine.

* ``forward_mode``: the influence of N training points on one test loss given s_test,
  ``-grad l(z_i) . s_test`` for all i by one forward-mode pass (``per_example_grad_dot``), divided
  by the time of one jitted forward pass (the N losses) over the same points. Goal <= 3. Also the
  alternative: materializing the (N, P) per-example gradients and a matrix-vector product.
* ``ihvp``: explicit inverse (dense Hessian from HVPs + Cholesky solve) vs CG and LiSSA solving
  ``(H + damping I) x = b`` to a stated relative residual, for a softmax regression on random
  features as P grows.
* ``fitted_vs_per_point``: fit once, attribute many (:mod:`benchmarks.influence_fitted`): per-test-point
  ``influence_up_loss`` vs ``fit_influence`` + ``fit.scores`` for M = 1, 10, 100 test points, and dattri
  side by side on the same weights.
"""

from __future__ import annotations

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import best_time
from repair_jax.models import MLP
from repair_jax.influence import ClassifierLoss, inverse_hvp, per_example_grad_dot, per_example_grads


class _Linear(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(10)(x), x


def _timed_once(fn):
    t0 = time.perf_counter()
    out = fn()
    jax.block_until_ready(jax.tree_util.tree_leaves(out.x) if hasattr(out, "x") else out)
    return time.perf_counter() - t0, out


def run(quick: bool = False) -> dict:
    reps = 3 if quick else 10
    rng = np.random.default_rng(0)
    # --- forward-mode influence over N training points
    n = 256 if quick else 8192
    model = MLP(10)  # repair_jax.models.MLP: 2 x 256 ReLU, 10 classes
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64)))["params"]
    loss = ClassifierLoss(model.apply)
    batch = {"x": jnp.asarray(rng.random((n, 64), dtype=np.float32)), "y": jnp.asarray(rng.integers(0, 10, n))}
    s = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.normal(size=a.shape), a.dtype), params)
    fwd = jax.jit(lambda p, b: loss(p, b))
    t_fwd = best_time(lambda: fwd(params, batch), reps)
    t_jvp = best_time(lambda: per_example_grad_dot(loss, params, batch, s), reps)
    sflat = jax.flatten_util.ravel_pytree(s)[0]
    t_mat = best_time(lambda: per_example_grads(loss, params, batch, flat=True, chunk_size=1024) @ sflat, reps)
    out = {"forward_mode": {"n_train": n, "model": "MLP 64-256-256-10", "forward_s": t_fwd,
                            "influence_forward_mode_s": t_jvp, "influence_over_forward": t_jvp / t_fwd,
                            "materialized_grads_matvec_s": t_mat, "materialized_over_forward": t_mat / t_fwd}}
    # --- inverse-HVP solvers as P grows (softmax regression, l2 = 1e-2, damping 0)
    rows = []
    tol = 1e-4
    for d in ((8, 32) if quick else (16, 64, 256)):
        m = 512
        lin = _Linear()
        p0 = lin.init(jax.random.PRNGKey(1), jnp.zeros((1, d)))["params"]
        lf = ClassifierLoss(lin.apply)
        x = rng.normal(size=(m, d)).astype(np.float32) / np.sqrt(d)
        b_ = {"x": jnp.asarray(x), "y": jnp.asarray(rng.integers(0, 10, m))}
        rhs = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.normal(size=a.shape), a.dtype), p0)
        pcount = d * 10 + 10
        row = {"P": pcount, "tol": tol}
        t, r = _timed_once(lambda: inverse_hvp(lf, p0, b_, rhs, method="explicit", l2=1e-2, tol=tol))
        row.update(explicit_s=t, explicit_residual=r.residual)
        t, r = _timed_once(lambda: inverse_hvp(lf, p0, b_, rhs, method="cg", l2=1e-2, tol=tol))
        row.update(cg_s=t, cg_iterations=r.iterations, cg_residual=r.residual, cg_over_explicit=t / row["explicit_s"])
        t, r = _timed_once(lambda: inverse_hvp(lf, p0, b_, rhs, method="lissa", l2=1e-2, tol=tol, max_iter=20000))
        row.update(lissa_s=t, lissa_iterations=r.iterations, lissa_residual=r.residual, lissa_converged=r.converged,
                   lissa_over_explicit=t / row["explicit_s"])
        rows.append(row)
    out["ihvp"] = rows
    from benchmarks import influence_fitted

    out["fitted_vs_per_point"] = influence_fitted.run(quick)  # issue 17 part 2, see its module docstring
    out["note"] = ("forward-mode timings: best of reps after warm-up; solver times include compilation "
                   "(each solve is run once, as a user would)")
    return out
