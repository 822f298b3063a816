"""AugMix (Hendrycks et al. 2020; 003_6c8075a951dacb8e.txt Sec. 3 "Robustness Enhancement
Techniques", 1. Common Corruption): chains of operations from a pool, mixed with Dirichlet weights,
skip-connected to the clean image with a Beta weight, trained with a Jensen-Shannon consistency loss.

Every operation is a pure function ``op(image (H, W, C) in [0, 1], u, sign) -> image`` with ``u``
the sampled magnitude in (0, severity / 10] (the reference code's ``sample_level / 10``) and
``sign`` in {-1, 1}; chains run on device inside the jitted step (``lax.switch`` over the pool).
Rotation, solarize and the affine ops use ``dm_pix``; autocontrast, equalize and posterize are
written here. The pool leaves out the ops that overlap ImageNet-C corruptions, as AugMix does.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import dm_pix as pix
import jax
import jax.numpy as jnp

from repair_jax.errors import UserError
from repair_jax.objectives import Objective, forward, l2_penalty, softmax_cross_entropy
from repair_jax.robustness.augment import step_key


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


def rotate_op(img, u, sign):
    """Rotation by ``sign * 30 u * 10 / 10`` degrees, i.e. up to 30 degrees at level 10."""
    return pix.rotate(img, jnp.deg2rad(sign * jnp.floor(u * 30)))


def _affine(img, row_from_col=0.0, col_from_row=0.0, drow=0.0, dcol=0.0):
    m = jnp.array([[1.0, row_from_col, 0.0, drow], [col_from_row, 1.0, 0.0, dcol],
                   [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    return pix.affine_transform(img, m)


def shear_x(img, u, sign):
    return _affine(img, col_from_row=sign * 0.3 * u)


def shear_y(img, u, sign):
    return _affine(img, row_from_col=sign * 0.3 * u)


def translate_x(img, u, sign):
    return _affine(img, dcol=sign * u * img.shape[1] / 3)


def translate_y(img, u, sign):
    return _affine(img, drow=sign * u * img.shape[0] / 3)


AUGMIX_OPS: dict[str, Callable] = {
    "autocontrast": autocontrast, "equalize": equalize, "posterize": posterize, "rotate": rotate_op,
    "solarize": solarize, "shear_x": shear_x, "shear_y": shear_y, "translate_x": translate_x,
    "translate_y": translate_y,
}


def check_ops(ops: Sequence[str]) -> tuple[str, ...]:
    ops = tuple(ops)
    unknown = [o for o in ops if o not in AUGMIX_OPS]
    if unknown or not ops:
        raise UserError(f"unknown augmentation {unknown[0] if unknown else '(none given)'!r}; "
                        f"choose from {', '.join(AUGMIX_OPS)}")
    return ops


def _chain(key, img, ops, depth: int, severity: float):
    """One chain: ``d`` ops (d uniform in 1..3 when ``depth <= 0``) drawn uniformly from ``ops``."""
    steps = 3 if depth <= 0 else depth
    kd, *keys = jax.random.split(key, steps + 1)
    d = jax.random.randint(kd, (), 1, 4) if depth <= 0 else depth
    fns = [AUGMIX_OPS[o] for o in ops]
    for j, k in enumerate(keys):
        ko, ku, kg = jax.random.split(k, 3)
        u = jax.random.uniform(ku, minval=0.1, maxval=severity) / 10.0
        sign = jnp.where(jax.random.bernoulli(kg), 1.0, -1.0)
        branches = [functools.partial(f, u=u, sign=sign) for f in fns]
        out = jax.lax.switch(jax.random.randint(ko, (), 0, len(fns)), branches, img)
        img = jnp.where(j < d, out, img)
    return img


def augmix_image(key, img, ops=tuple(AUGMIX_OPS), width: int = 3, depth: int = -1,
                 severity: float = 3.0, alpha: float = 1.0):
    """AugMix of one image (H, W, C) (Hendrycks et al. 2020, Algorithm 1):
    ``x_augmix = m x + (1 - m) sum_i w_i chain_i(x)``, ``w ~ Dirichlet(alpha)``, ``m ~ Beta(alpha, alpha)``."""
    kw, km, kc = jax.random.split(key, 3)
    w = jax.random.dirichlet(kw, jnp.full((width,), alpha))
    m = jax.random.beta(km, alpha, alpha)
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
                     l2: float = 0.0) -> Objective:
    """AugMix training loss: ``CE(clean) + js_weight * JS(clean, augmix_1, augmix_2)`` over the
    batch, the three views through the model together (one BatchNorm batch), as the reference code."""
    ops = check_ops(ops)
    if not 1 <= severity <= 10 or width < 1 or alpha <= 0 or js_weight < 0:
        raise UserError("AugMix needs severity in [1, 10], width >= 1, alpha > 0 and js_weight >= 0")
    options = dict(ops=ops, width=width, depth=depth, severity=severity, alpha=alpha)

    def objective(params, state, batch):
        k1, k2 = jax.random.split(step_key(seed, state))
        x = batch["x"]
        views = jnp.concatenate([x, augmix_batch(k1, x, **options), augmix_batch(k2, x, **options)])
        logits, _, batch_stats = forward(state, params, views, train=True)
        clean, a1, a2 = jnp.split(logits, 3)
        ce = jnp.mean(softmax_cross_entropy(clean, batch["y"]))
        js = jnp.mean(jensen_shannon_consistency(clean, a1, a2))
        loss = ce + js_weight * js + l2 * l2_penalty(params)
        return loss, (batch_stats, {"loss": loss, "ce": ce, "js": js})

    return objective
