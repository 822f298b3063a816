"""Training throughput (examples/s) per model and the share of step time spent in the input pipeline.

Each model trains two epochs through :func:`repair_jax.train.fit` on a subset of the real
Fashion-MNIST (digits if it is not installed); the second epoch (compiled) is measured. The input
share is host batch preparation time / epoch time (goal: < 5%).

``run(models=, torch_device=)``: the accelerator suite (:mod:`benchmarks.gpu`) times the CNN and ResNet-18
and, on ``torch_device``, the same networks in PyTorch (:mod:`benchmarks.torch_mirror`: the same layers and
initial weights, trained in train mode): two epochs of the same training images (placed on the device once,
each step gathering a shuffled batch of 128 there, as :func:`repair_jax.train.fit` does), Adam with the
same step size (constant: the cosine schedule's cost is negligible), cross-entropy, then one pass over the
validation split as ``fit``'s epoch has; the second epoch measured.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from repair_jax.data import find_fashion_mnist_dir, load_dataset
from repair_jax.models import create_model, init_variables
from repair_jax.train import TrainConfig, create_train_state, fit, make_optimizer

FULL = {"mlp": ({}, 8192), "cnn": ({}, 4096), "resnet18": ({}, 512), "vgg11_bn": ({}, 512),
        "mobilenet_v2": ({}, 512)}
QUICK = {"mlp": ({"hidden": (64,)}, 512), "cnn": ({"width": 8}, 512)}
BATCH = 128


def _torch_model(name: str, variables: dict, image_size: int):
    """The torch mirror of ``name`` (``cnn`` or ``resnet18``) holding ``variables``."""
    from benchmarks import torch_mirror

    if name == "cnn":
        return torch_mirror.SmallCNN(variables)
    return torch_mirror.ResNet(variables, (2, 2, 2, 2), image_size)


def _torch_epochs(model, ds, lr: float, device: str, seed: int = 0) -> dict:
    """Two epochs of ``model`` in torch on ``device`` (see the module doc); the second one's times."""
    import torch

    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    model = model.to(device)
    x = torch.as_tensor(np.ascontiguousarray(ds.train.x.transpose(0, 3, 1, 2))).to(device)
    y = torch.as_tensor(ds.train.y, dtype=torch.long).to(device)
    xv = torch.as_tensor(np.ascontiguousarray(ds.val.x.transpose(0, 3, 1, 2))).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    steps = len(ds.train) // BATCH
    epoch_s = 0.0
    for _ in range(2):
        sync()
        t0 = time.perf_counter()
        model.train()
        order = torch.as_tensor(rng.permutation(len(ds.train))[:steps * BATCH]).to(device)
        for i in range(steps):
            idx = order[i * BATCH:(i + 1) * BATCH]
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for i in range(0, len(xv), 1024):
                model(xv[i:i + 1024])
        sync()
        epoch_s = time.perf_counter() - t0
    return {"examples_per_s": steps * BATCH / epoch_s, "step_time_ms": 1000 * epoch_s / steps}


def run(quick: bool = False, models: dict | None = None, torch_device: str | None = None) -> dict:
    """``models``: name -> (model kwargs, training examples) (default :data:`FULL`, quick :data:`QUICK`);
    ``torch_device``: where the torch mirrors of the CNN and ResNet-18 train (None: not compared)."""
    name = "fashion_mnist" if find_fashion_mnist_dir() else "digits"
    models = models or (QUICK if quick else FULL)
    n_max = max(n for _, n in models.values())
    base = load_dataset(name, seed=0, train_limit=n_max)
    out = {"dataset": name, "batch_size": BATCH, "models": {}}
    if torch_device is not None:
        import torch
        out["torch"] = f"torch {torch.__version__} on {torch_device}"
    mirrors = {}
    for model_name, (kw, n) in models.items():  # ours first, then torch's: a torch that fails leaves ours measured
        ds = load_dataset(name, seed=0, train_limit=n) if n < n_max else base
        cfg = TrainConfig(dataset=name, model=model_name, model_kwargs=kw, epochs=2, batch_size=BATCH)
        model = create_model(model_name, ds.num_classes, **kw)
        v = init_variables(model, jax.random.PRNGKey(0), ds.input_shape)
        state = create_train_state(model, v, make_optimizer(cfg, 2 * (n // BATCH)))
        _, hist = fit(state, ds, cfg, progress=False)
        h = hist[-1]
        seen = (len(ds.train) // BATCH) * BATCH
        out["models"][model_name] = {
            "train_examples": seen, "examples_per_s": seen / h["epoch_time"],
            "step_time_ms": 1000 * h["epoch_time"] / (len(ds.train) // BATCH),
            "input_pipeline_share": h["input_time"] / h["epoch_time"],
            "params": int(sum(x.size for x in jax.tree_util.tree_leaves(v["params"]))),
        }
        if torch_device is not None and model_name in ("cnn", "resnet18"):
            mirrors[model_name] = (v, ds, cfg.lr)
    for model_name, (v, ds, lr) in mirrors.items():
        row = out["models"][model_name]
        try:
            t = _torch_epochs(_torch_model(model_name, v, ds.input_shape[0]), ds, lr, torch_device)
        except Exception as e:  # noqa: BLE001 - a torch build that fails here: recorded, ours kept
            row["torch_error"] = f"{type(e).__name__}: {e}"[:500]
            continue
        row.update(torch_examples_per_s=t["examples_per_s"], torch_step_time_ms=t["step_time_ms"],
                   ours_over_torch_examples_per_s=row["examples_per_s"] / t["examples_per_s"])
    return out
