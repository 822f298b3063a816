"""AugMix (Hendrycks et al. 2020; Pradhan et al. 2020, Sec. 3 "Robustness Enhancement
Techniques", 1. Common Corruption): chains of operations from a pool, mixed with Dirichlet weights,
skip-connected to the clean image with a Beta weight, trained with a Jensen-Shannon consistency loss.

Every operation is a pure function ``op(image (H, W, C) in [0, 1], u, sign) -> image`` with ``u``
the sampled magnitude in (0, severity / 10] (the reference code's ``sample_level / 10``) and
``sign`` in {-1, 1}; chains run on device inside the jitted step (``lax.switch`` over the pool).
Solarize and the geometric ops (rotate, shear, translate: one ``dm_pix`` affine warp) use
``dm_pix``; autocontrast, equalize and posterize are written here. The pool leaves out the ops that overlap ImageNet-C corruptions, as AugMix does.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import dm_pix as pix
import jax
import jax.numpy as jnp

from repair_jax.errors import UserError
from repair_jax.objectives import Objective, forward, l2_penalty, softmax_cross_entropy
from repair_jax.robustness.augment import Augment, step_key


def _levels(img):
    return jnp.clip(jnp.floor(img * 255.0 + 0.5), 0, 255).astype(jnp.int32)


def autocontrast(img, u, sign):
    """Each channel rescaled so its darkest pixel is 0 and its brightest 1 (constant channels kept)."""
    lo, hi = img.min(axis=(0, 1)), img.max(axis=(0, 1))
    return jnp.where(hi > lo, (img - lo) / jnp.where(hi > lo, hi - lo, 1.0), img)


def _equalize_channel(ch):
    levels = _levels(ch)
    hist = jnp.bincount(levels.ravel(), length=256)
    last = hist[255 - jnp.argmax(hist[::-1] > 0)]  # count of the brightest level present
    step = (levels.size - last) // 255
    lut = (step // 2 + jnp.cumsum(hist) - hist) // jnp.maximum(step, 1)
    return jnp.where(step > 0, jnp.minimum(lut, 255)[levels] / 255.0, ch)


def equalize(img, u, sign):
    """Histogram equalization per channel over 8-bit grey levels, PIL's ``ImageOps.equalize`` (which
    AugMix's reference code calls): ``step = (N - h[last]) // 255``,
    ``lut[v] = (step // 2 + sum_{w < v} h[w]) // step`` (identity when step is 0)."""
    return jnp.moveaxis(jax.vmap(_equalize_channel, in_axes=-1)(img), 0, -1).astype(img.dtype)


def posterize(img, u, sign):
    """Keeps the top ``4 - int(4 u)`` bits of each 8-bit grey level."""
    shift = 8 - (4 - jnp.floor(u * 4).astype(jnp.int32))
    return ((_levels(img) >> shift) << shift).astype(img.dtype) / 255.0


def solarize(img, u, sign):
    """Inverts the pixels at or above ``(256 - int(256 u)) / 255``."""
    return pix.solarize(img, (256 - jnp.floor(u * 256)) / 255.0)


def _homogeneous(linear, shape, shift=(0.0, 0.0)):
    """Pull-form (output -> input coordinates) 4x4 matrix of a 2-D map about the image centre."""
    centre = (jnp.array(shape[:2], jnp.float32) - 1) / 2
    linear = jnp.asarray(linear, jnp.float32)
    offset = centre - linear @ centre + jnp.asarray(shift, jnp.float32)
    m = jnp.eye(4).at[:2, :2].set(linear)
    return m.at[:2, 3].set(offset)


def rotate_matrix(shape, u, sign):
    """Rotation by ``sign * int(30 u)`` degrees (the reference code's ``int_parameter(level, 30)``),
    in the sense of ``dm_pix.rotate``."""
    a = jnp.deg2rad(sign * jnp.floor(u * 30))
    return _homogeneous([[jnp.cos(a), jnp.sin(a)], [-jnp.sin(a), jnp.cos(a)]], shape)


def shear_x_matrix(shape, u, sign):
    return _homogeneous([[1.0, 0.0], [sign * 0.3 * u, 1.0]], shape)


def shear_y_matrix(shape, u, sign):
    return _homogeneous([[1.0, sign * 0.3 * u], [0.0, 1.0]], shape)


def translate_x_matrix(shape, u, sign):
    return _homogeneous(jnp.eye(2), shape, (0.0, sign * u * shape[1] / 3))


def translate_y_matrix(shape, u, sign):
    return _homogeneous(jnp.eye(2), shape, (sign * u * shape[0] / 3, 0.0))


GEOMETRIC_OPS: dict[str, Callable] = {
    "rotate": rotate_matrix, "shear_x": shear_x_matrix, "shear_y": shear_y_matrix,
    "translate_x": translate_x_matrix, "translate_y": translate_y_matrix,
}
PIXEL_OPS: dict[str, Callable] = {
    "autocontrast": autocontrast, "equalize": equalize, "posterize": posterize, "solarize": solarize,
}


def _geometric_op(matrix_fn):
    def op(img, u, sign):
        return pix.affine_transform(img, matrix_fn(img.shape, u, sign))
    return op


AUGMIX_OPS: dict[str, Callable] = {**PIXEL_OPS, **{k: _geometric_op(f) for k, f in GEOMETRIC_OPS.items()}}


def check_ops(ops: Sequence[str]) -> tuple[str, ...]:
    ops = tuple(ops)
    unknown = [o for o in ops if o not in AUGMIX_OPS]
    if unknown or not ops:
        raise UserError(f"unknown augmentation {unknown[0] if unknown else '(none given)'!r}; "
                        f"choose from {', '.join(AUGMIX_OPS)}")
    return ops


def _random_op(key, img, ops, severity: float):
    """One op drawn uniformly from ``ops`` at a random magnitude and sign. The geometric ops share one
    resampling (their matrices are selected), so a vmapped chain computes each pixel op and one warp."""
    ko, ku, kg = jax.random.split(key, 3)
    u = jax.random.uniform(ku, minval=0.1, maxval=severity) / 10.0
    sign = jnp.where(jax.random.bernoulli(kg), 1.0, -1.0)
    pixel = [o for o in ops if o in PIXEL_OPS]
    geometric = [o for o in ops if o in GEOMETRIC_OPS]
    branches = [functools.partial(PIXEL_OPS[o], u=u, sign=sign) for o in pixel]
    i = jax.random.randint(ko, (), 0, len(ops))
    if geometric:
        mats = jnp.stack([GEOMETRIC_OPS[o](img.shape, u, sign) for o in geometric])
        which = jnp.array([geometric.index(o) if o in geometric else 0 for o in ops])
        branches.append(lambda im: pix.affine_transform(im, mats[which[i]]))
    branch = jnp.array([pixel.index(o) if o in pixel else len(pixel) for o in ops])
    return jax.lax.switch(branch[i], branches, img)


def _chain(key, img, ops, depth: int, severity: float):
    """One chain: ``d`` ops (d uniform in 1..3 when ``depth <= 0``) applied in sequence."""
    steps = 3 if depth <= 0 else depth
    kd, kc = jax.random.split(key)
    d = jax.random.randint(kd, (), 1, 4) if depth <= 0 else depth

    def step(im, kj):
        k, j = kj
        return jnp.where(j < d, _random_op(k, im, ops, severity), im), None

    img, _ = jax.lax.scan(step, img, (jax.random.split(kc, steps), jnp.arange(steps)))
    return img


def _mixing_weights(key, width: int, alpha: float):
    """``w ~ Dirichlet(alpha 1_width)`` and ``m ~ Beta(alpha, alpha)`` from one draw of width + 2
    Gamma(alpha) variables (w = g / sum g; m = g_a / (g_a + g_b)); Gamma(1) is the exponential."""
    g = (jax.random.exponential(key, (width + 2,)) if alpha == 1.0
         else jax.random.gamma(key, alpha, (width + 2,)))
    return g[:width] / jnp.sum(g[:width]), g[width] / (g[width] + g[width + 1])


def augmix_image(key, img, ops=tuple(AUGMIX_OPS), width: int = 3, depth: int = -1,
                 severity: float = 3.0, alpha: float = 1.0):
    """AugMix of one image (H, W, C) (Hendrycks et al. 2020, Algorithm 1):
    ``x_augmix = m x + (1 - m) sum_i w_i chain_i(x)``, ``w ~ Dirichlet(alpha)``, ``m ~ Beta(alpha, alpha)``."""
    kg, kc = jax.random.split(key)
    w, m = _mixing_weights(kg, width, alpha)
    chains = jax.vmap(lambda k: _chain(k, img, ops, depth, severity))(jax.random.split(kc, width))
    return m * img + (1 - m) * jnp.tensordot(w, chains, axes=1)


def augmix_batch(key, x, **options):
    """:func:`augmix_image` on each image of ``x`` (N, H, W, C) with its own key."""
    return jax.vmap(lambda k, im: augmix_image(k, im, **options))(jax.random.split(key, x.shape[0]), x)


def jensen_shannon_consistency(*logits: jax.Array, eps: float = 1e-7) -> jax.Array:
    """Hendrycks et al. 2020 Eq. (JS): ``JS(p_1..p_m) = 1/m sum_i KL(p_i || M)``, ``M = mean_i p_i``
    (clipped to [eps, 1] as in the reference code); each logits (N, K) -> (N,)."""
    logps = [jax.nn.log_softmax(l, axis=-1) for l in logits]
    ps = [jnp.exp(lp) for lp in logps]
    log_m = jnp.log(jnp.clip(sum(ps) / len(ps), eps, 1.0))
    return sum(jnp.sum(p * (lp - log_m), axis=-1) for p, lp in zip(ps, logps)) / len(ps)


def augmix_objective(seed: int = 0, js_weight: float = 12.0, ops: Sequence[str] = tuple(AUGMIX_OPS),
                     width: int = 3, depth: int = -1, severity: float = 3.0, alpha: float = 1.0,
                     l2: float = 0.0, pre_augment: Augment | None = None) -> Objective:
    """AugMix training loss: ``CE(clean) + js_weight * JS(clean, augmix_1, augmix_2)`` over the
    batch, the three views through the model together (one BatchNorm batch), as the reference code.
    ``pre_augment(key, x)`` (e.g. :func:`repair_jax.robustness.deepaugment`) first replaces the clean
    batch (DeepAugment + AugMix)."""
    ops = check_ops(ops)
    if not 1 <= severity <= 10 or width < 1 or alpha <= 0 or js_weight < 0:
        raise UserError("AugMix needs severity in [1, 10], width >= 1, alpha > 0 and js_weight >= 0")
    options = dict(ops=ops, width=width, depth=depth, severity=severity, alpha=alpha)

    def objective(params, state, batch):
        key, kpre = jax.random.split(step_key(seed, state))
        x = batch["x"] if pre_augment is None else pre_augment(kpre, batch["x"])
        views = jnp.concatenate([x, augmix_batch(key, jnp.concatenate([x, x]), **options)])
        logits, _, batch_stats = forward(state, params, views, train=True)
        clean, a1, a2 = jnp.split(logits, 3)
        ce = jnp.mean(softmax_cross_entropy(clean, batch["y"]))
        js = jnp.mean(jensen_shannon_consistency(clean, a1, a2))
        loss = ce + js_weight * js + l2 * l2_penalty(params)
        return loss, (batch_stats, {"loss": loss, "ce": ce, "js": js})

    return objective
