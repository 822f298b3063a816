"""Shared setup of the Ch. 6 experiments (002_97a11baaf249c571.txt Sec. 6.3-6.5) on real data.

Data: scikit-learn digits (8x8, 10 classes). Groups, named for what they are: "heavy-ink" digits
(mean pixel intensity above the 75th percentile of the training set; the minority, ~25%) and
"light-ink" digits (the rest; the majority). Models: L2-regularized softmax (logistic) regression
and a one-hidden-layer MLP (32 ReLU units), both fit full-batch with L-BFGS.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from repair_jax.influence import ClassifierLoss
from repair_jax.influence.loo import minimize_objective
from repair_jax.models import create_model, init_variables

MODELS = {"logistic_regression": ((), 1e-3, 500), "mlp": ((32,), 1e-3, 300)}  # hidden, l2, L-BFGS iters


def ink(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1).mean(1)


def groups(ds):
    """(threshold, {"heavy-ink (minority)": test mask, "light-ink (majority)": test mask})."""
    thr = float(np.quantile(ink(ds.train.x), 0.75))
    heavy = ink(ds.test.x) > thr
    return thr, {"heavy-ink (minority)": heavy, "light-ink (majority)": ~heavy}


def flip_labels(y: np.ndarray, fraction: float, num_classes: int, rng: np.random.Generator):
    """Flips ``fraction`` of the labels uniformly at random to a different class; (y', flipped mask)."""
    n = len(y)
    idx = rng.choice(n, int(round(fraction * n)), replace=False)
    y2 = y.copy()
    y2[idx] = (y[idx] + rng.integers(1, num_classes, len(idx))) % num_classes
    flipped = np.zeros(n, bool)
    flipped[idx] = True
    return y2, flipped


def fit(model_name: str, ds, y_train: np.ndarray, seed: int):
    """(loss_fn, params, l2) of a model fit on (train.x, y_train)."""
    hidden, l2, iters = MODELS[model_name]
    m = create_model("mlp", ds.num_classes, hidden=hidden)
    v = init_variables(m, jax.random.PRNGKey(seed), ds.input_shape)
    loss = ClassifierLoss(m.apply)
    batch = {"x": jnp.asarray(ds.train.x), "y": jnp.asarray(y_train)}
    params, _ = minimize_objective(loss, v["params"], batch, l2=l2, tol=1e-6, max_iter=iters)
    return loss, params, l2


def probs(loss, params, x) -> jnp.ndarray:
    return jax.nn.softmax(loss.logits(params, jnp.asarray(x)))
