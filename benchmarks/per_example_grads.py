"""Per-example gradients: ours (layer-wise) vs naive ``vmap(grad)``, vs the batch gradient, and vs
PyTorch's ``torch.func.vmap(grad)`` on the same models and batches (when torch is installed: the
``bench`` extra). Models: MLP 64-256-256-10 (batch 256) and a small CNN on 28x28x1 (two 3x3 conv
layers of 16 and 32 channels with max-pooling, a dense layer to 10; batch 128). All ratios are
taken in one run on this machine (best of repeated timings, after a warm-up / compile: the
machine is shared, and the minimum is the timing least disturbed by other processes).

``run(cases=, torch_device=)``: the accelerator suite (:mod:`benchmarks.gpu`) adds ``resnet18``
(:func:`repair_jax.models.create_model`'s ResNet-18 on 28x28x1, eval-mode BatchNorm, batch 64; torch's side
the same network with the same weights, :class:`benchmarks.torch_mirror.ResNet`) and runs torch on
``torch_device`` (``"cuda"``: the same GPU; None: no torch comparison)."""

from __future__ import annotations

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import best_time
from repair_jax.models import MLP
from repair_jax.influence import ClassifierLoss, batch_gradient, per_example_grads


class BenchCNN(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        h = nn.max_pool(nn.relu(nn.Conv(16, (3, 3))(x)), (2, 2), (2, 2))
        h = nn.max_pool(nn.relu(nn.Conv(32, (3, 3))(h)), (2, 2), (2, 2))
        h = h.reshape(h.shape[0], -1)
        return nn.Dense(10)(h), h


def _torch_models():
    import torch

    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 256), torch.nn.ReLU(),
                              torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(32 * 7 * 7, 10))
    return {"mlp": mlp, "cnn": cnn}


def _torch_time(model, x: np.ndarray, y: np.ndarray, reps: int, device: str = "cpu") -> float:
    import torch
    from torch.func import functional_call, grad, vmap

    model = model.to(device)
    params = {k: v.detach() for k, v in model.named_parameters()}
    xt = torch.as_tensor(x)
    if not isinstance(model, torch.nn.Sequential) or isinstance(model[0], torch.nn.Conv2d):
        xt = xt.permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW for the convolutional models
    xt, yt = xt.to(device), torch.as_tensor(y, dtype=torch.long).to(device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)

    def loss(p, xi, yi):
        out = functional_call(model, p, (xi[None],))
        return torch.nn.functional.cross_entropy(out, yi[None])

    f = vmap(grad(loss), in_dims=(None, 0, 0))
    f(params, xt, yt)
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f(params, xt, yt)
        sync()  # CUDA runs asynchronously: wait for the gradients
        times.append(time.perf_counter() - t0)
    return float(np.min(times))  # best of reps: least disturbed by other processes


def _resnet18(quick: bool):
    """ResNet-18 (width 8 in quick mode) and its variables (parameters and BatchNorm statistics)."""
    from repair_jax.models import create_model, init_variables

    model = create_model("resnet18", 10, **({"width": 8} if quick else {}))
    variables = init_variables(model, jax.random.PRNGKey(0), (28, 28, 1))
    return model, variables


CASES = ("mlp", "cnn")  # the default; the accelerator suite adds "resnet18"


def run(quick: bool = False, cases=CASES, torch_device: str | None = "cpu") -> dict:
    """``cases``: of mlp, cnn, resnet18; ``torch_device``: where torch.func runs (None: no torch comparison)."""
    reps = 3 if quick else 15
    sizes = {"mlp": ((8, 8, 1), 32 if quick else 256), "cnn": ((28, 28, 1), 16 if quick else 128),
             "resnet18": ((28, 28, 1), 4 if quick else 64)}
    torch_models, torch_note = None, "no torch comparison (torch_device None)"
    if torch_device is not None:
        try:
            import torch
            torch_models = _torch_models()
            torch_note = f"torch {torch.__version__} on {torch_device}, {torch.get_num_threads()} CPU threads"
        except ImportError:
            torch_note = "torch not installed (pip install .[bench]); torch comparison skipped"
    out: dict = {"torch": torch_note, "reps": reps, "timing": "best of reps after warm-up"}
    rng = np.random.default_rng(0)
    inputs = {}
    for name in cases:  # ours first, then torch's: a torch that fails leaves ours measured
        shape, n = sizes[name]
        x = rng.random((n, *shape), dtype=np.float32)
        y = rng.integers(0, 10, n).astype(np.int32)
        if name == "resnet18":
            model, variables = _resnet18(quick)
        else:
            model = MLP(10) if name == "mlp" else BenchCNN()  # repair_jax.models.MLP, 2 x 256
            variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape)))
        params = variables["params"]
        loss = ClassifierLoss(model.apply, variables.get("batch_stats"))
        batch = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
        t_ours = best_time(lambda: per_example_grads(loss, params, batch), reps)
        t_naive = best_time(lambda: per_example_grads(loss, params, batch, method="vmap"), reps)
        bg = jax.jit(lambda p, b: batch_gradient(loss, p, b))
        t_batch = best_time(lambda: bg(params, batch), reps)
        out[name] = {"batch": n, "params": int(sum(a.size for a in jax.tree_util.tree_leaves(params))),
                     "ours_s": t_ours, "vmap_grad_s": t_naive, "batch_grad_s": t_batch,
                     "ours_over_vmap_grad": t_ours / t_naive, "ours_over_batch_grad": t_ours / t_batch}
        inputs[name] = (x, y, variables)
    for name, (x, y, variables) in inputs.items() if torch_models is not None else ():
        try:
            if name == "resnet18":
                from benchmarks.torch_mirror import ResNet
                tm = ResNet(variables, (2, 2, 2, 2), x.shape[1])  # the same network and weights, eval mode
            else:
                tm = torch_models[name]
            with_torch = _torch_time(tm, x, y, reps, torch_device)
        except Exception as e:  # noqa: BLE001 - a torch build that fails here: recorded, ours kept
            out[name]["torch_error"] = f"{type(e).__name__}: {e}"[:500]
            continue
        out[name].update(torch_func_s=with_torch, ours_over_torch_func=out[name]["ours_s"] / with_torch)
    return out
