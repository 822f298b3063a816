"""Leave-one-out check of influence functions (Koh & Liang 2017; 002 Ch. 3.4, Eq. 3.1/6.2).

For an L2-regularized softmax regression on the real digits data (and a small damped MLP): fit to
convergence (full-batch L-BFGS, float64), pick test points with the highest loss, predict the
change in each one's loss from removing each of the k most influential training points
(-I_up,loss / n), retrain without the point (warm start, to convergence), and report the Pearson
correlation of predicted and actual changes.

    python experiments/influence_loo.py [--k 20] [--test-points 3] [--mlp-train 400] [--smoke] [--out DIR]

The MLP (one hidden layer of 16, 1210 parameters) uses a 400-point training subset, one test point,
damping 0.01 in the Hessian only, and L-BFGS capped at 400 iterations per (re)fit: its objective is
non-convex, so retraining reaches a nearby stationary point at best.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from repair_jax.data import load_dataset
from repair_jax.errors import exits_on_user_error, require_at_least
from repair_jax.influence import ClassifierLoss, influence_up_loss
from repair_jax.influence.loo import leave_one_out, minimize_objective, pearson
from repair_jax.io import write_json, write_text
from repair_jax.models import create_model, init_variables


def check(model_name: str, hidden, l2: float, damping: float, ds, k: int, test_points: int, seed: int,
          train_limit: int | None, max_iter: int) -> dict:
    m = create_model("mlp", ds.num_classes, hidden=tuple(hidden))
    v = init_variables(m, jax.random.PRNGKey(seed), ds.input_shape)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), v["params"])
    loss = ClassifierLoss(m.apply)
    n = len(ds.train) if train_limit is None else min(train_limit, len(ds.train))
    train = {"x": jnp.asarray(ds.train.x[:n], jnp.float64), "y": jnp.asarray(ds.train.y[:n])}
    t0 = time.perf_counter()
    # the MLP objective is non-convex: the damping is added to its Hessian only (Koh & Liang's
    # damped estimate); L-BFGS stops at max_iter if the gradient tolerance is not reached
    params, gnorm = minimize_objective(loss, params, train, l2=l2, tol=1e-8, max_iter=max_iter)
    test_losses = np.asarray(loss(params, {"x": jnp.asarray(ds.test.x, jnp.float64), "y": jnp.asarray(ds.test.y)}))
    picks = np.argsort(-test_losses)[:test_points]
    preds, actuals, per_point = [], [], []
    for ti in picks:
        one = {"x": jnp.asarray(ds.test.x[ti:ti + 1], jnp.float64), "y": jnp.asarray(ds.test.y[ti:ti + 1])}
        scores, r = influence_up_loss(loss, params, train, one, method="explicit", l2=l2, damping=damping)
        pred = -np.asarray(scores) / n
        top = np.argsort(-np.abs(pred))[:k]
        res = leave_one_out(loss, params, train, lambda p: jnp.mean(loss(p, one)), top, l2=l2, tol=1e-8,
                            max_iter=max_iter)
        preds.append(pred[top])
        actuals.append(res["actual"])
        per_point.append({"test_index": int(ti), "test_loss": float(test_losses[ti]), "cg": r.summary(),
                          "pearson": pearson(pred[top], res["actual"]),
                          "max_retrain_grad_norm": float(res["grad_norms"].max()),
                          "predicted": pred[top].tolist(), "actual": res["actual"].tolist(),
                          "train_indices": top.tolist()})
    p_all, a_all = np.concatenate(preds), np.concatenate(actuals)
    return {"model": model_name, "hidden": list(hidden), "l2": l2, "damping": damping, "n_train": n,
            "lbfgs_max_iter": max_iter, "solver": "explicit",
            "params": int(sum(a.size for a in jax.tree_util.tree_leaves(params))),
            "fit_grad_norm": gnorm, "k": k, "pearson_all": pearson(p_all, a_all),
            "pearson_per_test_point": [d["pearson"] for d in per_point], "seconds": time.perf_counter() - t0,
            "test_points": per_point}


@exits_on_user_error("influence_loo")
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=20, help="training points removed per test point")
    ap.add_argument("--test-points", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mlp-train", type=int, default=400, help="training points for the MLP check")
    ap.add_argument("--smoke", action="store_true", help="seconds-long run (k=4, 1 test point, 200 train points)")
    ap.add_argument("--out", default="experiments/results/influence_loo")
    a = ap.parse_args(argv)
    for flag, value in (("--k", a.k), ("--test-points", a.test_points), ("--mlp-train", a.mlp_train)):
        require_at_least(flag, value, 1)
    k, tp, limit = (4, 1, 200) if a.smoke else (a.k, a.test_points, None)
    ds = load_dataset("digits", seed=a.seed)
    rows = []
    with jax.enable_x64(True):
        for name, hidden, l2, damping, lim, iters in (
                ("logistic_regression", (), 1e-2, 0.0, limit, 2000),
                ("mlp_damped", (16,), 1e-3, 1e-2, 200 if a.smoke else a.mlp_train, 100 if a.smoke else 400)):
            r = check(name, hidden, l2, damping, ds, k, tp if name.startswith("log") else 1, a.seed, lim, iters)
            print(f"{name}: Pearson(predicted, actual LOO change of test loss) = {r['pearson_all']:.4f} "
                  f"over {k} x {len(r['test_points'])} removals (per test point: "
                  f"{', '.join(f'{p:.3f}' for p in r['pearson_per_test_point'])}; {r['seconds']:.0f}s)")
            rows.append(r)
    out = Path(a.out)
    write_json(out / "loo.json", {"dataset": "digits", "seed": a.seed, "smoke": a.smoke, "results": rows})
    table = ["| model | params | n train | L2 | damping | removals | Pearson (all) | Pearson per test point |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['model']} | {r['params']} | {r['n_train']} | {r['l2']} | {r['damping']} | "
                     f"{r['k']} x {len(r['test_points'])} | {r['pearson_all']:.4f} | "
                     f"{', '.join(f'{p:.3f}' for p in r['pearson_per_test_point'])} |")
    write_text(out / "loo.md", "\n".join(table) + "\n")
    _plot(out / "loo.png", rows)
    print(f"-> {out}/loo.json, loo.md, loo.png")
    return 0


def _plot(path, rows):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from repair_jax.plots import save_figure
    fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 4))
    for ax, r in zip(np.atleast_1d(axes), rows):
        p = np.concatenate([t["predicted"] for t in r["test_points"]])
        q = np.concatenate([t["actual"] for t in r["test_points"]])
        ax.scatter(q, p, s=12)
        lim = [min(p.min(), q.min()), max(p.max(), q.max())]
        ax.plot(lim, lim, "k--", lw=0.8)
        ax.set_xlabel("actual change in test loss (retrain without z_i)")
        ax.set_ylabel("predicted  -I_up,loss / n")
        ax.set_title(f"{r['model']}: Pearson {r['pearson_all']:.3f}", fontsize=9)
    save_figure(fig, path)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
