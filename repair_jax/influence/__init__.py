"""Per-example gradients, Hessian-vector products and influence functions.

Source: 002_97a11baaf249c571.txt Ch. 3.4 (Eq. 3.1-3.3) and Ch. 6.4 (Eq. 6.1-6.5).
"""

from repair_jax.influence.gradients import (
    ClassifierLoss, batch_gradient, flatten_per_example, per_example_grad_dot, per_example_grads,
)
