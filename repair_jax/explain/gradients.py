"""Gradient-family feature attributions (Adebayo 2022, Sec. 3.2).

Each method is a pure function ``method(apply_fn, params, x, target, **options) -> attribution``
for ONE example ``x`` (H, W, C) and an integer class ``target``; the attribution has ``x``'s shape.
:func:`repair_jax.explain.attribute` jits and vmaps any of them over a batch. Attributions are
signed; the thesis's Grad and Input-Grad maps are their absolute values (a rendering step).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from repair_jax.errors import UserError
from repair_jax.explain.model_fn import ApplyFn, input_gradient, path_gradients

QUADRATURE_RULES = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid",
                    "gauss_legendre")
NOISE_KINDS = ("smoothgrad", "smoothgrad_sq", "smoothgrad_mean_sq", "vargrad")


def gradient(apply_fn: ApplyFn, params, x, target) -> jax.Array:
    """Gradient / saliency (Adebayo 2022, Sec. 3.2, Baehrens et al. 2010; Simonyan et al. 2014):
    ``grad_x f_{theta,target}(x)``; the thesis's M_grad is its absolute value. (H, W, C)."""
    return input_gradient(apply_fn, params, x, target)


def input_x_gradient(apply_fn: ApplyFn, params, x, target) -> jax.Array:
    """Input-Grad (Adebayo 2022, Sec. 3.2, Shrikumar et al. 2016): ``x * grad_x f_{theta,target}(x)``. (H, W, C)."""
    return x * input_gradient(apply_fn, params, x, target)


def quadrature(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes alpha (steps,) in [0, 1] and weights (steps,) of a rule for ``int_0^1 g(alpha) d alpha``.

    Riemann rules use ``steps`` equal cells (left/right/middle points; trapezoid on steps nodes
    including both ends); ``gauss_legendre`` maps numpy's Legendre nodes from [-1, 1] to [0, 1].
    """
    if rule not in QUADRATURE_RULES:
        raise UserError(f"unknown integration rule {rule!r}; choose one of {', '.join(QUADRATURE_RULES)}")
    if steps < (2 if rule == "riemann_trapezoid" else 1):
        raise UserError(f"steps must be >= {2 if rule == 'riemann_trapezoid' else 1} for {rule}, got {steps}")
    if rule == "gauss_legendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return (nodes + 1) / 2, weights / 2
    if rule == "riemann_trapezoid":
        alphas = np.linspace(0.0, 1.0, steps)
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] /= 2
        return alphas, weights
    offset = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[rule]
    return (np.arange(steps) + offset) / steps, np.full(steps, 1.0 / steps)


def integrated_gradients(apply_fn: ApplyFn, params, x, target, *, baseline=None, steps: int = 50,
                         rule: str = "gauss_legendre") -> jax.Array:
    """Integrated Gradients (Adebayo 2022, Sec. 3.2, Sundararajan et al. 2017):
    ``(x - xbar) * int_0^1 grad f(xbar + alpha (x - xbar)) d alpha`` by the quadrature ``rule``
    with ``steps`` nodes. ``baseline`` xbar: x's shape (default zeros, the black image). (H, W, C)."""
    baseline = jnp.zeros_like(x) if baseline is None else jnp.broadcast_to(baseline, x.shape)
    alphas, weights = quadrature(rule, steps)
    points = baseline[None] + jnp.asarray(alphas, x.dtype).reshape(-1, *([1] * x.ndim)) * (x - baseline)[None]
    grads = path_gradients(apply_fn, params, points, target)
    return (x - baseline) * jnp.tensordot(jnp.asarray(weights, x.dtype), grads, axes=1)


def expected_gradients(apply_fn: ApplyFn, params, x, target, *, references, samples: int = 50,
                       key=None) -> jax.Array:
    """Expected Gradients (Adebayo 2022, Sec. 3.2, Erion et al. 2019): IG with the baseline drawn from the data,
    estimated by ``mean_s (x - x'_s) * grad f(x'_s + alpha_s (x - x'_s))`` with ``x'_s`` drawn
    uniformly from ``references`` (M, H, W, C) and ``alpha_s ~ U(0, 1)``; ``samples`` draws. (H, W, C)."""
    key = jax.random.PRNGKey(0) if key is None else key
    k_ref, k_alpha = jax.random.split(key)
    refs = jnp.asarray(references, x.dtype)
    chosen = refs[jax.random.randint(k_ref, (samples,), 0, refs.shape[0])]
    alphas = jax.random.uniform(k_alpha, (samples,) + (1,) * x.ndim, x.dtype)
    grads = path_gradients(apply_fn, params, chosen + alphas * (x[None] - chosen), target)
    return jnp.mean((x[None] - chosen) * grads, axis=0)


def noise_tunnel(method: Callable, kind: str = "smoothgrad") -> Callable:
    """A smoothing wrapper over any attribution ``method`` (Captum's NoiseTunnel, Adebayo 2022, Sec. 3.2).

    The returned function has ``method``'s signature plus ``samples`` (N), ``stdev`` (sigma of the
    Gaussian noise n_i, in input units) and ``key``; it evaluates ``method`` at ``x + n_i`` and returns
    the mean (``smoothgrad``, Smilkov et al. 2017), the mean of the squares (``smoothgrad_sq``, Hooker et
    al. 2019, Captum's NoiseTunnel ``smoothgrad_sq``), the square of the mean (``smoothgrad_mean_sq``,
    SGradSQ as Adebayo 2022, Sec. 3.2 writes it) or the variance (``vargrad``, Adebayo et al. 2018a) over
    the N samples.
    """
    if kind not in NOISE_KINDS:
        raise UserError(f"unknown noise tunnel {kind!r}; choose one of {', '.join(NOISE_KINDS)}")

    def smoothed(apply_fn, params, x, target, *, samples: int = 50, stdev: float = 0.15, key=None, **options):
        key = jax.random.PRNGKey(0) if key is None else key
        noise = stdev * jax.random.normal(key, (samples, *x.shape), x.dtype)
        maps = jax.vmap(lambda n: method(apply_fn, params, x + n, target, **options))(noise)
        if kind == "vargrad":
            return jnp.var(maps, axis=0)
        if kind == "smoothgrad_sq":
            return jnp.mean(maps * maps, axis=0)
        mean = jnp.mean(maps, axis=0)
        return mean * mean if kind == "smoothgrad_mean_sq" else mean

    smoothed.__name__ = f"{kind}_{getattr(method, '__name__', 'method')}"
    smoothed.__doc__ = f"{kind} (noise_tunnel) over {getattr(method, '__name__', 'a method')}."
    return smoothed


smoothgrad = noise_tunnel(gradient, "smoothgrad")
smoothgrad_sq = noise_tunnel(gradient, "smoothgrad_sq")
smoothgrad_mean_sq = noise_tunnel(gradient, "smoothgrad_mean_sq")
vargrad = noise_tunnel(gradient, "vargrad")
