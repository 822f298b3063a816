"""Influence methods as values: one registry, :data:`INFLUENCE_METHODS`, of what each method computes,
needs and supports.

An :class:`InfluenceMethod` holds pure functions and declared capabilities; the fitted API
(:func:`fit_influence`), the LDS harness (:mod:`repair_jax.influence.evaluate`), the CLI
(:mod:`repair_jax.influence.workflow`) and the docs' table of methods read the declarations and never
ask which method they hold:

* ``attribute(loss_fn, params, train_batch, test_batch, **options)`` -> (T, N) scores ``tau(z_t)_i`` in
  the ``I_up,loss`` convention (Adebayo 2022, Ch. 3.4, Eq. 3.1: positive = upweighting z_i raises the test
  loss); ``self_influence(loss_fn, params, train_batch, indices, **options)`` -> (K,) ``g_i^T H^{-1} g_i``
  with the method's curvature. ``options``: ``l2``, ``damping``, ``tol``, ``max_iter``, ``chunk_size``,
  ``projection_dim`` (each method uses those it names in :attr:`InfluenceMethod.options` or the common ones).
* ``fit(loss_fn, params, train_batch, **options)`` -> a fitted inverse-HVP operator
  (:class:`repair_jax.influence.InfluenceFit`: ``solve`` for any (P, M) block, ``scores``,
  ``self_influence``), or None for a method without one (TracIn, TRAK).
* ``curvature``: what replaces the Hessian H: ``hessian`` (H itself, by HVPs: ``needs_hessian``),
  ``kronecker`` (a Kronecker-factored Fisher, from the layers a flax.linen interceptor sees: linen models
  only, ``model_kinds``), ``projected`` (the empirical Fisher of randomly projected gradients:
  ``needs_projection``) or ``none`` (the gradient dot product).
* ``uses_checkpoints``: the method sums over the checkpoints a run kept (TracInCP); a run without them is
  scored at its final weights alone, and the summary says so.

Adding a method is one function (or two) and one entry of :data:`INFLUENCE_METHODS`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from repair_jax.errors import UserError
from repair_jax.influence.fitted import MAX_GRADIENT_BYTES, InfluenceFit, fit_hessian
from repair_jax.influence.functions import tracin_scores
from repair_jax.influence.gradients import LossFn, batch_size_of, per_example_grads
from repair_jax.influence.kfac import fit_kronecker
from repair_jax.influence.projection import fit_projected

#: The kinds of model (``apply_fn.kind`` of :class:`repair_jax.influence.ClassifierLoss`) a method may support.
MODEL_KINDS = ("linen", "nnx", "function")
CURVATURES = ("hessian", "kronecker", "projected", "none")
#: The trak method's default projection dimension (capped at the number of parameters).
TRAK_DIM = 512


@dataclasses.dataclass(frozen=True)
class InfluenceMethod:
    """One influence method: its functions and what it needs (module docstring)."""

    name: str
    description: str
    citation: str
    curvature: str
    attribute: Callable
    self_influence: Callable
    fit: Callable | None = None
    options: tuple[str, ...] = ()  # options of ``fit`` beyond the common ones (l2, damping, tol, ...)
    uses_checkpoints: bool = False
    model_kinds: tuple[str, ...] = MODEL_KINDS

    @property
    def fits(self) -> bool:
        """Has a fitted inverse-HVP operator (block solves for any number of right-hand sides)."""
        return self.fit is not None

    @property
    def needs_hessian(self) -> bool:
        """Solves with the exact Hessian of the training objective (Hessian-vector products)."""
        return self.curvature == "hessian"

    @property
    def needs_projection(self) -> bool:
        """Scores randomly projected gradients (``projection_dim``)."""
        return self.curvature == "projected"

    @property
    def linen_only(self) -> bool:
        return self.model_kinds == ("linen",)


# ----------------------------------------------------------------------------- the methods' functions

def _take(batch: dict, indices) -> dict:
    return jax.tree_util.tree_map(lambda a: a[np.asarray(indices)], batch)


def _fitted_attribute(loss_fn: LossFn, params, train_batch: dict, test_batch: dict, *, method: str,
                      l2: float = 0.0, damping: float = 0.0, tol=None, max_iter=None, chunk_size=None,
                      projection_dim=None) -> np.ndarray:
    """(T, N): one fit, all T test gradients in one block solve (Eq. 3.1); ``projection_dim`` unused."""
    fit = fit_influence(loss_fn, params, train_batch, method=method, l2=l2, damping=damping, tol=tol,
                        max_iter=max_iter, chunk_size=chunk_size)
    return np.asarray(fit.upweight_scores(fit.solve(fit.test_gradients(test_batch).T).x))


def _fitted_self_influence(loss_fn: LossFn, params, train_batch: dict, indices, *, method: str, l2: float = 0.0,
                           damping: float = 0.0, tol=None, max_iter=None, chunk_size=None,
                           projection_dim=None) -> np.ndarray:
    """(K,) ``g_i^T (H + damping I)^{-1} g_i`` for the training points ``indices``, one block solve."""
    g = per_example_grads(loss_fn, params, _take(train_batch, indices), flat=True, chunk_size=chunk_size)
    fit = fit_influence(loss_fn, params, train_batch, method=method, l2=l2, damping=damping, tol=tol,
                        max_iter=max_iter, chunk_size=chunk_size, store_gradients=False)
    return np.asarray(jnp.sum(g.T * fit.solve(g.T).x, axis=0))


def tracin_attribute(loss_fn: LossFn, params, train_batch: dict, test_batch: dict, *, chunk_size=None,
                     **unused) -> np.ndarray:
    """(T, N) ``-<grad l(z_t), grad l(z_i)>`` at ``params``: TracInCP (Pruthi et al. 2020, Sec. 3) with one
    checkpoint and learning rate 1, negated into the ``I_up,loss`` convention (no curvature: the solver
    options do not apply)."""
    return -np.asarray(tracin_scores(loss_fn, [params], [1.0], train_batch, test_batch, chunk_size=chunk_size))


def tracin_self_influence(loss_fn: LossFn, params, train_batch: dict, indices, *, chunk_size=None,
                          **unused) -> np.ndarray:
    """(K,) ``||g_i||^2`` (TracIn's self-influence, Pruthi et al. 2020, Sec. 3)."""
    g = per_example_grads(loss_fn, params, _take(train_batch, indices), flat=True, chunk_size=chunk_size)
    return np.asarray(jnp.sum(g * g, axis=1))


def trak_fit(loss_fn: LossFn, params, train_batch: dict, *, l2: float = 0.0, damping: float = 0.0,
             projection_dim: int = TRAK_DIM, chunk_size=None):
    """(N, :func:`repair_jax.influence.fit_projected` of the one model) with ``k = min(projection_dim, P)``
    (Rademacher, seed 0) and ridge ``N (damping + l2)``: N times its scores are ``I_up,loss`` with the Hessian
    of the training objective replaced by ``Phi^T Phi / N + (damping + l2) I``, the projected empirical Fisher
    plus the damping and L2 term the other methods use (TRAK, Park et al. 2023, Sec. 3, one model)."""
    n, p = batch_size_of(train_batch), int(ravel_pytree(params)[0].size)
    if not isinstance(projection_dim, (int, np.integer)) or projection_dim < 1:
        raise UserError(f"the projection dimension must be an integer >= 1, got {projection_dim!r}")
    return n, fit_projected(loss_fn, [params], train_batch, min(int(projection_dim), p),
                            damping=n * (damping + l2), chunk_size=chunk_size)


def trak_attribute(loss_fn: LossFn, params, train_batch: dict, test_batch: dict, *, l2: float = 0.0,
                   damping: float = 0.0, projection_dim: int = TRAK_DIM, chunk_size=None, **unused) -> np.ndarray:
    """(T, N) N times the scores of :func:`trak_fit` (tol and max_iter do not apply)."""
    n, fit = trak_fit(loss_fn, params, train_batch, l2=l2, damping=damping, projection_dim=projection_dim,
                      chunk_size=chunk_size)
    return n * np.asarray(fit.scores(test_batch))


def trak_self_influence(loss_fn: LossFn, params, train_batch: dict, indices, *, l2: float = 0.0,
                        damping: float = 0.0, projection_dim: int = TRAK_DIM, chunk_size=None,
                        **unused) -> np.ndarray:
    """(K,) N times :meth:`repair_jax.influence.ProjectedFit.self_influence` of :func:`trak_fit`."""
    n, fit = trak_fit(loss_fn, params, train_batch, l2=l2, damping=damping, projection_dim=projection_dim,
                      chunk_size=chunk_size)
    return n * np.asarray(fit.self_influence(indices))


def _fitted(name: str, description: str, citation: str, curvature: str, fit: Callable, options=(),
            model_kinds=MODEL_KINDS) -> InfluenceMethod:
    """An entry whose scores come from its fitted inverse-HVP operator."""
    return InfluenceMethod(name, description, citation, curvature,
                           functools.partial(_fitted_attribute, method=name),
                           functools.partial(_fitted_self_influence, method=name),
                           fit=fit, options=tuple(options), model_kinds=model_kinds)


INFLUENCE_METHODS: dict[str, InfluenceMethod] = {m.name: m for m in (
    _fitted("explicit", "the dense damped Hessian, factorised once (Cholesky, else eigh)",
            "Koh & Liang 2017, Sec. 3", "hessian", functools.partial(fit_hessian, method="explicit")),
    _fitted("cg", "conjugate gradients on Hessian-vector products, vmapped over the right-hand sides",
            "Koh & Liang 2017, Sec. 3", "hessian", functools.partial(fit_hessian, method="cg"),
            options=("max_iter", "progress")),
    _fitted("lissa", "LiSSA: the Neumann series of the scaled damped Hessian, on the whole block",
            "Agarwal et al. 2017, Sec. 4; Koh & Liang 2017, Sec. 3", "hessian",
            functools.partial(fit_hessian, method="lissa"), options=("max_iter", "scale")),
    _fitted("kfac", "K-FAC: a Kronecker-factored Fisher per Dense / Conv layer, diagonal for BatchNorm",
            "Martens & Grosse 2015, Sec. 3; Grosse & Martens 2016, Sec. 3.1", "kronecker",
            functools.partial(fit_kronecker, method="kfac"), options=("fisher", "seed"), model_kinds=("linen",)),
    _fitted("ekfac", "EK-FAC: K-FAC's eigenbasis with refitted eigenvalues",
            "George et al. 2018, Sec. 3; Grosse et al. 2023, Sec. 2", "kronecker",
            functools.partial(fit_kronecker, method="ekfac"), options=("fisher", "seed"), model_kinds=("linen",)),
    InfluenceMethod("tracin", "TracInCP: learning-rate-weighted gradient dot products over checkpoints",
                    "Pruthi et al. 2020, Sec. 3", "none", tracin_attribute, tracin_self_influence,
                    uses_checkpoints=True),
    InfluenceMethod("trak", "random-projection influence with the projected empirical Fisher",
                    "Park et al. 2023, Sec. 3", "projected", trak_attribute, trak_self_influence,
                    options=("projection_dim",)),
)}
#: Names of the methods with a fitted inverse-HVP operator (:func:`fit_influence`).
FIT_METHODS = tuple(n for n, m in INFLUENCE_METHODS.items() if m.fits)
#: Names of the Kronecker-factored methods (:mod:`repair_jax.influence.kfac`).
KFAC_METHODS = tuple(n for n, m in INFLUENCE_METHODS.items() if m.curvature == "kronecker")


def get_influence_method(name: str) -> InfluenceMethod:
    """The method registered as ``name``; an unknown name is one :class:`UserError` listing the choices."""
    if name not in INFLUENCE_METHODS:
        raise UserError(f"unknown influence method {name!r}; choose one of {', '.join(INFLUENCE_METHODS)}")
    return INFLUENCE_METHODS[name]


def check_model(method: InfluenceMethod, loss_fn) -> None:
    """UserError when ``loss_fn``'s model (``apply_fn.kind``: linen | nnx | function) is one ``method``
    does not support, naming the methods that do; a loss of unknown kind is left to the method."""
    kind = getattr(getattr(loss_fn, "apply_fn", None), "kind", None)
    if kind in MODEL_KINDS and kind not in method.model_kinds:
        others = [n for n, m in INFLUENCE_METHODS.items() if kind in m.model_kinds]
        raise UserError(f"{method.name} supports {', '.join(method.model_kinds)} models only (it needs their layers), "
                        f"not this {kind} model; choose one of {', '.join(others)}")


def check_options(method: InfluenceMethod, **given) -> None:
    """UserError naming each option given (not None) that ``method`` does not take, and the methods that do."""
    for option, value in given.items():
        if value is not None and option not in method.options:
            takers = [n for n, m in INFLUENCE_METHODS.items() if option in m.options]
            raise UserError(f"{option} is an option of the {', '.join(takers)} method(s), not of {method.name}")


def fit_influence(loss_fn: LossFn, params, train_batch: dict, *, method: str = "explicit", l2: float = 0.0,
                  damping: float = 0.0, relative_damping: float | None = None, chunk_size: int | None = 512,
                  tol: float | None = None, max_iter: int | None = None, store_gradients: bool | None = None,
                  max_gradient_bytes: int = MAX_GRADIENT_BYTES, scale: float | None = None,
                  fisher: str | None = None, seed: int | None = None, progress: bool = False) -> InfluenceFit:
    """The fitted inverse-HVP operator of ``method`` (a name of :data:`FIT_METHODS`) for the training
    objective ``mean_i l(z_i) + l2/2 ||theta||^2``: explicit / cg / lissa by
    :func:`repair_jax.influence.fitted.fit_hessian`, kfac / ekfac by
    :func:`repair_jax.influence.kfac.fit_kronecker` (``relative_damping`` then relative to the
    approximation's largest eigenvalue). Common options: ``l2``, ``damping`` or ``relative_damping``,
    ``chunk_size``, ``tol``, ``store_gradients``, ``max_gradient_bytes``; the others only where the entry
    lists them (``max_iter``: cg, lissa; ``scale``: lissa; ``fisher``, ``seed``: kfac, ekfac): given to
    another method they are a :class:`UserError`. ``progress`` reports long CG solves (ignored elsewhere).
    A model the method does not support (K-FAC on an NNX model) is refused before anything is computed."""
    entry = get_influence_method(method)
    if not entry.fits:
        raise UserError(f"{method} has no fitted inverse-HVP operator; choose one of {', '.join(FIT_METHODS)}")
    check_model(entry, loss_fn)
    specific = {"max_iter": max_iter, "scale": scale, "fisher": fisher, "seed": seed}
    check_options(entry, **specific)
    options = {k: v for k, v in specific.items() if v is not None}
    if progress and "progress" in entry.options:
        options["progress"] = True
    return entry.fit(loss_fn, params, train_batch, l2=l2, damping=damping, relative_damping=relative_damping,
                     chunk_size=chunk_size, tol=tol, store_gradients=store_gradients,
                     max_gradient_bytes=max_gradient_bytes, **options)
