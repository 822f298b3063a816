"""EK-FAC influence at scale (issue 17 Part 3): :func:`repair_jax.influence.fit_influence` with
``method="ekfac"`` (:mod:`repair_jax.influence.kfac`, true Fisher, damping 0.01 x the approximation's
largest eigenvalue; chunks of 256 examples) on real Fashion-MNIST (digits when the IDX files are not installed).

* ``<model>_n<N>``: an MLP 784-256-10 and the small CNN (:class:`repair_jax.models.SmallCNN`, its BatchNorm
  handled by the diagonal fallback) trained on the first N training points (N = 1,000 and 10,000); ``fit_s``
  the EK-FAC fit (factors, eigendecompositions, corrected eigenvalues, and the (N, P) training gradients when
  they fit in 2 GB; otherwise scores take one chunked gradient pass), ``scores_s[M]`` scoring M = 1, 10, 100
  test points against all N (each M called once, compilation included, as a user would).
* ``mlp_vs_cg``: on N = 1,000 and M = 10 test points, EK-FAC against ``method="cg"`` (the exact damped
  Hessian; relative damping 0.1, since the trained network's Hessian is indefinite and CG diverges at 0.01;
  CG to 1e-4, the CLI's float32 tolerance, at most 300 iterations; its convergence is recorded) with EK-FAC
  given CG's absolute damping: Spearman correlation of the (M, N) scores (per test point: mean and minimum;
  over all pairs) and the time ratio ``ekfac_over_cg`` of fit + scores. No CNN comparison: each CG
  iteration costs about four forward passes over the N training points per test point (tens of TFLOP
  for N = 1,000 and M = 10 at CG's iteration counts), beyond this benchmark's time on 2 CPU cores.

Times on the machine named in the record (``device``); the 2-core CPU here is shared, so ratios measured
in one run are the figures to read.

``run(sizes=, models=, versus_cg=)`` chooses the rows (the accelerator suite, :mod:`benchmarks.gpu`: the MLP
at N = 10,000 and 60,000). An N larger than the training split fits EK-FAC on the first N of the training
images of all three splits (train, val, pool; for Fashion-MNIST all 60,000), the model still trained on its
training split (``fit_points`` in the row).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from repair_jax.influence import ClassifierLoss, fit_influence
from repair_jax.influence.workflow import FLOAT32_CG_TOL

RELATIVE_DAMPING = 0.01
CG_RELATIVE_DAMPING = 0.1  # the trained networks' Hessians are indefinite: CG diverges at 0.01
CG_MAX_ITER = 300
MODELS = {"mlp": ("mlp", {"hidden": (256,)}, 1e-3), "cnn": ("cnn", {}, 1e-3)}


def _timed(fn):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - t0, out


def _first(batch, m):
    return jax.tree_util.tree_map(lambda a: a[:m], batch)


def _dataset():
    from repair_jax.data import find_fashion_mnist_dir
    return "fashion_mnist" if find_fashion_mnist_dir() is not None else "digits"


def _setup(dataset: str, model: str, n_train: int, epochs: int, n_test: int, quick: bool = False):
    """((loss, params, train batch, test batch), fit_points) of ``model`` trained on the first ``n_train``
    training points (``quick``: a CNN of width 4, dense 16); ``n_train`` beyond the training split: the
    train batch holds the first ``n_train`` images of train, val and pool, ``fit_points`` says which."""
    from repair_jax.train import TrainConfig, train_model

    name, kwargs, lr = MODELS[model]
    kwargs = {"width": 4, "dense": 16} if quick and model == "cnn" else kwargs
    cfg = TrainConfig(dataset=dataset, model=name, model_kwargs=kwargs, epochs=epochs, lr=lr, seed=0,
                      train_limit=n_train)
    _, state, _, ds = train_model(cfg, progress=False)
    x, y, fit_points = ds.train.x, ds.train.y, "train split"
    if n_train > len(y):  # fit on the first n_train images of train, val and pool together
        splits = (ds.train, ds.val, ds.pool)
        x, y = (np.concatenate([s.x for s in splits])[:n_train], np.concatenate([s.y for s in splits])[:n_train])
        fit_points = "train, val and pool splits (the model trained on the train split)"
    train = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
    test = {"x": jnp.asarray(ds.test.x[:n_test]), "y": jnp.asarray(ds.test.y[:n_test])}
    return (ClassifierLoss.from_state(state), state.params, train, test), fit_points


def _scaling(setup, ms, fit_points: str) -> dict:
    loss, params, train, test = setup
    fit_s, fit = _timed(lambda: fit_influence(loss, params, train, method="ekfac", relative_damping=RELATIVE_DAMPING,
                                              chunk_size=256))
    row = {"n_train": len(train["y"]), "fit_points": fit_points, "parameters": int(ravel_pytree(params)[0].size),
           "fit_s": fit_s,
           "gradients_stored": fit.grads is not None, "damping": fit.damping, "scores_s": {}}
    for m in ms:
        row["scores_s"][m] = _timed(lambda: fit.scores(_first(test, m))[0])[0]
    return row


def _versus_cg(setup, m: int) -> dict:
    from repair_jax.stats import spearman

    loss, params, train, test = setup
    test = _first(test, m)
    cg_s, (cg_fit, cg, r) = _timed(lambda: _fit_scores(loss, params, train, test, method="cg", max_iter=CG_MAX_ITER,
                                                        relative_damping=CG_RELATIVE_DAMPING, tol=FLOAT32_CG_TOL))
    ek_s, (_, ek, _) = _timed(lambda: _fit_scores(loss, params, train, test, method="ekfac", damping=cg_fit.damping))
    cg, ek = np.asarray(cg), np.asarray(ek)
    per = [spearman(ek[t], cg[t]) for t in range(m)]
    return {"n_train": len(train["y"]), "test_points": m, "damping": cg_fit.damping, "cg_converged": r.converged,
            "cg_max_residual": float(r.residuals.max()), "cg_iterations": int(r.iterations.max()),
            "cg_s": cg_s, "ekfac_s": ek_s,
            "ekfac_over_cg": ek_s / cg_s, "spearman_mean": float(np.mean(per)), "spearman_min": float(np.min(per)),
            "spearman_all_pairs": spearman(ek.ravel(), cg.ravel())}


def _fit_scores(loss, params, train, test, **opts):
    fit = fit_influence(loss, params, train, chunk_size=256, **opts)
    scores, r = fit.scores(test)
    return fit, scores, r


def run(quick: bool = False, sizes=None, models=None, versus_cg: bool = True) -> dict:
    """``sizes``: the N of the rows (default 1,000 and 10,000; quick 200); ``models``: names of
    :data:`MODELS` (default all); ``versus_cg``: the CG comparison on the MLP at the first N."""
    dataset = "digits" if quick else _dataset()
    default_sizes, ms, epochs = ((200,), (1, 10), {"mlp": 2, "cnn": 1}) if quick else ((1000, 10000), (1, 10, 100),
                                                                                      {"mlp": 10, "cnn": 2})
    sizes = tuple(sizes or default_sizes)
    out = {"setup": {"dataset": dataset, "device": str(jax.devices()[0]), "relative_damping": RELATIVE_DAMPING,
                     "fisher": "true", "models": {"mlp": "MLP 784-256-10 (ReLU)",
                                                  "cnn": "SmallCNN (2 blocks of 2 3x3 conv-BN-ReLU + max-pool, "
                                                         "dense 128 + BN)"}}}
    for model in models or MODELS:
        for n in sizes:
            setup, fit_points = _setup(dataset, model, n, epochs[model], max(ms), quick)
            out[f"{model}_n{n}"] = _scaling(setup, ms, fit_points)
            if n == sizes[0] and model == "mlp" and versus_cg:
                out["mlp_vs_cg"] = _versus_cg(setup, 10)
    return out
