"""K-FAC and EK-FAC curvature for influence: the inverse-HVP of a Kronecker-factored Fisher, fitted once.

Sources (cited in issue 17 Part 3): Martens & Grosse 2015, "Optimizing neural networks with
Kronecker-factored approximate curvature" (K-FAC, Sec. 3: the Fisher block of a dense layer is
``E[a a^T] (x) E[g g^T]``); Grosse & Martens 2016, "A Kronecker-factored approximate Fisher matrix for
convolution layers" (KFC, Sec. 3.1: for a convolution ``Omega = E[sum_t a_t a_t^T]`` over the patches
``a_t`` of the positions t and ``Gamma = (1/T) E[sum_t g_t g_t^T]``); George et al. 2018, "Fast approximate
natural gradient descent in a Kronecker-factored eigenbasis" (EK-FAC, Sec. 3: keep K-FAC's eigenbasis
``Q_A (x) Q_S`` and refit the eigenvalues as the second moments of the gradients in it); Grosse et al.
2023 / Kronfluence (EK-FAC as the inverse-HVP of influence functions).

What is approximated. Influence (Adebayo 2022, Ch. 3.4, Eq. 3.1) needs ``(H + damping I)^{-1} v``
with H the Hessian of ``mean_i l(z_i) + l2/2 ||theta||^2``. Here H is replaced by ``F + l2 I`` with F the
Fisher of the per-example loss (the Gauss-Newton matrix of a softmax cross-entropy: equal to H for a
linear model, PSD always), and F by

* a block-diagonal matrix over layers (no curvature between two layers);
* per Dense / Conv layer ``A (x) S`` (K-FAC) with ``A = (1/N) sum_n sum_t a_nt a_nt^T`` (layer inputs, with a
  1 appended for the bias; Conv: im2col patches, t over positions) and ``S = (1/N) sum_n (1/T) sum_t g_nt g_nt^T``
  (gradients with respect to the layer's pre-activation outputs), or EK-FAC: the same eigenbasis
  ``Q_A (x) Q_S`` with eigenvalues ``Lambda = (1/N) sum_n (Q_A^T G_n Q_S)^2`` from the per-example layer
  gradients ``G_n = sum_t a_nt g_nt^T``;
* per eval-mode :class:`repair_jax.models.BatchNorm` (the stated fallback): the diagonal Fisher
  ``(1/N) sum_n G_n^2`` of its scale and bias. Parameters of any other layer raise :class:`repair_jax.errors.UserError`.

``fisher``: ``"true"`` (default, as K-FAC and Kronfluence: g from one label per example sampled from the
model's predictive distribution, ``seed``), ``"exact"`` (the expectation over all K labels, weights
``p_k``: K backward passes, no sampling noise; for a softmax output ``sum_k p_k (p - e_k)(p - e_k)^T =
diag(p) - p p^T``), or ``"empirical"`` (the given labels). ``"true"`` and ``"exact"`` need a loss with
``logits(params, x)`` (:class:`repair_jax.influence.ClassifierLoss`).

Per layer the damped inverse is ``(Q_A (x) Q_S) (Lambda + l2 + damping)^{-1} (Q_A (x) Q_S)^T``
(:func:`repair_jax.influence.kfac.kronecker_inverse_hvp`). ``relative_damping``: damping =
relative_damping x the largest eigenvalue of the approximation ``F_kfac + l2 I`` (exact, max over
layers; no power iterations). Factors are accumulated
over chunks of ``chunk_size`` examples (two passes for EK-FAC: factors, then eigenvalues), so memory is
bounded by one chunk's activations plus the factors (``sum_layers d_in^2 + d_out^2``).

The fit (:class:`repair_jax.influence.kfac.KfacFit`, a :class:`repair_jax.influence.InfluenceFit`) then
scores M test points as the other fitted methods: ``.solve(B)`` for a (P, M) block, ``.scores(test_batch)`` (M, N) in the
``I_up,loss`` convention, ``.self_influence()``. Its block solve is exact for the approximate system: the
reported residual is that of ``(F_kfac + l2 + damping) x = b``, not of the true Hessian.

Example::

    fit = fit_influence(loss, params, train, method="ekfac", l2=1e-2, relative_damping=0.01)
    scores, _ = fit.scores(test)          # (M, N)
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from repair_jax.errors import UserError
from repair_jax.influence.fitted import MAX_GRADIENT_BYTES, InfluenceFit, training_gradients
from repair_jax.influence.gradients import (
    LossFn, _chunks, _layer_grads, _names, _take, batch_size_of, conv_patches, layer_inputs_and_cotangents,
    per_example_grads,
)
from repair_jax.influence.hvp import DEFAULT_TOL

#: The curvatures of :func:`fit_kronecker`'s ``method``: K-FAC's eigenvalues, or EK-FAC's refitted ones.
VARIANTS = ("kfac", "ekfac")
FISHER = ("true", "exact", "empirical")


# ----------------------------------------------------------------------------- the formulas (pure)

def input_factor(a, weights):
    """K-FAC's A (Martens & Grosse 2015 Sec. 3; KFC's Omega, Grosse & Martens 2016 Sec. 3.1), unnormalised:
    ``sum_n w_n sum_t a_nt a_nt^T`` (d_in, d_in) for inputs ``a`` (n, T, d_in) (bias coordinate included),
    weights (n,)."""
    return jnp.einsum("n,nti,ntj->ij", weights, a, a)


def output_factor(g, weights):
    """K-FAC's S (KFC's Gamma, same sections), unnormalised: ``sum_n w_n (1/T) sum_t g_nt g_nt^T``
    (d_out, d_out) for the output gradients ``g`` (n, T, d_out), weights (n,)."""
    return jnp.einsum("n,nti,ntj->ij", weights, g, g) / g.shape[1]


def eigenbasis_second_moments(a, g, q_a, q_s, weights):
    """EK-FAC's corrected eigenvalues (George et al. 2018, Sec. 3), unnormalised:
    ``sum_n w_n (Q_A^T G_n Q_S)^2`` (d_in, d_out) with ``G_n = sum_t a_nt g_nt^T``, computed as
    ``(a Q_A)^T (g Q_S)`` (the inputs and output gradients rotated first). Shapes as
    :func:`repair_jax.influence.kfac.input_factor` and :func:`repair_jax.influence.kfac.output_factor`."""
    rotated = jnp.einsum("nta,nts->nas", jnp.einsum("nti,ia->nta", a, q_a), jnp.einsum("nto,os->nts", g, q_s))
    return jnp.einsum("n,nab->ab", weights, rotated * rotated)


def kronecker_inverse_hvp(v, q_a, q_s, eigenvalues, damping):
    """``(Q_A (x) Q_S) (Lambda + damping)^{-1} (Q_A (x) Q_S)^T v`` for M layer-shaped right-hand sides ``v``
    (M, d_in, d_out); ``q_a`` (d_in, d_in), ``q_s`` (d_out, d_out) orthogonal, ``eigenvalues`` (d_in, d_out)
    (K-FAC: the outer product of A's and S's eigenvalues; EK-FAC: the refitted ones). ``q_a = q_s = None``:
    the identity basis (a diagonal block)."""
    if q_a is None:
        return v / (eigenvalues + damping)
    rotated = jnp.einsum("ia,mio,os->mas", q_a, v, q_s)
    return jnp.einsum("ia,mas,os->mio", q_a, rotated / (eigenvalues + damping), q_s)


def kronecker_hvp(v, q_a, q_s, eigenvalues, damping):
    """The forward operator of :func:`repair_jax.influence.kfac.kronecker_inverse_hvp`:
    ``(Q_A (x) Q_S)(Lambda + damping)(...)^T v``."""
    return kronecker_inverse_hvp(v, q_a, q_s, 1.0 / (eigenvalues + damping), 0.0)


# ----------------------------------------------------------------------------- layers

@dataclasses.dataclass(frozen=True)
class KfacLayer:
    """One curvature block: the module ``path``, its ``kind`` (dense | conv: Kronecker-factored; bn: eval-mode
    BatchNorm, diagonal), whether it has a bias and the kernel's shape."""

    path: tuple
    kind: str
    use_bias: bool
    kernel_shape: tuple

    @property
    def name(self) -> str:
        return "/".join(self.path)

    @property
    def param_names(self) -> tuple:
        if self.kind == "bn":
            return ("scale", "bias")
        return ("kernel", "bias") if self.use_bias else ("kernel",)


def _layer_matrix(layer: KfacLayer, tree: dict):
    """A layer's parameters (or gradients) with a leading axis M as (M, d_in, d_out): the kernel with the
    input features ordered like the inputs (Conv: ``(in, *window)``, as
    :func:`repair_jax.influence.gradients.conv_patches`) and the bias as the last row; BatchNorm: rows
    (scale, bias)."""
    if layer.kind == "bn":
        return jnp.stack([tree["scale"], tree["bias"]], 1)
    k = tree["kernel"]
    if layer.kind == "conv":
        k = jnp.moveaxis(k, -2, 1)
    k = k.reshape(k.shape[0], -1, k.shape[-1])
    return jnp.concatenate([k, tree["bias"][:, None]], 1) if layer.use_bias else k


def _layer_tree(layer: KfacLayer, mat) -> dict:
    """The inverse of ``_layer_matrix``."""
    if layer.kind == "bn":
        return {"scale": mat[:, 0], "bias": mat[:, 1]}
    m, shape = mat.shape[0], layer.kernel_shape
    out = {"bias": mat[:, -1]} if layer.use_bias else {}
    k = mat[:, :-1] if layer.use_bias else mat
    if layer.kind == "conv":
        k = jnp.moveaxis(k.reshape((m, shape[-2]) + shape[:-2] + (shape[-1],)), 1, -2)
    out["kernel"] = k.reshape((m,) + shape)
    return out


def _inputs(layer: KfacLayer, calls):
    """(n, T, d_in) inputs of a Dense / Conv layer over all its calls (Conv: patches), 1 appended for the bias."""
    parts = []
    for _, m, a in calls:
        a = conv_patches(m, a) if layer.kind == "conv" else a.reshape(a.shape[0], -1, a.shape[-1])
        parts.append(jnp.concatenate([a, jnp.ones(a.shape[:2] + (1,), a.dtype)], 2) if layer.use_bias else a)
    return jnp.concatenate(parts, 1)


def _outputs(cots):
    return jnp.concatenate([g.reshape(g.shape[0], -1, g.shape[-1]) for g in cots], 1)


def find_layers(loss_fn: LossFn, params, batch: dict) -> tuple[KfacLayer, ...]:
    """The curvature blocks of the model (one shape-only trace of ``loss_fn``);
    :class:`repair_jax.errors.UserError` naming the parameters that lie in no supported layer (Dense, Conv
    without groups or input dilation, eval-mode BatchNorm)."""
    found: dict = {}

    def probe(p, b):
        record, _ = layer_inputs_and_cotangents(loss_fn, p, b)
        found.update({key: calls[0][:2] for key, calls in record.items()})
        return 0.0
    jax.eval_shape(probe, params, _take(batch, 0, 1, batch_size_of(batch)))
    layers, covered = [], set()
    for key, (kind, m) in found.items():
        shape = tuple(np.shape(functools.reduce(lambda d, k: d[k], key, params).get("kernel", ()))) \
            if kind != "bn" else ()
        layer = KfacLayer(tuple(key), kind, kind == "bn" or bool(m.use_bias), shape)
        layers.append(layer)
        covered.update(layer.path + (n,) for n in layer.param_names)
    missing = ["/".join(_names(path)) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]
               if _names(path) not in covered]
    if missing:
        raise UserError(f"K-FAC / EK-FAC covers flax.linen Dense, Conv and eval-mode BatchNorm layers only (found by "
                        f"linen interception: an NNX or plain-function model has none; use a method of "
                        f"repair_jax.influence.INFLUENCE_METHODS that needs no linen layers, e.g. cg); "
                        f"these parameters lie in none: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
    return tuple(layers)


# ----------------------------------------------------------------------------- accumulation over chunks

def _label_draws(loss_fn, fisher: str, params, batch: dict, mask, key):
    """(labels (D, n), weights (D, n)) whose weighted output gradients give the Fisher's S: the given labels
    (empirical), one sampled label per example (true) or all K labels weighted by ``p_k`` (exact)."""
    if fisher == "empirical":
        return batch["y"][None], mask[None]
    logits = loss_fn.logits(params, batch["x"])
    if fisher == "true":
        return jax.random.categorical(key, logits)[None], mask[None]
    k, n = logits.shape[-1], logits.shape[0]
    return jnp.broadcast_to(jnp.arange(k)[:, None], (k, n)), jax.nn.softmax(logits).T * mask[None]


def _draw_stats(loss_fn, layers, params, batch, y, w, mask_a, bases):
    """Per layer, the unnormalised statistics of one label draw: {"A", "S"} (no ``bases``) or the EK-FAC
    second moments "L" in ``bases``; BatchNorm blocks: "L", the weighted squared per-example gradients."""
    record, cots = layer_inputs_and_cotangents(loss_fn, params, {**batch, "y": y})
    out = {}
    for layer in layers:
        calls, gs = record[layer.path], cots[layer.path]
        if layer.kind == "bn":
            grads = _layer_matrix(layer, _layer_grads({layer.path: calls}, {layer.path: gs})[layer.path])
            out[layer.name] = {"L": jnp.einsum("n,nab->ab", w, grads * grads)}
        elif bases is None:
            out[layer.name] = {"A": input_factor(_inputs(layer, calls), mask_a), "S": output_factor(_outputs(gs), w)}
        else:
            q_a, q_s = bases[layer.name]
            out[layer.name] = {"L": eigenbasis_second_moments(_inputs(layer, calls), _outputs(gs), q_a, q_s, w)}
    return out


@functools.partial(jax.jit, static_argnames=("loss_fn", "layers", "fisher"))
def _chunk_stats(loss_fn, layers, fisher, params, batch, mask, key, bases):
    """``_draw_stats`` summed over the label draws of one chunk (``lax.map`` over the K draws of the
    exact Fisher; A is weighted by 1/D per draw so that it is counted once)."""
    ys, ws = _label_draws(loss_fn, fisher, params, batch, mask, key)
    d = ys.shape[0]
    one = lambda yw: _draw_stats(loss_fn, layers, params, batch, yw[0], yw[1], mask / d, bases)
    if d == 1:
        return one((ys[0], ws[0]))
    return jax.tree_util.tree_map(lambda a: a.sum(0), jax.lax.map(one, (ys, ws)))


def _accumulate(loss_fn, layers, fisher, params, batch, chunk_size, seed, bases=None):
    """``_chunk_stats`` over chunks of ``chunk_size`` examples (the last padded, its padding weighted 0),
    divided by N. The sampled labels of chunk i come from ``fold_in(PRNGKey(seed), i)``, the same in both
    passes of EK-FAC."""
    n = batch_size_of(batch)
    size, spans = _chunks(n, chunk_size)
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    total = None
    for i, (start, count) in enumerate(spans):
        chunk = _take(batch, start, size, n) if size != n else batch
        mask = (jnp.arange(size) < count).astype(dtype)
        part = _chunk_stats(loss_fn, layers, fisher, params, chunk, mask,
                            jax.random.fold_in(jax.random.PRNGKey(seed), i), bases)
        total = part if total is None else jax.tree_util.tree_map(jnp.add, total, part)
    return jax.tree_util.tree_map(lambda a: a / n, total)


def _eigh(a):
    """Eigen-decomposition of a symmetric PSD factor (LAPACK on the host: no compilation per shape),
    eigenvalues clipped at 0 (rounding)."""
    a = np.asarray(a)
    w, q = np.linalg.eigh(0.5 * (a + a.T))
    return jnp.asarray(np.maximum(w, 0.0), a.dtype), jnp.asarray(q, a.dtype)


def kronecker_curvature(loss_fn: LossFn, params, batch: dict, *, method: str = "ekfac", fisher: str = "true",
                        chunk_size: int | None = 512, seed: int = 0, layers=None) -> dict:
    """``{"blocks": {layer name: (Q_A, Q_S, Lambda)}, "factors": {layer name: (A, S)}}`` of K-FAC / EK-FAC
    (module docstring; A and S divided by N); BatchNorm blocks ``(None, None, diagonal Fisher)``."""
    _check_method(method, fisher, loss_fn)
    layers = layers or find_layers(loss_fn, params, batch)
    stats = _accumulate(loss_fn, layers, fisher, params, batch, chunk_size, seed)
    curvature, bases, factors = {}, {}, {}
    for layer in layers:
        st = stats[layer.name]
        if layer.kind == "bn":
            curvature[layer.name] = (None, None, st["L"])
            continue
        (w_a, q_a), (w_s, q_s) = _eigh(st["A"]), _eigh(st["S"])
        bases[layer.name], factors[layer.name] = (q_a, q_s), (st["A"], st["S"])
        curvature[layer.name] = (q_a, q_s, jnp.asarray(np.outer(w_a, w_s)))
    if method == "ekfac" and bases:
        corrected = _accumulate(loss_fn, layers, fisher, params, batch, chunk_size, seed, bases)
        for name, (q_a, q_s) in bases.items():
            curvature[name] = (q_a, q_s, corrected[name]["L"])
    return {"blocks": curvature, "factors": factors}


# ----------------------------------------------------------------------------- the fitted object

@dataclasses.dataclass
class KfacFit(InfluenceFit):
    """An :class:`repair_jax.influence.InfluenceFit` whose curvature is K-FAC / EK-FAC (module docstring):
    ``layers`` the blocks, ``curvature`` per block ``(Q_A, Q_S, Lambda)``, ``factors`` per Kronecker block
    ``(A, S)``, ``fisher`` the Fisher used, ``l2`` added to every eigenvalue with the damping. Block solves
    are direct (one iteration); the residual is that of the approximate system."""

    layers: tuple = ()
    curvature: dict | None = None
    factors: dict | None = None
    fisher: str = "true"
    l2: float = 0.0

    def apply_blocks(self, b, inverse: bool = True):
        """``(F_kfac + (l2 + damping) I)^{-1} B`` (or, ``inverse=False``, the operator itself) for a (P, M)
        block of flat vectors, layer by layer (jitted; compiled once per model and block shape)."""
        return _apply_blocks(self.layers, inverse, self.params, self.curvature, self.l2 + self.damping, b)

    def _solve_block(self, b):
        x, ax = _solve_and_apply(self.layers, self.params, self.curvature, self.l2 + self.damping, b)
        return x, np.ones(b.shape[1], int), ax, None  # a direct solve: no CG report

    def upweight_scores(self, x) -> jax.Array:
        """``-x_j . grad l(z_i)`` (M, N) for the (P, M) block ``x``: from the stored G, else (G over
        the memory limit, as Kronfluence scores) per-example training gradients one chunk of ``chunk_size``
        at a time times ``x``: one gradient pass for any M, memory ``chunk_size * P``."""
        if self.grads is not None:
            return super().upweight_scores(x)
        n = batch_size_of(self.train_batch)
        step = self.chunk_size or n
        parts = [per_example_grads(self.loss_fn, self.params,
                                   jax.tree_util.tree_map(lambda a: a[s:s + step], self.train_batch), flat=True) @ x
                 for s in range(0, n, step)]
        return -jnp.concatenate(parts).T


def _blockwise(layers, inverse, params, curvature, shift, b):
    """:meth:`repair_jax.influence.kfac.KfacFit.apply_blocks` as a pure function of the (P, M) block ``b``."""
    unravel = ravel_pytree(params)[1]
    trees = jax.vmap(unravel, in_axes=1)(b)
    flat, treedef = jax.tree_util.tree_flatten_with_path(trees)
    blocks = {}
    for layer in layers:
        q_a, q_s, lam = curvature[layer.name]
        mat = _layer_matrix(layer, functools.reduce(lambda d, k: d[k], layer.path, trees))
        op = kronecker_inverse_hvp if inverse else kronecker_hvp
        blocks[layer.path] = _layer_tree(layer, op(mat, q_a, q_s, lam, shift))
    out = jax.tree_util.tree_unflatten(treedef, [blocks[_names(p)[:-1]][_names(p)[-1]] for p, _ in flat])
    return jax.vmap(lambda t: ravel_pytree(t)[0], out_axes=1)(out)


_apply_blocks = jax.jit(_blockwise, static_argnums=(0, 1))


@functools.partial(jax.jit, static_argnums=0)
def _solve_and_apply(layers, params, curvature, shift, b):
    """(x, A x) for x = A^{-1} b with A the damped approximate curvature: the solve and its residual check."""
    x = _blockwise(layers, True, params, curvature, shift, b)
    return x, _blockwise(layers, False, params, curvature, shift, x)


def _check_method(method: str, fisher: str, loss_fn) -> None:
    if method not in VARIANTS:
        raise UserError(f"unknown Kronecker-factored method {method!r}; choose one of {', '.join(VARIANTS)}")
    if fisher not in FISHER:
        raise UserError(f"unknown Fisher {fisher!r}; choose one of {', '.join(FISHER)}")
    if fisher != "empirical" and not callable(getattr(loss_fn, "logits", None)):
        raise UserError(f"the {fisher} Fisher samples labels from the model: the loss needs logits(params, x) "
                        "(a ClassifierLoss); pass fisher='empirical' otherwise")
    if fisher != "empirical" and getattr(loss_fn, "multilabel", False):
        raise UserError("the true / exact Fisher is for softmax classifiers; pass fisher='empirical' for multilabel")


def _check_options(method: str, fisher: str, loss_fn, damping: float, relative_damping, l2: float) -> None:
    _check_method(method, fisher, loss_fn)
    if relative_damping is not None and not relative_damping >= 0:
        raise UserError(f"relative damping must be >= 0, got {relative_damping}")
    if not damping >= 0 or not l2 >= 0:
        raise UserError(f"damping and l2 must be >= 0, got {damping}, {l2}")


def fit_kronecker(loss_fn: LossFn, params, train_batch: dict, *, method: str = "ekfac", fisher: str = "true",
                  l2: float = 0.0, damping: float = 0.0, relative_damping: float | None = None,
                  chunk_size: int | None = 512, seed: int = 0, tol: float | None = None,
                  store_gradients: bool | None = None, max_gradient_bytes: int = MAX_GRADIENT_BYTES) -> KfacFit:
    """Fits K-FAC (``method="kfac"``) or EK-FAC (``"ekfac"``) curvature for the training objective
    ``mean_i l(z_i) + l2/2 ||theta||^2`` (module docstring) and, as :func:`repair_jax.influence.fit_influence`,
    the (N, P) training gradients unless over ``max_gradient_bytes``. ``relative_damping`` (instead of
    ``damping``) x the largest eigenvalue of the approximate curvature. UserError when damping + l2 is 0
    and the approximation is singular. ``tol``: the residual tolerance of the reported (direct) solves."""
    _check_options(method, fisher, loss_fn, damping, relative_damping, l2)
    if batch_size_of(train_batch) == 0:
        raise UserError("the training batch is empty")
    layers = find_layers(loss_fn, params, train_batch)
    out = kronecker_curvature(loss_fn, params, train_batch, method=method, fisher=fisher, chunk_size=chunk_size,
                              seed=seed, layers=layers)
    eigenvalues = [np.asarray(lam) for _, _, lam in out["blocks"].values()]
    eig = max(float(lam.max()) for lam in eigenvalues) + l2
    if relative_damping is not None:
        damping = relative_damping * eig
    smallest = min(float(lam.min()) for lam in eigenvalues) + l2 + damping
    if not smallest > 0:
        raise UserError(f"the {method} curvature is singular (smallest eigenvalue {smallest:.3g}): pass damping > 0 "
                        "or relative_damping > 0")
    flat, unravel = ravel_pytree(params)
    fit = KfacFit(loss_fn, params, train_batch, method, float(damping), eig, None, unravel,
                  DEFAULT_TOL["explicit"] if tol is None else float(tol), 1, chunk_size, layers=layers,
                  curvature=out["blocks"], factors=out["factors"], fisher=fisher, l2=float(l2))
    fit.matvec = lambda v: fit.apply_blocks(v[:, None], False)[:, 0]
    fit.grads = training_gradients(loss_fn, params, train_batch, store=store_gradients, max_bytes=max_gradient_bytes,
                                   chunk_size=chunk_size)
    return fit


def fit_kfac(loss_fn: LossFn, params, train_batch: dict, **options) -> KfacFit:
    """K-FAC curvature (Martens & Grosse 2015; KFC for Conv): :func:`repair_jax.influence.kfac.fit_kronecker`
    with ``method="kfac"``."""
    return fit_kronecker(loss_fn, params, train_batch, method="kfac", **options)


def fit_ekfac(loss_fn: LossFn, params, train_batch: dict, **options) -> KfacFit:
    """EK-FAC curvature (George et al. 2018): :func:`repair_jax.influence.kfac.fit_kronecker` with
    ``method="ekfac"``."""
    return fit_kronecker(loss_fn, params, train_batch, method="ekfac", **options)
