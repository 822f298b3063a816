"""Training throughput (examples/s) per model and the share of step time spent in the input pipeline.

Each model trains two epochs through :func:`repair_jax.train.fit` on a subset of the real
Fashion-MNIST (digits if it is not installed); the second epoch (compiled) is measured. The input
share is host batch preparation time / epoch time (goal: < 5%).
"""

from __future__ import annotations

import jax

from repair_jax.data import find_fashion_mnist_dir, load_dataset
from repair_jax.models import create_model, init_variables
from repair_jax.train import TrainConfig, create_train_state, fit, make_optimizer

FULL = {"mlp": ({}, 8192), "cnn": ({}, 4096), "resnet18": ({}, 512), "vgg11_bn": ({}, 512),
        "mobilenet_v2": ({}, 512)}
QUICK = {"mlp": ({"hidden": (64,)}, 512), "cnn": ({"width": 8}, 512)}


def run(quick: bool = False) -> dict:
    name = "fashion_mnist" if find_fashion_mnist_dir() else "digits"
    models = QUICK if quick else FULL
    n_max = max(n for _, n in models.values())
    base = load_dataset(name, seed=0, train_limit=n_max)
    out = {"dataset": name, "batch_size": 128, "models": {}}
    for model_name, (kw, n) in models.items():
        ds = load_dataset(name, seed=0, train_limit=n) if n < n_max else base
        cfg = TrainConfig(dataset=name, model=model_name, model_kwargs=kw, epochs=2, batch_size=128)
        model = create_model(model_name, ds.num_classes, **kw)
        v = init_variables(model, jax.random.PRNGKey(0), ds.input_shape)
        state = create_train_state(model, v, make_optimizer(cfg, 2 * (n // 128)))
        _, hist = fit(state, ds, cfg, progress=False)
        h = hist[-1]
        seen = (len(ds.train) // 128) * 128
        out["models"][model_name] = {
            "train_examples": seen, "examples_per_s": seen / h["epoch_time"],
            "step_time_ms": 1000 * h["epoch_time"] / (len(ds.train) // 128),
            "input_pipeline_share": h["input_time"] / h["epoch_time"],
            "params": int(sum(x.size for x in jax.tree_util.tree_leaves(v["params"]))),
        }
    return out
