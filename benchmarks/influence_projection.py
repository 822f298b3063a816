"""Random-projection (TRAK-style) influence at scale (issue 17 part 3): peak memory against the number of
training points N, and the time of :func:`repair_jax.influence.fit_projected` + scores.

Model: a 784-256-10 ReLU MLP (203,530 parameters) trained for one epoch on real Fashion-MNIST (digits,
64-32-10, when the Fashion-MNIST files are not installed; N then capped by its size). Training points: the
first N of the 60,000 Fashion-MNIST training images (the train, val and pool splits together); test points:
the canonical test images. Projection: Rademacher, k = :data:`K`; gradient chunks of :data:`CHUNK` examples.

* ``memory``: for each N of :data:`NS`, in a fresh subprocess (so peaks do not mix), the process's peak
  resident set (``resource.getrusage(...).ru_maxrss``) of (i) ``per_example_grads`` consumed chunk by chunk
  (each chunk reduced to its squared norms before the next is formed:
  :func:`repair_jax.influence.map_gradient_chunks`) and (ii) ``fit_projected`` + the scores of
  :data:`TEST_POINTS` test points; also the peak before computing (data and weights loaded) and the sizes
  that must grow with N: the training inputs, the projected gradients Phi (N x k) and the scores.
* ``scale``: fit + scores of :data:`SCALE_TEST_POINTS` test points against the first :data:`SCALE_N` of the
  60,000 training points, in a fresh subprocess; seconds per 1,000 training points, on the device named in
  the JSON. On an accelerator, or with ``REPAIR_JAX_BENCH_FULL=1``, the issue's full size instead: all
  60,000 training points against all 10,000 test points (about 10 minutes of this 2-core CPU).

Quick mode (a smoke run of seconds): digits, an untrained 64-16-10 MLP, N in (100, 200), k 32, in-process.
``memory=False`` measures ``scale`` alone (the accelerator suite, :mod:`benchmarks.gpu`: peak resident sets
are the host's, not the device's).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

NS = (1000, 4000, 16000)
K = 512
CHUNK = 256
TEST_POINTS = 100
SCALE_N = 20000  # of the 60,000, on a CPU unless REPAIR_JAX_BENCH_FULL=1
SCALE_TEST_POINTS = 1000


def _full_scale() -> bool:
    """All 60,000 training points against all 10,000 test points: on an accelerator, or when asked."""
    return jax.default_backend() != "cpu" or os.environ.get("REPAIR_JAX_BENCH_FULL") == "1"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _model(spec: dict):
    from repair_jax.models import create_model, init_variables

    model = create_model("mlp", 10, hidden=tuple(spec["hidden"]))
    return model, init_variables(model, jax.random.PRNGKey(0), tuple(spec["shape"]))["params"]


def _all_training_points(ds):
    """The train, val and pool splits together (for Fashion-MNIST: all 60,000 training images)."""
    return (np.concatenate([ds.train.x, ds.val.x, ds.pool.x]), np.concatenate([ds.train.y, ds.val.y, ds.pool.y]))


def _child(spec: dict) -> dict:
    """One measurement (``spec["what"]``: grads | projected) in this process: peak RSS and seconds."""
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    from repair_jax.data import load_dataset
    from repair_jax.influence import ClassifierLoss, fit_projected, map_gradient_chunks

    ds = load_dataset(spec["dataset"], seed=0)
    x, y = _all_training_points(ds)
    n, m = min(spec["n"], len(y)), min(spec["test_points"], len(ds.test))
    model, template = _model(spec)
    params = ravel_pytree(template)[1](jnp.asarray(np.load(spec["params"])))
    loss = ClassifierLoss(model.apply)
    train = {"x": jnp.asarray(x[:n]), "y": jnp.asarray(y[:n])}
    test = {"x": jnp.asarray(ds.test.x[:m]), "y": jnp.asarray(ds.test.y[:m])}
    before = _peak_mb()
    t0 = time.perf_counter()
    out = {"n": n, "peak_before_mb": before, "train_inputs_mb": train["x"].nbytes / 2 ** 20}
    if spec["what"] == "grads":
        norms = map_gradient_chunks(lambda g: jnp.sum(g * g, axis=1), loss, params, train, chunk_size=spec["chunk"])
        jax.block_until_ready(norms)
    else:
        fit = fit_projected(loss, [params], train, spec["k"], chunk_size=spec["chunk"], damping=1e-3 * n)
        t1 = time.perf_counter()
        scores = jax.block_until_ready(fit.scores(test))
        out.update(fit_s=t1 - t0, scores_s=time.perf_counter() - t1, test_points=m,
                   phi_mb=fit.phis[0].nbytes / 2 ** 20, scores_mb=scores.nbytes / 2 ** 20)
    return {**out, "seconds": time.perf_counter() - t0, "peak_mb": _peak_mb()}


def _measure(spec: dict, quick: bool) -> dict:
    """:func:`_child` in a fresh interpreter (in-process in quick mode)."""
    if quick:
        return _child(spec)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.influence_projection", json.dumps(spec)],
                          capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"benchmark subprocess failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _train(dataset: str, hidden: tuple, path: str, epochs: int) -> dict:
    """Trains the MLP ``epochs`` epochs and saves its flat parameters to ``path``; the model spec."""
    from jax.flatten_util import ravel_pytree

    from repair_jax.train import TrainConfig, train_model

    cfg = TrainConfig(dataset=dataset, model="mlp", model_kwargs={"hidden": hidden}, epochs=epochs, batch_size=128,
                      lr=1e-3, seed=0)
    _, state, history, ds = train_model(cfg, progress=False)
    np.save(path, np.asarray(ravel_pytree(state.params)[0]))
    return {"dataset": dataset, "hidden": list(hidden), "shape": list(ds.input_shape), "params": path,
            "num_params": int(ravel_pytree(state.params)[0].size), "n_available": len(_all_training_points(ds)[1])}


def _memory_rows(spec: dict, ns, quick: bool) -> dict:
    rows = {}
    for what in ("grads", "projected"):
        rows[what] = {str(n): _measure({**spec, "what": what, "n": n}, quick) for n in ns}
        first, last = rows[what][str(ns[0])], rows[what][str(ns[-1])]
        rows[what + "_peak_ratio_largest_over_smallest"] = last["peak_mb"] / first["peak_mb"]
        rows[what + "_peak_growth_mb"] = last["peak_mb"] - first["peak_mb"]
    return rows


def run(quick: bool = False, memory: bool = True) -> dict:
    from repair_jax.data import find_fashion_mnist_dir

    dataset = "digits" if quick or find_fashion_mnist_dir() is None else "fashion_mnist"
    hidden = (16,) if quick else ((256,) if dataset == "fashion_mnist" else (32,))
    k, chunk = (32, 64) if quick else (K, CHUNK)
    with tempfile.TemporaryDirectory() as tmp:
        spec = _train(dataset, hidden, os.path.join(tmp, "params.npy"), 0 if quick else 1)
        spec.update(k=min(k, spec["num_params"]), chunk=chunk, test_points=TEST_POINTS)
        ns = tuple(n for n in ((100, 200) if quick else NS) if n <= spec["n_available"])
        memory = _memory_rows(spec, ns, quick) if memory else "not measured (memory=False)"
        full = not quick and _full_scale()
        n_scale = spec["n_available"] if full else min(200 if quick else SCALE_N, spec["n_available"])
        scale = _measure({**spec, "what": "projected", "n": n_scale,
                          "test_points": 10 ** 9 if full else SCALE_TEST_POINTS}, quick)  # 10 ** 9: the whole test split
        scale["full_size"] = full
    scale["fit_plus_scores_s_per_1000_train"] = (scale["fit_s"] + scale["scores_s"]) / (scale["n"] / 1000)
    return {"dataset": dataset, "model": f"mlp {'-'.join(map(str, [int(np.prod(spec['shape'])), *hidden, 10]))}",
            "params": spec["num_params"], "k": spec["k"], "projection": "rademacher", "chunk_size": chunk,
            "test_points": TEST_POINTS, "device": str(jax.devices()[0]), "cpu_count": os.cpu_count(),
            "memory": memory, "scale": scale,
            "note": "peak_mb: the process's peak resident set (ru_maxrss), each measurement in a fresh process "
                    "(in-process in quick mode); it includes the data set loaded whole, the weights and the "
                    "XLA runtime (peak_before_mb: before computing)."}


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.argv[1]))))
