"""The cyclical learning rate of Pradhan et al.'s (2020) training routine (Pradhan et al. 2020, Sec. 3 "Training Routine")."""

from __future__ import annotations

import jax.numpy as jnp

from repair_jax.errors import UserError


def triangular_cyclical_lr(base_lr: float, max_lr: float, step_size: int):
    """Smith (2017) "triangular" policy as an optax schedule ``step -> lr``:

    ``cycle = floor(1 + t / (2 s))``, ``x = |t / s - 2 cycle + 1|``,
    ``lr = base_lr + (max_lr - base_lr) * max(0, 1 - x)`` with ``s = step_size`` (half a cycle).
    """
    if not 0 < base_lr <= max_lr:
        raise UserError(f"cyclical learning rate needs 0 < base_lr <= max_lr, got {base_lr:g}, {max_lr:g}")
    if step_size < 1:
        raise UserError(f"cyclical learning rate step_size must be >= 1, got {step_size}")

    def schedule(step):
        t = jnp.asarray(step, jnp.float32)
        cycle = jnp.floor(1 + t / (2 * step_size))
        x = jnp.abs(t / step_size - 2 * cycle + 1)
        return base_lr + (max_lr - base_lr) * jnp.maximum(0.0, 1 - x)

    return schedule
