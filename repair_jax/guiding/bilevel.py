"""The bilevel update of model guiding (Adebayo 2022, Sec. 5.2.2-5.2.4).

Upper level, over the label perturbations delta (the model follows as theta*(delta))::

    gamma * dist(delta) / n + 1/n sum_i l(z_i, y_i + delta_i; theta*) + 1/m sum_j c_j l(z~_j, y~_j; theta*)
        + eta * 1/m sum_j || theta* (.) z~_j - a~_j (.) s~_j ||_1

Lower level: theta*(delta) = argmin_theta 1/n sum_i l(z_i, y_i + delta_i; theta) + l2/2 ||theta||^2.
The small L2 term (weights and bias) makes the lower level *strongly convex* for both the squared
loss and the soft-label cross-entropy of a linear model, so theta*(delta) is unique and the implicit
function theorem applies (Sec. 5.2.3 "KKT Based Solution").

- Regression: delta in R^n, new label y_i + delta_i, dist = ||delta||_1 handled by a proximal
  (soft-threshold) step after each optax update.
- Classification (Sec. 5.2.4 "Modification for Classification Tasks"): delta_i is the new label,
  a point of the probability simplex (rows of an (n, K) array, projected after each optax update),
  the loss is the soft-label cross-entropy and dist = sum_i (1 - delta_{i, y_i}).

The hypergradient d upper / d delta comes from jaxopt's implicit differentiation: the lower level is
solved by ``jaxopt.LBFGS(implicit_diff=True)`` whose backward pass solves the linear system with the
lower-level Hessian by conjugate gradients (the project's one CG,
:func:`repair_jax.influence.hvp.cg_solve_tree`, as jaxopt's ``implicit_diff_solve``), Sec. 5.2.3
"Computing the hyper-gradient", "Automatic Implicit Differentiation" (Blondel et al. 2021).
:func:`unrolled_lower_solution` is the other route of Sec. 5.2.3 (back-propagation through gradient
descent), used as a reference in the tests and the memory benchmark.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings

import jax
import jax.numpy as jnp
import jaxopt
import numpy as np
import optax

from repair_jax.errors import UserError
from repair_jax.influence.hvp import cg_solve_tree
from repair_jax.progress import track

TASKS = ("classification", "regression")


class LowerLevelNotConverged(RuntimeWarning):
    """The lower-level solver stopped at maxiter with its gradient norm above the tolerance."""


@dataclasses.dataclass(frozen=True)
class BilevelConfig:
    """Hyper-parameters of the bilevel update (gamma, eta as in Adebayo 2022, Sec. 5.2.2)."""

    gamma: float = dataclasses.field(default=1.0, metadata={"help": 'weight of the label-perturbation size'})
    fi_weight: float = dataclasses.field(default=1.0, metadata={"help": 'weight of the feature-importance match term'})
    l2: float = dataclasses.field(default=1e-2,
        metadata={"help": 'lower-level L2 (strong convexity; also the L2 of the carved head)'})
    outer_steps: int = dataclasses.field(default=100, metadata={"help": 'steps of the upper-level (label) problem'})
    outer_lr: float = dataclasses.field(default=0.05, metadata={"help": 'step size of the upper-level problem'})
    optimizer: str = "adam"      # adam | sgd (optax)
    inner_maxiter: int = dataclasses.field(default=500, metadata={"help": 'iteration limit of the lower-level solve'})
    inner_tol: float = 1e-5
    cg_maxiter: int = 200
    cg_tol: float = 1e-8
    audit_weight: float = 1.0    # multiplies the confidence-weighted audit loss

    def validate(self) -> None:
        if self.gamma < 0 or self.fi_weight < 0 or self.audit_weight < 0:
            raise UserError("gamma, fi_weight and audit_weight must be >= 0")
        if not self.l2 > 0:
            raise UserError(f"the lower-level L2 must be > 0 (strong convexity), got {self.l2}")
        if self.outer_steps < 0 or self.inner_maxiter <= 0:
            raise UserError("outer_steps must be >= 0 and inner_maxiter > 0")
        if not self.outer_lr > 0:
            raise UserError(f"outer_lr must be positive, got {self.outer_lr}")
        if self.optimizer not in ("adam", "sgd"):
            raise UserError(f"unknown outer optimizer {self.optimizer!r}; choose adam or sgd")


# ----------------------------------------------------------------------------- the linear model

def init_theta(d: int, k: int, dtype=jnp.float32) -> dict:
    """Linear model from concepts to outputs: w (d, K), b (K,) (K = 1 for regression)."""
    return {"w": jnp.zeros((d, k), dtype), "b": jnp.zeros((k,), dtype)}


def linear_predict(theta: dict, z: jax.Array) -> jax.Array:
    """(n, d) -> (n, K) logits or (n, 1) regression outputs."""
    return z @ theta["w"] + theta["b"]


def per_example_loss(theta: dict, z, targets, task: str) -> jax.Array:
    """Soft-label cross-entropy (targets (n, K) on the simplex) or 0.5 squared error (targets (n,))."""
    out = linear_predict(theta, z)
    if task == "classification":
        return -jnp.sum(targets * jax.nn.log_softmax(out), axis=-1)
    return 0.5 * jnp.square(out[:, 0] - targets)


def perturbed_labels(delta, y, task: str):
    """y_i + delta_i (regression) or the simplex point delta_i itself (classification)."""
    return delta if task == "classification" else y + delta


def initial_delta(y, num_classes: int, task: str, dtype=jnp.float32):
    """No perturbation: one-hot labels (classification) or zeros (regression)."""
    if task == "classification":
        return jax.nn.one_hot(y, num_classes, dtype=dtype)
    return jnp.zeros(y.shape, dtype)


def label_change(delta, y, task: str):
    """Per-example label change: 1 - delta_{i, y_i} (classification) or |delta_i| (regression)."""
    if task == "classification":
        return 1.0 - jnp.take_along_axis(delta, y[:, None], axis=1)[:, 0]
    return jnp.abs(delta)


def lower_objective(theta: dict, delta, z, y, l2: float, task: str):
    """1/n sum_i l(z_i, y_i + delta_i; theta) + l2/2 ||theta||^2 (strongly convex in theta)."""
    sq = jnp.sum(jnp.square(theta["w"])) + jnp.sum(jnp.square(theta["b"]))
    return jnp.mean(per_example_loss(theta, z, perturbed_labels(delta, y, task), task)) + 0.5 * l2 * sq


def concept_attribution(theta: dict, z, y, task: str):
    """theta (.) z_i for the column of label y_i (classification) or the single output, (n, d)."""
    w = theta["w"][:, 0][None, :] if task == "regression" else theta["w"].T[y]
    return w * z


def importance_mismatch(theta: dict, z_audit, y_audit, a_audit, s_audit, task: str):
    """1/m sum_j || theta (.) z~_j - a~_j (.) s~_j ||_1 (Adebayo 2022, Sec. 5.2.2, last upper-level term)."""
    att = concept_attribution(theta, z_audit, y_audit, task)
    return jnp.mean(jnp.sum(jnp.abs(att - a_audit * s_audit), axis=-1))


def audit_loss(theta: dict, z_audit, y_audit, c_audit, task: str, num_classes: int):
    """1/m sum_j c_j l(z~_j, y~_j; theta) with the expert's labels."""
    t = jax.nn.one_hot(y_audit, num_classes, dtype=z_audit.dtype) if task == "classification" else y_audit
    return jnp.mean(c_audit * per_example_loss(theta, z_audit, t, task))


def upper_objective(delta, theta: dict, problem: dict, config: BilevelConfig, task: str,
                    num_classes: int, include_l1: bool = True):
    """The upper-level objective of Adebayo 2022, Sec. 5.2.2 at (delta, theta). ``problem`` holds arrays
    z (n, d), y (n,), z_audit (m, d), y_audit (m,), a_audit, s_audit (m, d), c_audit (m,)."""
    y = problem["y"]
    n = y.shape[0]
    if task == "classification":
        dist = jnp.sum(label_change(delta, y, task))
    else:
        dist = jnp.sum(jnp.abs(delta)) if include_l1 else 0.0
    train = jnp.mean(per_example_loss(theta, problem["z"], perturbed_labels(delta, y, task), task))
    audit = audit_loss(theta, problem["z_audit"], problem["y_audit"], problem["c_audit"], task, num_classes)
    fi = importance_mismatch(theta, problem["z_audit"], problem["y_audit"], problem["a_audit"],
                             problem["s_audit"], task)
    return (config.gamma * dist / n + train + config.audit_weight * audit + config.fi_weight * fi)


# ----------------------------------------------------------------------------- lower-level solvers

def make_lower_solver(config: BilevelConfig, task: str) -> jaxopt.LBFGS:
    """LBFGS on the lower level, differentiated implicitly (CG on the Hessian system)."""
    solve = functools.partial(cg_solve_tree, maxiter=config.cg_maxiter, tol=config.cg_tol)
    fun = functools.partial(lower_objective, l2=config.l2, task=task)
    return jaxopt.LBFGS(fun=fun, maxiter=config.inner_maxiter, tol=config.inner_tol,
                        linesearch="backtracking", implicit_diff=True, implicit_diff_solve=solve)


def minimize_lbfgs(fun, init, *args, maxiter: int = 500, tol: float = 1e-6):
    """argmin of ``fun(x, *args)`` from ``init`` by L-BFGS with a backtracking line search (the
    lower-level solver's settings; jaxopt stays behind this module). Jit-compatible; returns x."""
    solver = jaxopt.LBFGS(fun=fun, maxiter=maxiter, tol=tol, linesearch="backtracking")
    return solver.run(init, *args).params


def solve_lower_level(theta0: dict, delta, z, y, config: BilevelConfig, task: str):
    """theta*(delta), differentiable w.r.t. delta by implicit differentiation; (theta, grad-norm)."""
    res = make_lower_solver(config, task).run(theta0, delta, z, y)
    return res.params, res.state.error


def unrolled_lower_solution(theta0: dict, delta, z, y, l2: float, task: str, steps: int, lr: float):
    """``steps`` plain gradient-descent steps on the lower level; differentiating this back-propagates
    through every step (the "unrolling" route of Adebayo 2022, Sec. 5.2.3; memory grows with ``steps``)."""
    g = jax.grad(lower_objective)

    def body(theta, _):
        grads = g(theta, delta, z, y, l2, task)
        return jax.tree_util.tree_map(lambda p, q: p - lr * q, theta, grads), None

    theta, _ = jax.lax.scan(body, theta0, None, length=steps)
    return theta


def hypergradient(delta, theta0: dict, problem: dict, config: BilevelConfig, task: str, num_classes: int):
    """(upper value, d upper / d delta, theta*(delta), lower-level grad norm) by implicit diff.

    The L1 term of regression is left to the proximal step and not differentiated here.
    """
    def total(d):
        theta, err = solve_lower_level(theta0, d, problem["z"], problem["y"], config, task)
        return upper_objective(d, theta, problem, config, task, num_classes, include_l1=False), (theta, err)

    (value, (theta, err)), grad = jax.value_and_grad(total, has_aux=True)(delta)
    return value, grad, theta, err


def project_simplex_rows(delta):
    """Euclidean projection of each row onto the probability simplex."""
    return jax.vmap(jaxopt.projection.projection_simplex)(delta)


def soft_threshold(delta, t):
    """prox of t * ||.||_1."""
    return jnp.sign(delta) * jnp.maximum(jnp.abs(delta) - t, 0.0)


# ----------------------------------------------------------------------------- the outer loop

@dataclasses.dataclass
class BilevelResult:
    delta: np.ndarray            # (n, K) simplex rows or (n,) perturbations
    theta: dict                  # theta*(delta) after the last step
    history: list                # per outer step: upper objective, lower grad norm
    lower_converged: bool
    max_lower_error: float


def outer_optimizer(config: BilevelConfig) -> optax.GradientTransformation:
    return optax.adam(config.outer_lr) if config.optimizer == "adam" else optax.sgd(config.outer_lr)


@functools.partial(jax.jit, static_argnames=("config", "task", "num_classes"))
def outer_step(delta, theta, opt_state, problem, config: BilevelConfig, task: str, num_classes: int):
    """One optax step on the hypergradient, then the projection onto the simplex (classification)
    or the L1 proximal step (regression). Returns (delta, theta*, opt_state, upper value, grad norm)."""
    value, grad, theta, err = hypergradient(delta, theta, problem, config, task, num_classes)
    updates, opt_state = outer_optimizer(config).update(grad, opt_state, delta)
    delta = optax.apply_updates(delta, updates)
    if task == "classification":
        delta = project_simplex_rows(delta)
    else:
        delta = soft_threshold(delta, config.outer_lr * config.gamma / delta.shape[0])
    return delta, theta, opt_state, value, err


_solve_lower_jit = jax.jit(solve_lower_level, static_argnames=("config", "task"))


def _as_problem(problem: dict, task: str) -> dict:
    req = ("z", "y", "z_audit", "y_audit", "a_audit", "s_audit", "c_audit")
    missing = [k for k in req if k not in problem]
    if missing:
        raise ValueError(f"problem lacks {missing}")
    out = {k: jnp.asarray(problem[k]) for k in req}
    if task == "classification":
        out["y"] = out["y"].astype(jnp.int32)
        out["y_audit"] = out["y_audit"].astype(jnp.int32)
    n, d = out["z"].shape
    m = out["z_audit"].shape[0]
    for k, shape in (("y", (n,)), ("z_audit", (m, d)), ("y_audit", (m,)), ("a_audit", (m, d)),
                     ("s_audit", (m, d)), ("c_audit", (m,))):
        if out[k].shape != shape:
            raise ValueError(f"problem[{k!r}] has shape {out[k].shape}, expected {shape}")
    return out


def bilevel_update(problem: dict, config: BilevelConfig, task: str, num_classes: int = 1,
                   theta_init: dict | None = None, progress: bool = False) -> BilevelResult:
    """Runs the outer optax loop on delta from "no perturbation" (Adebayo 2022, Sec. 5.2.4 BilevelUpdate).

    Warns with :class:`LowerLevelNotConverged` when any lower-level solve ends with its gradient norm
    above ``inner_tol``; a non-finite objective is a :class:`UserError`.
    """
    config.validate()
    if task not in TASKS:
        raise UserError(f"unknown task {task!r}; choose classification or regression")
    problem = _as_problem(problem, task)
    n, d = problem["z"].shape
    k = num_classes if task == "classification" else 1
    dtype = problem["z"].dtype
    delta = initial_delta(problem["y"], k, task, dtype)
    theta = theta_init if theta_init is not None else init_theta(d, k, dtype)
    if task == "regression":
        problem = {**problem, "y": problem["y"].astype(dtype), "y_audit": problem["y_audit"].astype(dtype)}
    # theta*(0): the starting model (and a warm start)
    theta, err0 = _solve_lower_jit(theta, delta, problem["z"], problem["y"], config=config, task=task)
    opt_state = outer_optimizer(config).init(delta)
    history, max_err = [], float(err0)
    for t in track(range(config.outer_steps), desc="bilevel", enabled=progress, leave=False):
        delta, theta, opt_state, value, err = outer_step(delta, theta, opt_state, problem, config=config,
                                                         task=task, num_classes=k)
        value, err = float(value), float(err)
        if not np.isfinite(value) or not np.isfinite(err):
            raise UserError(f"the bilevel update diverged at outer step {t + 1} (objective {value}); "
                            "lower BilevelConfig.outer_lr or raise its lower-level l2")
        max_err = max(max_err, err)
        history.append({"step": t + 1, "upper_objective": value, "lower_grad_norm": err})
    # the model that goes with the final delta
    theta, err = _solve_lower_jit(theta, delta, problem["z"], problem["y"], config=config, task=task)
    max_err = max(max_err, float(err))
    converged = max_err <= config.inner_tol * 1.0001
    if not converged:
        warnings.warn(f"the lower-level solver did not converge within {config.inner_maxiter} iterations "
                      f"(largest gradient norm {max_err:.3g} > tol {config.inner_tol:g}); the "
                      "hypergradient is approximate: raise inner_maxiter or l2",
                      LowerLevelNotConverged, stacklevel=2)
    return BilevelResult(np.asarray(delta), jax.device_get(theta), history, bool(converged), max_err)
