"""A researcher's own models, written as Flax users write them (no repair_jax in sight), and trained
in their own optax loops: an NNX CNN with BatchNorm, a linen CNN returning logits only, and a plain
function. Used by tests/test_byom.py, and by ``repair-jax import`` as ``byom_models:nnx_cnn``."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx


class NNXCNN(nnx.Module):
    def __init__(self, num_classes: int = 10, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, 4, (3, 3), rngs=rngs)
        self.bn1 = nnx.BatchNorm(4, momentum=0.9, rngs=rngs)
        self.conv2 = nnx.Conv(4, 4, (3, 3), rngs=rngs)
        self.fc1 = nnx.Linear(4 * 4 * 4, 16, rngs=rngs)
        self.fc2 = nnx.Linear(16, num_classes, rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.bn1(self.conv1(x)))
        h = nnx.max_pool(nnx.relu(self.conv2(h)), (2, 2), (2, 2))
        h = nnx.relu(self.fc1(h.reshape(h.shape[0], -1)))
        return self.fc2(h)


def nnx_cnn(num_classes: int = 10, seed: int = 0) -> NNXCNN:
    return NNXCNN(num_classes, rngs=nnx.Rngs(seed))


class LinenCNN(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(nn.Conv(4, (3, 3))(x)))
        h = nn.max_pool(nn.relu(nn.Conv(4, (3, 3))(h)), (2, 2), (2, 2))
        h = nn.relu(nn.Dense(16)(h.reshape(h.shape[0], -1)))
        return nn.Dense(self.num_classes)(h)


def linen_cnn(num_classes: int = 10) -> LinenCNN:
    return LinenCNN(num_classes)


def softmax_regression(params, x):
    """A plain function model: logits of a linear map of the flattened inputs."""
    return x.reshape(x.shape[0], -1) @ params["w"] + params["b"]


def function_model(num_classes: int = 10, features: int = 64):
    """The plain function model for `repair-jax import`: a factory returns it with parameters shaped
    like its checkpoint's (from_apply_fn is the one repair_jax line)."""
    import repair_jax as rj

    return rj.from_apply_fn(softmax_regression, {"w": jnp.zeros((features, num_classes)), "b": jnp.zeros((num_classes,))})


def _batches(n, bs, rng):
    order = rng.permutation(n)
    return [order[i:i + bs] for i in range(0, n - bs + 1, bs)]


def train_nnx(model: NNXCNN, x, y, epochs: int = 6, lr: float = 1e-2, seed: int = 0) -> NNXCNN:
    optimizer = nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, xb, yb):
        def loss_fn(m):
            return optax.softmax_cross_entropy_with_integer_labels(m(xb), yb).mean()
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    model.train()
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        for idx in _batches(len(x), 64, rng):
            step(model, optimizer, jnp.asarray(x[idx]), jnp.asarray(y[idx]))
    model.eval()
    return model


def train_linen(module: LinenCNN, x, y, epochs: int = 6, lr: float = 1e-2, seed: int = 0) -> dict:
    variables = module.init(jax.random.PRNGKey(seed), jnp.zeros((2, *x.shape[1:])))
    params, stats = variables["params"], variables["batch_stats"]
    tx = optax.adam(lr)
    opt = tx.init(params)

    @jax.jit
    def step(params, stats, opt, xb, yb):
        def loss_fn(p):
            logits, upd = module.apply({"params": p, "batch_stats": stats}, xb, train=True, mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean(), upd["batch_stats"]
        (_, stats), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, updates), stats, opt

    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        for idx in _batches(len(x), 64, rng):
            params, stats, opt = step(params, stats, opt, jnp.asarray(x[idx]), jnp.asarray(y[idx]))
    return {"params": params, "batch_stats": stats}


def train_function(x, y, num_classes: int = 10, steps: int = 300, lr: float = 0.1) -> dict:
    d = int(np.prod(x.shape[1:]))
    params = {"w": jnp.zeros((d, num_classes)), "b": jnp.zeros((num_classes,))}
    tx = optax.sgd(lr, momentum=0.9)
    opt = tx.init(params)
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    @jax.jit
    def step(params, opt):
        loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(softmax_regression(p, xj), yj).mean() \
            + 1e-3 * 0.5 * sum(jnp.sum(a * a) for a in jax.tree_util.tree_leaves(p))
        g = jax.grad(loss)(params)
        updates, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, updates), opt

    for _ in range(steps):
        params, opt = step(params, opt)
    return params
