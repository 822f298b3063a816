"""On-device data augmentation for the bias study (Sharma n.d., Que-2 "Data techniques for
bias mitigation": RandomHorizontalFlip and RandomRotation), as a wrapper over any objective."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates


def rotate(image: jax.Array, degrees: jax.Array) -> jax.Array:
    """``image`` (H, W, C) rotated by ``degrees`` about its centre, bilinear, zeros outside."""
    h, w, _ = image.shape
    t = jnp.deg2rad(degrees)
    yy, xx = jnp.meshgrid(jnp.arange(h) - (h - 1) / 2, jnp.arange(w) - (w - 1) / 2, indexing="ij")
    src_y = jnp.cos(t) * yy - jnp.sin(t) * xx + (h - 1) / 2
    src_x = jnp.sin(t) * yy + jnp.cos(t) * xx + (w - 1) / 2
    channel = lambda c: map_coordinates(c, [src_y, src_x], order=1, mode="constant", cval=0.0)
    return jax.vmap(channel, in_axes=2, out_axes=2)(image)


def flip_rotate(x: jax.Array, key: jax.Array, max_degrees: float = 10.0) -> jax.Array:
    """Per example: horizontal flip with probability 1/2, then a rotation uniform in
    [-max_degrees, max_degrees]. x (N, H, W, C)."""
    k_flip, k_rot = jax.random.split(key)
    n = x.shape[0]
    flip = jax.random.bernoulli(k_flip, 0.5, (n,))
    x = jnp.where(flip[:, None, None, None], x[:, :, ::-1], x)
    angles = jax.random.uniform(k_rot, (n,), minval=-max_degrees, maxval=max_degrees)
    return jax.vmap(rotate)(x, angles)


def augmented_objective(objective, seed: int = 0, max_degrees: float = 10.0):
    """``objective`` on :func:`flip_rotate`-augmented ``batch["x"]``; the key is
    ``fold_in(PRNGKey(seed), state.step)`` (deterministic, a fresh draw every step)."""
    def wrapped(params, state, batch: dict):
        key = jax.random.fold_in(jax.random.PRNGKey(seed), state.step)
        return objective(params, state, {**batch, "x": flip_rotate(batch["x"], key, max_degrees)})

    return wrapped
