"""The CPU convolution study of issue 17 Part 5: why the small CNN's gradients are slower under XLA's CPU
backend than under PyTorch, and what XLA flags, layouts and another formulation of the convolution give.

The model is ``benchmarks.per_example_grads.BenchCNN`` (two 3x3 convolutions of 16 and 32 channels with ReLU
and 2x2 max-pooling, a dense layer to 10; 28x28x1 inputs, batch 128) with one set of weights, written three
ways with the same parameter tree:

* ``flax_nhwc``: ``flax.linen.Conv`` (NHWC inputs, HWIO kernels), the library's formulation;
* ``nchw``: ``jax.lax.conv_general_dilated`` on NCHW inputs and OIHW kernels (PyTorch's layout; the input
  transposed once outside the timing, the kernels inside the gradient);
* ``im2col``: ``jax.lax.conv_general_dilated_patches`` then one matrix product per convolution.

For each, the jitted batch gradient of the mean cross-entropy and the per-example gradients
(``jax.vmap(jax.grad)``) are timed with the formulations interleaved (``benchmarks.interleaved_times``),
each in a fresh process per XLA flag set (``XLA_FLAGS`` is read once, at backend start): the default, then
each flag of ``FLAG_SETS``, then the default again (``default_repeat``: the drift between the two default
runs is the noise floor of the comparison). A flag this XLA does not accept is reported as such. Every variant's batch
gradient is compared with the default process's ``flax_nhwc`` one (``max_rel_diff``): a variant may
become the default only if its numbers stay equal (float32 rounding). PyTorch (``bench`` extra) times
the same model and weights: its batch gradient and ``torch.func.vmap(grad)``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

#: One process per entry; the values are XLA_FLAGS.
FLAG_SETS = {
    "default": "",
    "onednn": "--xla_cpu_use_onednn=true",
    "xnnpack": "--xla_cpu_use_xnnpack=true",
    "eigen_single_thread": "--xla_cpu_multi_thread_eigen=false",
    "fast_math": "--xla_cpu_enable_fast_math=true",
    "no_thunk_runtime": "--xla_cpu_use_thunk_runtime=false",
    # the default once more, last: how far its times moved is the noise floor of the comparisons above
    "default_repeat": "",
}
FORMULATIONS = ("flax_nhwc", "nchw", "im2col")


def _data(n: int):
    rng = np.random.default_rng(0)
    return rng.random((n, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, n).astype(np.int32)


def _params():
    import jax
    import jax.numpy as jnp

    from benchmarks.per_example_grads import BenchCNN

    return BenchCNN().init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))["params"]


def _forward(formulation: str):
    """logits(params, x) of BenchCNN in ``formulation`` (x NHWC for flax_nhwc and im2col, NCHW for nchw)."""
    import jax
    import jax.numpy as jnp

    from benchmarks.per_example_grads import BenchCNN

    def pool(h, spatial):  # 2x2 max-pooling over the two spatial axes
        window = tuple(2 if a in spatial else 1 for a in range(h.ndim))
        return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, window, window, "VALID")

    def conv(h, kernel, bias):
        if formulation == "nchw":
            out = jax.lax.conv_general_dilated(h, jnp.transpose(kernel, (3, 2, 0, 1)), (1, 1), "SAME",
                                               dimension_numbers=("NCHW", "OIHW", "NCHW"))
            return out + bias[None, :, None, None]
        patches = jax.lax.conv_general_dilated_patches(h, (3, 3), (1, 1), "SAME",
                                                       dimension_numbers=("NHWC", "OIHW", "NHWC"))
        # patches' features are ordered (input channel, kernel row, kernel column)
        k = jnp.transpose(kernel, (2, 0, 1, 3)).reshape(-1, kernel.shape[-1])
        return patches @ k + bias

    def logits(params, x):
        if formulation == "flax_nhwc":
            return BenchCNN().apply({"params": params}, x)[0]
        spatial = (2, 3) if formulation == "nchw" else (1, 2)
        h = pool(jax.nn.relu(conv(x, params["Conv_0"]["kernel"], params["Conv_0"]["bias"])), spatial)
        h = pool(jax.nn.relu(conv(h, params["Conv_1"]["kernel"], params["Conv_1"]["bias"])), spatial)
        if formulation == "nchw":  # flatten in flax's (H, W, C) order so Dense_0 is the same matrix
            h = jnp.transpose(h, (0, 2, 3, 1))
        h = h.reshape(h.shape[0], -1)
        return h @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"]

    return logits


def _child(flags_name: str, n: int, rounds: int, grads_path: str) -> dict:
    """Runs in the process whose XLA_FLAGS are ``FLAG_SETS[flags_name]``: seconds per call of each
    formulation's batch and per-example gradient, and its batch gradients saved to ``grads_path``."""
    import jax
    import jax.numpy as jnp
    import optax
    from jax.flatten_util import ravel_pytree

    from benchmarks import interleaved_times

    params = _params()
    x, y = _data(n)
    fns, saved = {}, {}
    for form in FORMULATIONS:
        logits = _forward(form)
        xs = jnp.asarray(np.transpose(x, (0, 3, 1, 2)) if form == "nchw" else x)

        def loss(p, xb, yb, logits=logits):
            return optax.softmax_cross_entropy_with_integer_labels(logits(p, xb), yb).mean()

        batch_grad = jax.jit(jax.grad(loss))
        per_example = jax.jit(jax.vmap(jax.grad(lambda p, xi, yi, loss=loss: loss(p, xi[None], yi[None])),
                                       in_axes=(None, 0, 0)))
        yb = jnp.asarray(y)
        saved[form] = np.asarray(ravel_pytree(batch_grad(params, xs, yb))[0])
        jax.block_until_ready(per_example(params, xs, yb))
        fns[f"{form}_batch_grad"] = (lambda f=batch_grad, a=xs: jax.block_until_ready(f(params, a, yb)))
        fns[f"{form}_per_example"] = (lambda f=per_example, a=xs: jax.block_until_ready(f(params, a, yb)))
    np.savez(grads_path, **saved)
    return interleaved_times(fns, rounds, 3)


def _torch(n: int, rounds: int, ref: np.ndarray | None) -> dict:
    import torch
    from torch.func import functional_call, grad, vmap

    from benchmarks import interleaved_times
    from benchmarks.torch_mirror import linear

    params = _params()
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2))
    with torch.no_grad():
        for i, c in ((0, "Conv_0"), (3, "Conv_1")):
            model[i].weight.copy_(torch.as_tensor(np.transpose(np.asarray(params[c]["kernel"]), (3, 2, 0, 1)).copy()))
            model[i].bias.copy_(torch.as_tensor(np.array(params[c]["bias"])))
    dense = linear(params["Dense_0"])
    x, y = _data(n)
    xt, yt = torch.as_tensor(np.transpose(x, (0, 3, 1, 2)).copy()), torch.as_tensor(y, dtype=torch.long)

    def logits(xb):
        return dense(model(xb).permute(0, 2, 3, 1).flatten(1))  # flax's (H, W, C) flattening

    def batch_grad():
        model.zero_grad(), dense.zero_grad()
        torch.nn.functional.cross_entropy(logits(xt), yt).backward()

    full = {**{f"conv.{k}": v.detach() for k, v in model.named_parameters()},
            **{f"dense.{k}": v.detach() for k, v in dense.named_parameters()}}
    both = torch.nn.ModuleDict({"conv": model, "dense": dense})

    def one(p, xi, yi):
        h = functional_call(both["conv"], {k[5:]: v for k, v in p.items() if k.startswith("conv.")}, (xi[None],))
        out = functional_call(both["dense"], {k[6:]: v for k, v in p.items() if k.startswith("dense.")},
                              (h.permute(0, 2, 3, 1).flatten(1),))
        return torch.nn.functional.cross_entropy(out, yi[None])

    per_example = vmap(grad(one), in_dims=(None, 0, 0))
    batch_grad(), per_example(full, xt, yt)
    check = {}
    if ref is not None:  # the mirror's batch gradient in flax's layout (the order of ravel_pytree: sorted keys)
        conv = lambda m: [m.bias.grad.numpy(), np.transpose(m.weight.grad.numpy(), (2, 3, 1, 0)).ravel()]
        theirs = np.concatenate([*conv(model[0]), *conv(model[3]), dense.bias.grad.numpy(),
                                 dense.weight.grad.numpy().T.ravel()])
        check["max_rel_diff"] = float(np.abs(theirs - ref).max() / np.abs(ref).max())
    times = interleaved_times({"batch_grad": batch_grad, "per_example": lambda: per_example(full, xt, yt)}, rounds, 3)
    return {"torch": f"torch {torch.__version__}, {torch.get_num_threads()} threads", **check, **times}


def _spawn(name: str, n: int, rounds: int, tmp: Path) -> dict:
    env = {**os.environ, "XLA_FLAGS": FLAG_SETS[name]}
    code = ("import json, sys; from benchmarks.cpu_convolution import _child; "
            f"print('RESULT' + json.dumps(_child({name!r}, {n}, {rounds}, {str(tmp / name)!r} + '.npz')))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    if proc.returncode != 0 or not lines:
        err = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return {"status": "failed: " + (err[-1][:300] if err else f"exit {proc.returncode}")}
    return {"status": "ok", **json.loads(lines[-1][len("RESULT"):])}


def run(quick: bool = False) -> dict:
    n, rounds = (16, 2) if quick else (128, 6)
    names = ["default", "onednn"] if quick else list(FLAG_SETS)
    out: dict = {"batch": n, "rounds": rounds, "calls_per_round": 3, "flag_sets": {k: FLAG_SETS[k] for k in names},
                 "load_average_before": os.getloadavg()[0]}
    t0 = time.perf_counter()
    ref = None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = {name: _spawn(name, n, rounds, tmp) for name in names}
        if rows["default"]["status"] == "ok":
            ref = np.load(tmp / "default.npz")["flax_nhwc"]
        for name, row in rows.items():
            if row["status"] != "ok" or ref is None:
                continue
            grads = np.load(tmp / f"{name}.npz")
            row["max_rel_diff"] = {f: float(np.abs(grads[f] - ref).max() / np.abs(ref).max()) for f in FORMULATIONS}
            base = rows["default"]["flax_nhwc_batch_grad"]
            row["batch_grad_over_default"] = {f: row[f"{f}_batch_grad"] / base for f in FORMULATIONS}
    out["runs"] = rows
    try:
        out["torch"] = _torch(n, rounds, ref)
    except ImportError:
        out["torch"] = "torch not installed (pip install -e .[bench])"
    if isinstance(out["torch"], dict) and rows["default"]["status"] == "ok":
        out["default_over_torch"] = {
            "batch_grad": rows["default"]["flax_nhwc_batch_grad"] / out["torch"]["batch_grad"],
            "per_example": rows["default"]["flax_nhwc_per_example"] / out["torch"]["per_example"]}
        ok = {k: r for k, r in rows.items() if r["status"] == "ok"}
        best = min(((k, f) for k in ok for f in FORMULATIONS), key=lambda kf: ok[kf[0]][f"{kf[1]}_batch_grad"])
        out["fastest_batch_grad"] = {"flags": best[0], "formulation": best[1],
                                     "over_torch": ok[best[0]][f"{best[1]}_batch_grad"] / out["torch"]["batch_grad"],
                                     "max_rel_diff": ok[best[0]].get("max_rel_diff", {}).get(best[1])}
    out["load_average_after"] = os.getloadavg()[0]
    out["seconds"] = time.perf_counter() - t0
    return out
