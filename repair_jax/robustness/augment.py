"""On-device, per-example random transforms: Pradhan et al.'s (2020) standard augmentation (random horizontal and
vertical flips, random rotation; Pradhan et al. 2020, Sec. 3 "Training Routine") and the
wrapper that puts any batch transform in front of an objective inside the jitted step.

Images are float32 NHWC. Randomness comes from a key; inside a training step the key is
``fold_in(PRNGKey(seed), state.step)`` so the same seed gives the same augmented batches.
"""

from __future__ import annotations

from typing import Callable

import dm_pix as pix
import jax
import jax.numpy as jnp

from repair_jax.errors import UserError
from repair_jax.objectives import Objective, TrainState

Augment = Callable[[jax.Array, jax.Array], jax.Array]  # (key, x (N, H, W, C)) -> x'


def random_flips(key: jax.Array, x: jax.Array, horizontal: bool = True, vertical: bool = True) -> jax.Array:
    """Each image of ``x`` (N, H, W, C) flipped left-right / up-down with probability 1/2 each."""
    kh, kv = jax.random.split(key)
    n = x.shape[0]
    if horizontal:
        x = jnp.where(jax.random.bernoulli(kh, 0.5, (n, 1, 1, 1)), x[:, :, ::-1], x)
    if vertical:
        x = jnp.where(jax.random.bernoulli(kv, 0.5, (n, 1, 1, 1)), x[:, ::-1], x)
    return x


def rotate(x: jax.Array, degrees: jax.Array) -> jax.Array:
    """Each image of ``x`` (N, H, W, C) rotated about its centre by ``degrees`` (N,) (bilinear,
    nearest edge pixels fill the corners)."""
    return jax.vmap(lambda im, a: pix.rotate(im, jnp.deg2rad(a)))(x, degrees)


def random_rotation(key: jax.Array, x: jax.Array, max_degrees: float = 15.0) -> jax.Array:
    """Each image rotated by an angle drawn uniformly from [-max_degrees, max_degrees]."""
    return rotate(x, jax.random.uniform(key, (x.shape[0],), minval=-max_degrees, maxval=max_degrees))


def standard_augment(max_degrees: float = 15.0, horizontal: bool = True, vertical: bool = True) -> Augment:
    """Pradhan et al.'s (2020) standard augmentation: random flips, then a random rotation."""
    if max_degrees < 0:
        raise UserError(f"max rotation must be >= 0 degrees, got {max_degrees:g}")

    def augment(key, x):
        kf, kr = jax.random.split(key)
        return random_rotation(kr, random_flips(kf, x, horizontal, vertical), max_degrees)

    return augment


def step_key(seed: int, state: TrainState) -> jax.Array:
    """The random key of the current training step: ``fold_in(PRNGKey(seed), state.step)``."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), state.step)


def augmented_objective(objective: Objective, augment: Augment, seed: int = 0) -> Objective:
    """``objective`` on ``batch`` with ``batch["x"]`` replaced by ``augment(step_key, x)``."""
    def wrapped(params, state, batch):
        x = augment(step_key(seed, state), batch["x"])
        return objective(params, state, {**batch, "x": x})

    return wrapped


def augmented_step(step, augment: Augment, seed: int = 0):
    """``step(state, batch) -> (state, metrics)`` on ``batch`` with ``batch["x"]`` replaced by
    ``augment(step_key, x)``: the same draws as :func:`augmented_objective` for the same seed, for the
    methods whose training step carries more than the model (UAT, ANT)."""
    def wrapped(state, batch):
        return step(state, {**batch, "x": augment(step_key(seed, state), batch["x"])})

    return wrapped


def deepaugment(distort: Augment, p: float = 0.5) -> Augment:
    """The DeepAugment hook (Hendrycks et al. 2020a, cited in Pradhan et al. 2020, Sec. 3, 1. Common Corruption): each
    image is replaced by ``distort(key, x)`` with probability ``p``. DeepAugment's distortions come
    from pretrained image-to-image networks (EDSR, a CAE) whose weights and activations are perturbed;
    those networks cannot be fetched here, so ``distort`` is the user's: a jittable
    ``(key, x (N, H, W, C)) -> x'`` wrapping such a network. Pass the result as ``pre_augment`` to
    :func:`repair_jax.robustness.augmix_objective` for DeepAugment + AugMix."""
    if not 0 <= p <= 1:
        raise UserError(f"DeepAugment probability must be in [0, 1], got {p:g}")

    def augment(key, x):
        kd, kp = jax.random.split(key)
        return jnp.where(jax.random.bernoulli(kp, p, (x.shape[0], 1, 1, 1)), distort(kd, x), x)

    return augment
