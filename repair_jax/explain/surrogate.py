"""Model-agnostic attributions by local surrogate models on segments: LIME and KernelSHAP
(Adebayo 2022, Sec. 3.2, the methods "that approximate a model around a single input with
linear models": LIME, Ribeiro et al. 2016; SHAP, Lundberg and Lee 2017).

The interpretable features are the M segments of the image (:func:`segment_image`: a grid of patches
or scikit-image SLIC superpixels). A coalition ``z`` in {0, 1}^M keeps the segments with ``z_j = 1``
and sets the others to a baseline (:func:`masked_inputs`; default 0, the black image, as for
Integrated Gradients: the background of digits and Fashion-MNIST). Both methods regress the target
logit of the masked images on ``z`` and give every pixel its segment's coefficient, so the
attribution has ``x``'s shape (H, W, C).

They are NOT jittable end to end: the coalitions are drawn and the regression is solved on the host
(NumPy, scikit-learn, ``shap``). The model sees each chunk of masked images in one jitted batched
call (:func:`coalition_logits`, built on :func:`repair_jax.train.map_batched`), never one sample at a
time. :func:`repair_jax.explain.attribute` runs them example by example (``jittable = False``).
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from repair_jax.errors import UserError
from repair_jax.explain.model_fn import ApplyFn

SEGMENTATIONS = ("patches", "slic")
DISTANCES = ("cosine", "l2")


def patch_segments(height: int, width: int, n_segments: int) -> np.ndarray:
    """A g x g grid of near-equal patches, ``g = sqrt(n_segments)``: (H, W) int labels, row-major."""
    g = math.isqrt(max(n_segments, 0))
    if g * g != n_segments or not 1 <= g <= min(height, width):
        raise UserError(f"patches need n_segments = g * g with 1 <= g <= {min(height, width)} "
                        f"(4, 9, 16, ...), got {n_segments}")
    rows, cols = np.arange(height) * g // height, np.arange(width) * g // width
    return rows[:, None] * g + cols[None, :]


def _consecutive(labels: np.ndarray) -> np.ndarray:
    return np.unique(labels, return_inverse=True)[1].reshape(labels.shape)


def segment_image(x, segments="patches", n_segments: int = 16) -> np.ndarray:
    """The segments of one image ``x`` (H, W, C) as (H, W) int labels 0..M-1.

    ``segments``: ``"patches"`` (:func:`patch_segments`), ``"slic"`` (scikit-image SLIC with
    ``n_segments`` as the target number; compactness 10 on RGB converted to Lab, scikit-image's
    default, and 0.1 on grayscale or other channel counts in [0, 1]) or an explicit (H, W) integer
    label array (relabelled 0..M-1). Defaults: 16 segments, 2 x 2 patches of an 8 x 8 digit, 7 x 7
    patches of a 28 x 28 Fashion-MNIST image.
    """
    x = np.asarray(x)
    if not isinstance(segments, str):
        labels = np.asarray(segments)
        if labels.shape != x.shape[:2] or not np.issubdtype(labels.dtype, np.integer):
            raise UserError(f"segments must be 'patches', 'slic' or integer labels of shape {x.shape[:2]}, "
                            f"got {labels.dtype} {labels.shape}")
        return _consecutive(labels)
    if segments == "patches":
        return patch_segments(x.shape[0], x.shape[1], n_segments)
    if segments != "slic":
        raise UserError(f"unknown segmentation {segments!r}; choose one of {', '.join(SEGMENTATIONS)}")
    if n_segments < 1:
        raise UserError(f"n_segments must be >= 1, got {n_segments}")
    from skimage.segmentation import slic

    rgb = x.shape[-1] == 3
    image = x if x.shape[-1] > 1 else x[..., 0]
    labels = slic(image.astype(np.float64), n_segments=n_segments, compactness=10.0 if rgb else 0.1,
                  channel_axis=-1 if x.shape[-1] > 1 else None, convert2lab=rgb, start_label=0)
    return _consecutive(labels)


def masked_inputs(x, labels, masks, baseline) -> jax.Array:
    """Coalitions ``masks`` (S, M) in {0, 1} -> images (S, H, W, C): pixel p keeps ``x_p`` where
    ``masks[s, labels_p] = 1`` and is ``baseline_p`` elsewhere; ``labels`` (H, W), ``baseline`` x's shape."""
    keep = jnp.take(masks, labels, axis=1)[..., None]
    return baseline + keep * (x - baseline)


@functools.lru_cache(maxsize=16)
def _coalition_forward(apply_fn: ApplyFn):
    def forward(params, x, labels, baseline, target, masks):
        return apply_fn(params, masked_inputs(x, labels, masks, baseline))[:, target]

    return jax.jit(forward)


def coalition_logits(apply_fn: ApplyFn, params, x, target, labels, masks, baseline,
                     batch_size: int = 256) -> np.ndarray:
    """The target logit ``f_target`` of the masked images of ``masks`` (S, M) -> (S,) float64; masking
    and model run on device in one jitted call per fixed-size chunk (:func:`repair_jax.train.map_batched`)."""
    from repair_jax.train import map_batched

    forward = _coalition_forward(apply_fn)
    x, baseline = jnp.asarray(x, jnp.float32), jnp.asarray(baseline, jnp.float32)
    labels, target = jnp.asarray(labels, jnp.int32), jnp.asarray(target, jnp.int32)
    out = map_batched(lambda m: forward(params, x, labels, baseline, target, jnp.asarray(m)),
                      np.asarray(masks, np.float32), batch_size)
    return np.asarray(out, np.float64)


def segment_map(labels, weights, shape) -> jax.Array:
    """Every pixel gets its segment's weight: ``labels`` (H, W), ``weights`` (M,) -> ``shape`` (H, W, C)."""
    per_pixel = np.asarray(weights, np.float32)[np.asarray(labels)]
    return jnp.asarray(np.broadcast_to(per_pixel[..., None], shape))


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _prepare(x, target, segments, n_segments, samples, baseline, seed):
    """(x, labels, baseline) checked: x (H, W, C), labels (H, W), baseline x's shape (default zeros)."""
    x = np.asarray(x, np.float32)
    if x.ndim != 3:
        raise UserError(f"LIME / KernelSHAP explain one image (H, W, C), got shape {x.shape}")
    if not _is_int(samples) or samples < 1:
        raise UserError(f"samples must be an integer >= 1, got {samples!r}")
    if not _is_int(seed) or not 0 <= seed < 2 ** 32:
        raise UserError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    if np.ndim(target) != 0:
        raise UserError(f"target must be one class index, got {target!r}")
    base = np.zeros_like(x) if baseline is None else np.asarray(baseline, np.float32)
    try:
        base = np.broadcast_to(base, x.shape)
    except ValueError:
        raise UserError(f"baseline of shape {base.shape} does not broadcast to the image {x.shape}") from None
    return x, segment_image(x, segments, n_segments), base


def lime_kernel(masks, kernel_width: float, distance: str = "cosine") -> np.ndarray:
    """LIME's proximity ``pi_x(z) = exp(-D(1_M, z)^2 / sigma^2)`` (Ribeiro et al. 2016 Sec. 3.4) of
    coalitions ``masks`` (S, M) in {0, 1} to the whole image ``1_M``, with D the ``cosine`` distance
    ``1 - sqrt(|z| / M)`` (1 for z = 0) or the ``l2`` distance ``sqrt(M - |z|)``. (S,)."""
    if distance not in DISTANCES:
        raise UserError(f"unknown LIME distance {distance!r}; choose one of {', '.join(DISTANCES)}")
    if not kernel_width > 0:
        raise UserError(f"kernel_width must be > 0, got {kernel_width}")
    masks = np.asarray(masks, np.float64)
    kept = masks.sum(axis=1)
    d = 1.0 - np.sqrt(kept / masks.shape[1]) if distance == "cosine" else np.sqrt(masks.shape[1] - kept)
    return np.exp(-(d ** 2) / kernel_width ** 2)


def lime(apply_fn: ApplyFn, params, x, target, *, segments="patches", n_segments: int = 16,
         samples: int = 1000, kernel_width: float | None = None, distance: str = "cosine",
         ridge: float = 1.0, baseline=None, seed: int = 0) -> jax.Array:
    """LIME (Adebayo 2022, Sec. 3.2; Ribeiro et al. 2016): ``argmin_g L(f, g, pert(x)) + Omega(g)`` with g linear
    in the segment indicators z: ``samples`` coalitions drawn uniformly from {0, 1}^M by
    ``numpy.random.default_rng(seed)`` (the first is 1_M, x itself), the squared loss weighted by
    :func:`lime_kernel`, ``Omega(g) = ridge ||w||^2`` (scikit-learn ``Ridge`` with an intercept).
    ``kernel_width`` defaults to the ``lime`` package's 0.25 (cosine) / 0.75 sqrt(M) (l2).
    Host code, not jittable; same seed, same numbers. (H, W, C): each pixel its segment's coefficient.
    """
    from sklearn.linear_model import Ridge

    x, labels, base = _prepare(x, target, segments, n_segments, samples, baseline, seed)
    if not ridge >= 0:
        raise UserError(f"ridge must be >= 0, got {ridge}")
    m = int(labels.max()) + 1
    width = kernel_width if kernel_width is not None else (0.25 if distance == "cosine" else 0.75 * math.sqrt(m))
    masks = np.random.default_rng(seed).integers(0, 2, (samples, m)).astype(np.float64)
    masks[0] = 1.0
    weights = lime_kernel(masks, width, distance)
    y = coalition_logits(apply_fn, params, x, target, labels, masks, base)
    return segment_map(labels, Ridge(alpha=ridge).fit(masks, y, sample_weight=weights).coef_, x.shape)


lime.jittable = False


@contextlib.contextmanager
def _numpy_global_seed(seed: int):
    """NumPy's global generator seeded inside the block and restored after (``shap`` draws from it)."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _import_shap():
    try:
        with warnings.catch_warnings():
            # shap 0.51's colour maps call matplotlib's set_bad/over/under at import: harmless to us
            warnings.filterwarnings("ignore", r"The set_(bad|over|under) function", PendingDeprecationWarning)
            import shap
    except ImportError:
        raise UserError("kernel_shap needs the 'shap' package: pip install 'repair_jax[explain]'") from None
    return shap


def kernel_shap(apply_fn: ApplyFn, params, x, target, *, segments="patches", n_segments: int = 16,
                samples: int = 2048, baseline=None, seed: int = 0) -> jax.Array:
    """KernelSHAP (Adebayo 2022, Sec. 3.2; Lundberg and Lee 2017, Theorem 2): the Shapley values phi_j of the
    segments in the game ``v(S) = f_target(x with the segments outside S at the baseline)``, by
    ``shap.KernelExplainer``'s Shapley-kernel weighted regression on ``samples`` coalitions (all
    2^M - 2 of them, hence exact, when ``samples >= 2^M - 2``), without L1 feature selection;
    ``sum_j phi_j = f(x) - f(baseline)`` holds exactly (efficiency). shap samples from NumPy's global
    generator: seeded by ``seed`` for the call, restored after. Host code, not jittable; needs the
    ``explain`` extra. (H, W, C): each pixel its segment's Shapley value.
    """
    shap = _import_shap()
    x, labels, base = _prepare(x, target, segments, n_segments, samples, baseline, seed)
    m = int(labels.max()) + 1

    def game(masks):
        return coalition_logits(apply_fn, params, x, target, labels, masks, base)

    with _numpy_global_seed(seed):
        explainer = shap.KernelExplainer(game, np.zeros((1, m)))
        phi = explainer.shap_values(np.ones(m), nsamples=samples, l1_reg=False, silent=True)
    return segment_map(labels, phi, x.shape)


kernel_shap.jittable = False
