"""Permuted AdaIN (Nuriel, Benaim & Wolf, CVPR 2021), as written in Sharma n.d., Que-2
"Chossing paper for Bias Mitigation": swap the instance statistics (per-example, per-channel mean and
standard deviation over the spatial positions) of each example with those of another example of the
batch, to reduce a classifier's reliance on global image statistics (texture bias).

Placed after a convolution and before its BatchNorm, in training only; the conv models of
:mod:`repair_jax.models` take it as the option ``padain_p``. Feature maps are NHWC here (Sharma (n.d.) writes NCHW).
"""

from __future__ import annotations

import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp

from repair_jax.errors import UserError

PADAIN_EPSILON = 1e-5


def check_padain_p(p) -> None:
    """``p`` must be a probability: one-line :class:`UserError` otherwise."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise UserError(f"PAdaIN probability p must be in [0, 1], got {p!r}")


def instance_stats(x: jax.Array, eps: float = PADAIN_EPSILON) -> tuple[jax.Array, jax.Array]:
    """mu(x) = (1/HW) sum_{h,w} x and sigma(x) = sqrt((1/HW) sum_{h,w} (x - mu)^2 + eps) (Sharma n.d., Que-2).

    x (N, H, W, C) -> mu, sigma each (N, 1, 1, C).
    """
    mu = jnp.mean(x, axis=(1, 2), keepdims=True)
    sigma = jnp.sqrt(jnp.mean(jnp.square(x - mu), axis=(1, 2), keepdims=True) + eps)
    return mu, sigma


def adain(a: jax.Array, b: jax.Array, eps: float = PADAIN_EPSILON) -> jax.Array:
    """AdaIN(a, b) = sigma(b) (a - mu(a)) / sigma(a) + mu(b) (Sharma n.d., Que-2), per example; a, b (N, H, W, C)."""
    mu_a, sigma_a = instance_stats(a, eps)
    mu_b, sigma_b = instance_stats(b, eps)
    return sigma_b * (a - mu_a) / sigma_a + mu_b


def permuted_adain(x: jax.Array, perm: jax.Array, eps: float = PADAIN_EPSILON) -> jax.Array:
    """PAdaIN(x) = (AdaIN(x_1, x_pi(1)), ..., AdaIN(x_N, x_pi(N))) (Sharma n.d., Que-2); x (N, H, W, C), perm (N,)."""
    return adain(x, x[perm], eps)


class PermutedAdaIN(nn.Module):
    """The PAdaIN layer: in training, with probability ``p`` per forward pass (one draw per batch, as in
    Nuriel et al.'s reference code), returns :func:`permuted_adain` of its input under a uniformly
    random permutation of the batch; otherwise (and always in eval mode, or with p = 0) the identity.

    Its randomness needs no ``rngs`` argument (the project's objectives pass none): the key is
    :func:`padain_key` of ``seed``, the layer's path in the model (so that layers draw independently)
    and ``count``, the number of training calls so far, kept in the mutable ``batch_stats`` collection
    (so training is deterministic and resumes from a checkpoint).
    """

    p: float = 0.01
    seed: int = 0
    eps: float = PADAIN_EPSILON

    def __post_init__(self):
        check_padain_p(self.p)
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool):
        count = self.variable("batch_stats", "padain_calls", lambda: jnp.zeros((), jnp.float32))
        if not train or self.p == 0.0 or self.is_initializing():
            return x
        u, perm = padain_draw(self.seed, self.scope.path, count.value.astype(jnp.int32), x.shape[0])
        count.value = count.value + 1.0
        return jnp.where(u < self.p, permuted_adain(x, perm, self.eps), x)


def padain_draw(seed: int, path: tuple[str, ...], count, n: int) -> tuple[jax.Array, jax.Array]:
    """The draw of the layer at ``path`` (``()`` for a layer applied on its own) at its ``count``-th
    training call on a batch of ``n``: (u ~ U[0, 1), permutation of n); the layer permutes iff u < p."""
    salt = zlib.crc32("/".join(path).encode()) & 0x7FFFFFFF
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), salt), count)
    coin, key_perm = jax.random.split(key)
    return jax.random.uniform(coin), jax.random.permutation(key_perm, n)
