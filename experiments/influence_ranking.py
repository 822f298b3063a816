"""Ranking mislabelled training points by influence on group calibration (002 Sec. 6.5, Fig. 6-3).

For each seed: flip 10% of the digits training labels uniformly at random, fit an L2-regularized
softmax regression, and rank the training points by
  IF-Calib        I_up,disparity (Eq. 6.4) on the ECE of the heavy-ink test group (most harmful first),
  IF-Calib-Label  the largest decrease of that ECE from relabelling the point (Eq. 6.5),
  Loss            the training loss of the point (highest first),
  IF-Norm         I_up,loss (Eq. 6.2) on the mean test loss (most harmful first);
report the fraction of flipped points among the top 50 (random ranking: 0.10).

    python experiments/influence_ranking.py [--seeds 5] [--top 50] [--smoke] [--out DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np

try:
    from experiments.ch6_common import fit, flip_labels, groups, probs
except ImportError:  # run as a script without the repository root on sys.path
    from ch6_common import fit, flip_labels, groups, probs  # type: ignore
from repair_jax.data import load_dataset
from repair_jax.errors import UserError, exits_on_user_error, require_at_least
from repair_jax.influence import (group_disparity_quantity, influence_up, influence_up_loss, influence_pert_y,
                                  label_flip_scores, s_test)
from repair_jax.io import write_json, write_text
from repair_jax.metrics import expected_calibration_error


def one_seed(seed: int, top: int, fraction: float, train_limit: int | None) -> dict:
    ds = load_dataset("digits", seed=seed, train_limit=train_limit)
    rng = np.random.default_rng(seed)
    y_noisy, flipped = flip_labels(ds.train.y, fraction, ds.num_classes, rng)
    loss, params, l2 = fit("logistic_regression", ds, y_noisy, seed)
    train = {"x": jnp.asarray(ds.train.x), "y": jnp.asarray(y_noisy)}
    test = {"x": jnp.asarray(ds.test.x), "y": jnp.asarray(ds.test.y)}
    thr, g = groups(ds)
    mask = g["heavy-ink (minority)"].astype(np.float32)
    q = group_disparity_quantity(loss, test, "ece", mask)
    r = s_test(loss, params, train, q, method="cg", l2=l2, tol=1e-5)
    scores = {
        "IF-Calib": np.asarray(influence_up(loss, params, train, r.x)),
        "IF-Calib-Label": np.asarray(label_flip_scores(
            influence_pert_y(loss, params, train, r.x, ds.num_classes), train["y"])),
        "Loss": np.asarray(loss(params, train)),
        "IF-Norm": np.asarray(influence_up_loss(loss, params, train, test, method="cg", l2=l2, tol=1e-5)[0]),
    }
    frac = {k: float(flipped[np.argsort(-v, kind="stable")[:top]].mean()) for k, v in scores.items()}
    ece = float(expected_calibration_error(probs(loss, params, ds.test.x), test["y"], jnp.asarray(mask)))
    return {"seed": seed, "n_train": len(ds.train), "flipped": int(flipped.sum()), "ink_threshold": thr,
            "group_size": int(mask.sum()), "group_ece": ece, "cg": r.summary(), "top_flipped_fraction": frac}


@exits_on_user_error("influence_ranking")
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--top", type=int, default=50)
    ap.add_argument("--fraction", type=float, default=0.10)
    ap.add_argument("--smoke", action="store_true", help="1 seed, 300 training points")
    ap.add_argument("--out", default="experiments/results/influence_ranking")
    a = ap.parse_args(argv)
    require_at_least("--seeds", a.seeds, 1)
    require_at_least("--top", a.top, 1)
    if not 0 < a.fraction < 1:
        raise UserError(f"--fraction must lie in (0, 1), got {a.fraction}")
    seeds, limit = (1, 300) if a.smoke else (a.seeds, None)
    t0 = time.perf_counter()
    rows = [one_seed(s, a.top, a.fraction, limit) for s in range(seeds)]
    methods = list(rows[0]["top_flipped_fraction"])
    summary = {m: {"mean": float(np.mean([r["top_flipped_fraction"][m] for r in rows])),
                   "std": float(np.std([r["top_flipped_fraction"][m] for r in rows]))} for m in methods}
    out = Path(a.out)
    write_json(out / "ranking.json", {"dataset": "digits", "model": "logistic_regression (L2 1e-3)",
                                      "flip_fraction": a.fraction, "top": a.top, "seeds": seeds,
                                      "group": "heavy-ink test digits (mean intensity > 75th pct of train)",
                                      "summary": summary, "per_seed": rows,
                                      "seconds": time.perf_counter() - t0})
    lines = [f"Fraction of flipped labels among the top {a.top} training points "
             f"({a.fraction:.0%} flipped, {seeds} seeds, digits, softmax regression; random = {a.fraction:.2f})",
             "", "| method | mean | std |", "|---|---|---|"]
    lines += [f"| {m} | {summary[m]['mean']:.3f} | {summary[m]['std']:.3f} |" for m in methods]
    write_text(out / "ranking.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    _plot(out / "ranking.png", summary, a)
    return 0


def _plot(path, summary, a):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from repair_jax.plots import save_figure
    fig, ax = plt.subplots(figsize=(5, 3.4))
    names = list(summary)
    ax.bar(names, [summary[n]["mean"] for n in names], yerr=[summary[n]["std"] for n in names], capsize=4)
    ax.axhline(a.fraction, color="k", ls="--", lw=0.8, label="random")
    ax.set_ylabel(f"flipped fraction in top {a.top}")
    ax.set_title("digits, softmax regression (Fig. 6-3 analogue)", fontsize=9)
    ax.legend(fontsize=8)
    save_figure(fig, path)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
