"""Defences against universal perturbations and corruptions (Pradhan et al. 2020, Sec. 3
"Robustness Enhancement Techniques"): universal adversarial training (Shafahi et al. 2020), shared
adversarial training (Mummadi et al. 2019) and adversarial noise training (Rusak et al. 2020).

Shared adversarial training is stateless: an objective for :func:`repair_jax.train.fit`. The other
two carry an adversary across batches (a perturbation, a generator network), so they are steps
``step(state, batch) -> (state, metrics)`` on a :class:`TrainState` that holds it, run by
:func:`repair_jax.train.fit` with ``step=``.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from repair_jax.errors import UserError
from repair_jax.objectives import Objective, TrainState, forward, l2_penalty, softmax_cross_entropy
from repair_jax.robustness.augment import step_key
from repair_jax.robustness.uap import check_ball, sign_ascent

Step = Callable[[TrainState, dict], tuple[TrainState, dict]]


def _ce(state, params, x, y):
    """(mean cross-entropy, new batch_stats) of the model in training mode on (x, y)."""
    logits, _, batch_stats = forward(state, params, x, train=True)
    return jnp.mean(softmax_cross_entropy(logits, y)), batch_stats


# ----------------------------------------------------------------------------- universal adversarial training

class UniversalState(TrainState):
    """A train state with the universal perturbation ``delta`` (H, W, C) of the min-max game."""

    delta: Any = None


def init_universal_state(state: TrainState, input_shape) -> UniversalState:
    """``state`` with a zero universal perturbation of ``input_shape`` (H, W, C)."""
    return UniversalState(**{f: getattr(state, f) for f in state.__dataclass_fields__},
                          delta=jnp.zeros(input_shape, jnp.float32))


def universal_adversarial_step(eps: float, norm: str = "linf", delta_step: float | None = None,
                               l2: float = 0.0) -> Step:
    """Shafahi et al. 2020, Algorithm 3 (UAT with FGSM): on each batch, both gradients of
    ``L(theta, delta) = mean CE(f_theta(x + delta), y)`` at the current point; the parameters descend
    (the state's optimizer), ``delta <- P(delta + delta_step * sign(grad_delta))`` ascends."""
    check_ball(eps, norm)
    delta_step = eps / 10 if delta_step is None else delta_step

    def step(state: UniversalState, batch):
        def loss_fn(params, delta):
            loss, batch_stats = _ce(state, params, batch["x"] + delta, batch["y"])
            return loss + l2 * l2_penalty(params), batch_stats

        (loss, batch_stats), (g_params, g_delta) = jax.value_and_grad(loss_fn, (0, 1), has_aux=True)(
            state.params, state.delta)
        delta = sign_ascent(state.delta, g_delta, delta_step, eps, norm)
        state = state.apply_gradients(grads=g_params, batch_stats=batch_stats)
        return state.replace(delta=delta), {"loss": loss}

    return step


# ----------------------------------------------------------------------------- shared adversarial training

def shared_perturbations(loss_of_delta, shape, eps: float, norm: str, steps: int, step_size: float):
    """``steps`` projected signed-gradient ascent steps from zero on ``loss_of_delta(delta)``,
    ``delta`` of ``shape`` (heaps, H, W, C): one perturbation per heap."""
    def body(_, d):
        return sign_ascent(d, jax.grad(loss_of_delta)(d), step_size, eps, norm)

    return jax.lax.fori_loop(0, steps, body, jnp.zeros(shape, jnp.float32))


def shared_adversarial_objective(eps: float, heap_size: int, norm: str = "linf", steps: int = 3,
                                 step_size: float | None = None, adv_weight: float = 0.5,
                                 l2: float = 0.0) -> Objective:
    """Mummadi et al. 2019: the batch is cut into heaps of ``heap_size`` examples; each heap shares one
    perturbation that maximises the heap's summed loss (``heap_size`` 1: per-example adversarial
    training, the batch size: one universal perturbation; the paper's trade-off between robustness to
    universal perturbations and clean accuracy). Loss ``(1 - adv_weight) CE(clean) + adv_weight CE(adv)``."""
    check_ball(eps, norm)
    if heap_size < 1 or not 0 <= adv_weight <= 1 or steps < 1:
        raise UserError("shared adversarial training needs heap_size >= 1, steps >= 1, adv_weight in [0, 1]")
    step_size = 2.5 * eps / steps if step_size is None else step_size

    def objective(params, state, batch):
        x, y = batch["x"], batch["y"]
        if x.shape[0] % heap_size:
            raise UserError(f"batch size {x.shape[0]} is not a multiple of heap_size {heap_size}")
        heaps = x.shape[0] // heap_size
        spread = lambda d: jnp.repeat(d, heap_size, axis=0)
        frozen = jax.lax.stop_gradient(params)
        adv_loss = lambda d: _ce(state, frozen, x + spread(d), y)[0] * x.shape[0]
        delta = jax.lax.stop_gradient(shared_perturbations(adv_loss, (heaps, *x.shape[1:]), eps, norm,
                                                           steps, step_size))
        clean, batch_stats = _ce(state, params, x, y)
        adv, _ = _ce(state, params, x + spread(delta), y)
        loss = (1 - adv_weight) * clean + adv_weight * adv + l2 * l2_penalty(params)
        return loss, (batch_stats, {"loss": loss, "clean_loss": clean, "adv_loss": adv})

    return objective


# ----------------------------------------------------------------------------- adversarial noise training

class NoiseGenerator(nn.Module):
    """Rusak et al. 2020 noise generator: 1x1 convolutions on Gaussian input noise (so the noise is
    spatially uncorrelated, correlated only across channels), ``channels`` output channels."""

    channels: int
    hidden: int = 20
    depth: int = 4

    @nn.compact
    def __call__(self, z):
        h = z
        for _ in range(self.depth - 1):
            h = nn.relu(nn.Conv(self.hidden, (1, 1))(h))
        return nn.Conv(self.channels, (1, 1))(h)


def scale_to_sphere(noise: jax.Array, eps: float) -> jax.Array:
    """Each noise map (N, H, W, C) rescaled to L2 norm ``eps`` (Rusak et al.'s fixed-norm noise)."""
    n = jnp.sqrt(jnp.sum(jnp.square(noise), axis=(1, 2, 3), keepdims=True))
    return eps * noise / jnp.maximum(n, 1e-12)


class NoiseTrainingState(TrainState):
    """A train state with the noise generator's parameters and optimizer state."""

    gen_params: Any = None
    gen_opt_state: Any = None
    gen_apply: Callable = struct.field(pytree_node=False, default=None)
    gen_tx: optax.GradientTransformation = struct.field(pytree_node=False, default=None)


def init_noise_training(state: TrainState, channels: int, seed: int = 0, gen_lr: float = 1e-3,
                        hidden: int = 20, depth: int = 4) -> NoiseTrainingState:
    """``state`` with a fresh :class:`NoiseGenerator` (Adam at ``gen_lr``)."""
    gen = NoiseGenerator(channels, hidden, depth)
    gen_params = gen.init(jax.random.PRNGKey(seed), jnp.zeros((1, 2, 2, channels)))["params"]
    tx = optax.adam(gen_lr)
    return NoiseTrainingState(**{f: getattr(state, f) for f in state.__dataclass_fields__},
                              gen_params=gen_params, gen_opt_state=tx.init(gen_params),
                              gen_apply=gen.apply, gen_tx=tx)


def adversarial_noise_step(eps: float, seed: int = 0, clean_weight: float = 0.5, l2: float = 0.0) -> Step:
    """Rusak et al. 2020 (ANT): per batch, noise ``delta = eps * g_phi(z) / ||g_phi(z)||_2`` from
    Gaussian ``z``; the classifier descends ``w CE(x) + (1 - w) CE(clip(x + delta, 0, 1))``, the
    generator ascends ``CE(clip(x + delta, 0, 1))`` (both gradients at the current point)."""
    check_ball(eps, "l2")
    if not 0 <= clean_weight <= 1:
        raise UserError(f"clean_weight must be in [0, 1], got {clean_weight:g}")

    def step(state: NoiseTrainingState, batch):
        x, y = batch["x"], batch["y"]
        z = jax.random.normal(step_key(seed, state), x.shape)
        noise = lambda gp: scale_to_sphere(state.gen_apply({"params": gp}, z), eps)

        def loss_fn(params, gen_params):
            clean, batch_stats = _ce(state, params, x, y)
            noisy, _ = _ce(state, params, jnp.clip(x + noise(gen_params), 0.0, 1.0), y)
            total = clean_weight * clean + (1 - clean_weight) * noisy + l2 * l2_penalty(params)
            return total, (batch_stats, noisy)

        (loss, (batch_stats, noisy)), (g_params, g_gen) = jax.value_and_grad(loss_fn, (0, 1), has_aux=True)(
            state.params, state.gen_params)
        # the generator maximises the noisy loss: descend its negative gradient
        g_noisy = jax.tree_util.tree_map(lambda g: -g / max(1 - clean_weight, 1e-12), g_gen)
        updates, gen_opt_state = state.gen_tx.update(g_noisy, state.gen_opt_state, state.gen_params)
        state = state.apply_gradients(grads=g_params, batch_stats=batch_stats)
        return state.replace(gen_params=optax.apply_updates(state.gen_params, updates),
                             gen_opt_state=gen_opt_state), {"loss": loss, "noisy_loss": noisy}

    return step
