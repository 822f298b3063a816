"""Sensitivity of group calibration error to label error (002 Sec. 6.3, Fig. 6-1 and 6-2 analogues).

Test time: a fixed model (fit on clean labels); flip 0-30% of the *test* labels uniformly at random
and measure each group's ECE against the flipped labels. Training time: flip 0-30% of the
*training* labels, refit, and measure each group's ECE on the clean test set. Reported: the %
change of the group's ECE relative to 0% flipped, for the heavy-ink (minority) and light-ink
(majority) groups of the digits test set, for softmax regression and an MLP; mean over seeds.

    python experiments/label_flip_sensitivity.py [--seeds 3] [--smoke] [--out DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np

try:
    from experiments.ch6_common import MODELS, fit, flip_labels, groups, probs
except ImportError:  # run as a script without the repository root on sys.path
    from ch6_common import MODELS, fit, flip_labels, groups, probs  # type: ignore
from repair_jax.data import load_dataset
from repair_jax.errors import exits_on_user_error, require_at_least
from repair_jax.io import write_json, write_text
from repair_jax.metrics import expected_calibration_error


def group_ece(p, y, masks) -> dict:
    return {g: float(expected_calibration_error(p, jnp.asarray(y), jnp.asarray(m.astype(np.float32))))
            for g, m in masks.items()}


def pct_change(curve: dict, base: dict) -> dict:
    return {g: 100.0 * (curve[g] - base[g]) / base[g] if base[g] > 0 else float("nan") for g in curve}


@exits_on_user_error("label_flip_sensitivity")
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="1 seed, fractions 0/0.3, 300 training points")
    ap.add_argument("--out", default="experiments/results/label_flip_sensitivity")
    a = ap.parse_args(argv)
    require_at_least("--seeds", a.seeds, 1)
    fractions = [0.0, 0.3] if a.smoke else [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
    seeds, limit = (1, 300) if a.smoke else (a.seeds, None)
    t0 = time.perf_counter()
    records = []
    for model_name in MODELS:
        for seed in range(seeds):
            ds = load_dataset("digits", seed=seed, train_limit=limit)
            thr, masks = groups(ds)
            rng = np.random.default_rng(1000 + seed)
            loss, params, _ = fit(model_name, ds, ds.train.y, seed)
            p_test = probs(loss, params, ds.test.x)
            base_test = group_ece(p_test, ds.test.y, masks)
            for f in fractions:  # test time: fixed model, flipped test labels
                y_f, _ = flip_labels(ds.test.y, f, ds.num_classes, rng)
                e = group_ece(p_test, y_f, masks)
                records.append({"stage": "test", "model": model_name, "seed": seed, "fraction": f, "ece": e,
                                "pct_change": pct_change(e, base_test)})
            for f in fractions:  # training time: refit on flipped training labels, clean test labels
                if f == 0:
                    e = base_test
                else:
                    y_f, _ = flip_labels(ds.train.y, f, ds.num_classes, rng)
                    l_f, p_f, _ = fit(model_name, ds, y_f, seed)
                    e = group_ece(probs(l_f, p_f, ds.test.x), ds.test.y, masks)
                records.append({"stage": "train", "model": model_name, "seed": seed, "fraction": f, "ece": e,
                                "pct_change": pct_change(e, base_test)})
            print(f"{model_name} seed {seed}: done ({time.perf_counter() - t0:.0f}s)")
    gnames = list(masks)
    table = {}
    for stage in ("test", "train"):
        for model_name in MODELS:
            for f in fractions:
                rs = [r for r in records if r["stage"] == stage and r["model"] == model_name and r["fraction"] == f]
                table[(stage, model_name, f)] = {g: (float(np.mean([r["pct_change"][g] for r in rs])),
                                                     float(np.mean([r["ece"][g] for r in rs]))) for g in gnames}
    out = Path(a.out)
    write_json(out / "sensitivity.json", {"dataset": "digits", "seeds": seeds, "fractions": fractions,
                                          "groups": "heavy-ink: test digits with mean intensity > 75th percentile "
                                                    "of training intensities; light-ink: the rest",
                                          "records": records, "seconds": time.perf_counter() - t0})
    lines = ["% change of group ECE vs. 0% flipped labels (mean over "
             f"{seeds} seed(s); ECE at 0% in parentheses)", "",
             "| stage | model | flipped | " + " | ".join(gnames) + " |", "|---|---|---|" + "---|" * len(gnames)]
    for (stage, model_name, f), v in table.items():
        cells = [f"{v[g][0]:+.1f}% ({v[g][1]:.3f})" for g in gnames]
        lines.append(f"| {stage} | {model_name} | {f:.0%} | " + " | ".join(cells) + " |")
    write_text(out / "sensitivity.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    _plot(out / "sensitivity.png", table, fractions, gnames)
    return 0


def _plot(path, table, fractions, gnames):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from repair_jax.plots import save_figure
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=False)
    for ax, stage, title in zip(axes, ("test", "train"), ("test-time label flips (Fig. 6-1)",
                                                          "training-time label flips (Fig. 6-2)")):
        for model_name, ls in zip(MODELS, ("-", "--")):
            for g, c in zip(gnames, ("C3", "C0")):
                ax.plot([100 * f for f in fractions], [table[(stage, model_name, f)][g][0] for f in fractions],
                        ls, color=c, marker="o", ms=3, label=f"{model_name}, {g}")
        ax.set_xlabel("% labels flipped")
        ax.set_ylabel("% change in group ECE")
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=6)
    save_figure(fig, path)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
