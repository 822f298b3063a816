"""Model guiding's hypergradient (Adebayo 2022, Sec. 5.2.3): time of one implicit
hypergradient relative to one lower-level solve, and compiled peak temporary memory of implicit vs
unrolled differentiation as the number of inner iterations grows (implicit must stay flat), plus the
time of a full bilevel update on Fashion-MNIST-sized concept data (a subset on CPU; the full 60k set
when an accelerator is present).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import best_time
from repair_jax.guiding.bilevel import (
    BilevelConfig, bilevel_update, hypergradient, init_theta, initial_delta, solve_lower_level,
    unrolled_lower_solution, upper_objective,
)


def _problem(n, d=14, k=10, m=100, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(d, k))
    z = rng.normal(size=(n, d)).astype(np.float32)
    za = rng.normal(size=(m, d)).astype(np.float32)
    return {"z": jnp.asarray(z), "y": jnp.asarray((z @ W).argmax(1)), "z_audit": jnp.asarray(za),
            "y_audit": jnp.asarray((za @ W).argmax(1)), "a_audit": jnp.asarray(rng.integers(0, 2, (m, d)), jnp.float32),
            "s_audit": jnp.asarray(rng.integers(0, 2, (m, d)), jnp.float32), "c_audit": jnp.ones(m)}


def _temp_bytes(f, *args) -> int:
    ma = jax.jit(f).lower(*args).compile().memory_analysis()
    return int(ma.temp_size_in_bytes) if ma is not None else -1


def run(quick: bool, inner_iterations=None) -> dict:
    """``inner_iterations``: the T of the memory rows (default 10, 50, 200 and, unless quick, 1000)."""
    k, d = 10, 14
    n = 2000 if quick else 10000
    p = _problem(n, d, k)
    cfg = BilevelConfig(l2=1e-2, inner_maxiter=500, inner_tol=1e-5)
    delta = initial_delta(p["y"], k, "classification")
    theta0 = init_theta(d, k)
    solve = jax.jit(lambda dl: solve_lower_level(theta0, dl, p["z"], p["y"], cfg, "classification"))
    hyper = jax.jit(lambda dl: hypergradient(dl, theta0, p, cfg, "classification", k))
    t_solve, t_hyper = best_time(lambda: solve(delta), 5), best_time(lambda: hyper(delta), 5)
    # memory as the inner iterations T grow (a fixed T for both routes: tol 0 forces maxiter steps)
    pm = _problem(1000 if quick else 5000, d, k)
    dm = initial_delta(pm["y"], k, "classification")
    mem = []
    for T in inner_iterations or ([10, 50, 200] if quick else [10, 50, 200, 1000]):
        c = BilevelConfig(l2=1e-2, inner_maxiter=T, inner_tol=0.0)

        def implicit(dl, c=c):
            return hypergradient(dl, theta0, pm, c, "classification", k)[1]

        def unrolled(dl, T=T):
            f = lambda x: upper_objective(x, unrolled_lower_solution(theta0, x, pm["z"], pm["y"], 1e-2,
                                                                     "classification", T, 0.5),
                                          pm, cfg, "classification", k, include_l1=False)
            return jax.grad(f)(dl)

        mem.append({"inner_iterations": T, "implicit_temp_bytes": _temp_bytes(implicit, dm),
                    "unrolled_temp_bytes": _temp_bytes(unrolled, dm)})
    # a full bilevel update at Fashion-MNIST scale (the 60k training set only on an accelerator)
    on_accel = jax.default_backend() != "cpu"
    n_full = 60000 if on_accel else (1000 if quick else 6000)
    pf = _problem(n_full, d, k)
    steps = 5 if quick else 20
    t = time.perf_counter()
    bilevel_update(pf, BilevelConfig(outer_steps=steps, inner_maxiter=200, inner_tol=1e-4), "classification", k)
    t_full = time.perf_counter() - t
    return {"n": n, "concepts": d, "classes": k,
            "lower_solve_s": t_solve, "hypergradient_s": t_hyper,
            "hypergradient_over_lower_solve": t_hyper / t_solve,
            "memory_vs_inner_iterations": mem,
            "implicit_memory_growth_first_to_last": mem[-1]["implicit_temp_bytes"] / max(mem[0]["implicit_temp_bytes"], 1),
            "unrolled_memory_growth_first_to_last": mem[-1]["unrolled_temp_bytes"] / max(mem[0]["unrolled_temp_bytes"], 1),
            "full_update": {"n_train": n_full, "outer_steps": steps, "seconds_incl_compile": t_full,
                            "backend": jax.default_backend(),
                            "note": "60k points on an accelerator; a subset on CPU (no accelerator here)" if not on_accel
                            else "all 60k Fashion-MNIST-sized training points"}}
