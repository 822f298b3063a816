"""Fit once, attribute many (issue 17 part 2): influence of 1,000 digits training points on M test points
of a trained 64-32-10 ReLU MLP (2,410 parameters), damping 0.01 x the Hessian's largest eigenvalue (``repair-jax influence``'s default; H + damping I is positive
definite there), CG to a relative residual of 1e-4 (the CLI's float32 tolerance).

* ``per_point_s``: :func:`repair_jax.influence.influence_up_loss` called once per test point (the
  curvature, i.e. the power iterations of the damping and for ``explicit`` the dense Hessian, re-formed
  each time);
* ``fit_s`` + ``scores_s[M]``: :func:`repair_jax.influence.fit_influence` once, then ``fit.scores`` of M
  test points in one block solve, for M = 1, 10, 100;
* dattri (when installed, the ``bench`` extra): ``IFAttributorExplicit`` / ``IFAttributorCG`` on the same
  weights mirrored in torch (the training set in one batch, the M test points in one batch, so dattri
  forms its Hessian once), its scores asserted equal to ours; times as ratios ours / dattri.

Times include compilation (each call is made once, as a user would).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from repair_jax.influence import ClassifierLoss, fit_influence, influence_up_loss
from repair_jax.influence.workflow import FLOAT32_CG_TOL

RELATIVE_DAMPING = 0.01


def _timed(fn):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - t0, out


def _setup(n_train: int, n_test: int):
    """(loss, params, train batch, test batch) of a 64-32-10 MLP trained on digits (2,410 parameters)."""
    from repair_jax.train import TrainConfig, train_model

    cfg = TrainConfig(model="mlp", model_kwargs={"hidden": (32,)}, epochs=30, lr=1e-2, seed=0)
    _, state, _, ds = train_model(cfg, progress=False)
    train = {"x": jnp.asarray(ds.train.x[:n_train]), "y": jnp.asarray(ds.train.y[:n_train])}
    test = {"x": jnp.asarray(ds.test.x[:n_test]), "y": jnp.asarray(ds.test.y[:n_test])}
    return ClassifierLoss.from_state(state), state.params, train, test


def _row(batch, j):
    return jax.tree_util.tree_map(lambda a: a[j:j + 1], batch)


def _first(batch, m):
    return jax.tree_util.tree_map(lambda a: a[:m], batch)


def _ours(loss, params, train, test, method, ms, per_point_m):
    opts = dict(method=method, relative_damping=RELATIVE_DAMPING, chunk_size=None,
                tol=FLOAT32_CG_TOL if method == "cg" else None)
    fit_s, fit = _timed(lambda: fit_influence(loss, params, train, **opts))
    row = {"fit_s": fit_s, "damping": fit.damping, "factor": fit.factor[0] if fit.factor else None,
           "scores_s": {}, "converged": {}, "max_residual": {}, "iterations": {}}
    scores = {}
    for m in ms:
        t, (s, r) = _timed(lambda: fit.scores(_first(test, m)))
        row["scores_s"][m], row["converged"][m] = t, r.converged
        row["max_residual"][m], row["iterations"][m] = float(r.residuals.max()), int(r.iterations.max())
        scores[m] = np.asarray(s)
    row["fit_plus_scores_s"] = {m: fit_s + row["scores_s"][m] for m in ms}
    t0 = time.perf_counter()
    per = [np.asarray(influence_up_loss(loss, params, train, _row(test, j), **opts)[0]) for j in range(per_point_m)]
    row["per_point_s"] = time.perf_counter() - t0
    row["per_point_over_fitted"] = row["per_point_s"] / row["fit_plus_scores_s"][per_point_m]
    ref = scores[per_point_m]
    row["per_point_max_rel_diff"] = float(np.abs(np.stack(per) - ref).max() / np.abs(ref).max())
    return row, fit.damping, scores


def run(quick: bool = False) -> dict:
    n_train, ms = (1000, (1, 2)) if quick else (1000, (1, 10, 100))
    per_point_m = ms[1]
    loss, params, train, test = _setup(n_train, max(ms))
    p = int(ravel_pytree(params)[0].size)
    out = {"setup": {"model": "MLP 64-32-10 (ReLU), trained on digits", "parameters": p, "n_train": n_train,
                     "test_points": list(ms), "relative_damping": RELATIVE_DAMPING,
                     "per_point_test_points": per_point_m}}
    for method in ("explicit", "cg"):
        row, damping, scores = _ours(loss, params, train, test, method, ms, per_point_m)
        row.update(_dattri(params, train, test, method, damping, row["iterations"], scores, ms))
        if "dattri_s" in row:
            row["ours_over_dattri"] = {m: row["fit_plus_scores_s"][m] / row["dattri_s"][m] for m in ms}
        out[method] = row
    out["note"] = ("ours: fit_s + scores_s[M] against per_point_s (influence_up_loss per test point, "
                   "per_point_test_points of them) and dattri_s[M]; dattri CG runs a fixed number of iterations "
                   "(no tolerance): the most our CG needed for that M")
    return out


def _dattri(params, train, test, method, damping, iterations, scores, ms) -> dict:
    """dattri's explicit / CG influence on the same weights (asserted equal to ours); a note when dattri is
    not installed."""
    import importlib.util

    if importlib.util.find_spec("dattri") is None:
        return {"dattri": "not installed (pip install -e .[bench])"}
    row = {"dattri_s": {}, "dattri_max_rel_diff": {}}
    for m in ms:
        t, s = _timed(lambda: _dattri_scores(params, train, _first(test, m), method, damping, iterations[m]))
        diff = float(np.abs(s - scores[m]).max() / np.abs(scores[m]).max())
        assert diff < (1e-3 if method == "explicit" else 2e-2), f"dattri {method} scores differ from ours: {diff:.3g}"
        row["dattri_s"][m], row["dattri_max_rel_diff"][m] = t, diff
    return row


def _dattri_scores(params, train, test, method, damping, cg_iterations) -> np.ndarray:
    """(M, N) I_up,loss from dattri on the torch mirror of the MLP: dattri returns g_i . H^-1 g_t (N, M),
    i.e. minus our score, transposed."""
    import os

    os.environ.setdefault("TQDM_DISABLE", "1")  # dattri's per-batch progress bars
    import torch
    from dattri.algorithm.influence_function import IFAttributorCG, IFAttributorExplicit
    from dattri.task import AttributionTask
    from torch.utils.data import DataLoader, TensorDataset

    from benchmarks.torch_mirror import linear

    model = torch.nn.Sequential(linear(params["Dense_0"]), torch.nn.ReLU(), linear(params["Dense_1"])).eval()

    def loss_func(p, data):
        x, y = data
        return torch.nn.functional.cross_entropy(torch.func.functional_call(model, p, x), y)

    task = AttributionTask(loss_func=loss_func, model=model, checkpoints=model.state_dict())
    loader = lambda b: DataLoader(TensorDataset(torch.as_tensor(np.asarray(b["x"]).reshape(len(b["y"]), -1)),
                                                torch.as_tensor(np.asarray(b["y"]), dtype=torch.long)),
                                  batch_size=len(b["y"]), shuffle=False)
    attributor = (IFAttributorExplicit(task, regularization=damping) if method == "explicit" else
                  IFAttributorCG(task, regularization=damping, max_iter=cg_iterations))
    attributor.cache(loader(train))
    with torch.no_grad():
        out = attributor.attribute(loader(train), loader(test))
    return -out.numpy().T
