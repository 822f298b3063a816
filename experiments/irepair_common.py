"""Shared options of the I-REPAIR experiments (001_67555029b287879f.txt Sec. 5): the cached trained
run, the repair context, and writing the tables."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_RUN = "experiments/results/irepair/fmnist_mlp_run"


def parser(description: str, default_out: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--run", default=DEFAULT_RUN,
                   help="trained run directory; trained (and cached) there if missing")
    p.add_argument("--dataset", default="fashion_mnist", help="data set when the run must be trained")
    p.add_argument("--model", default="mlp", help="model when the run must be trained (mlp = FC 2x256)")
    p.add_argument("--train-epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, default=3, help="seeds per repair problem (001 uses 20)")
    p.add_argument("--classes", type=int, nargs="+", default=None, help="classes (default: all)")
    p.add_argument("--correct-size", type=int, default=40)
    p.add_argument("--ub", type=int, default=5000)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--smoke", action="store_true", help="seconds-long run on digits")
    p.add_argument("--out", default=default_out)
    return p


def check(args) -> None:
    """Every shared flag (and --gamma / --gammas where a script has them) is checked before any training."""
    from repair_jax.errors import UserError, require_at_least
    from repair_jax.repair.irepair import IRepairConfig

    require_at_least("--seeds", args.seeds, 1)
    require_at_least("--correct-size", args.correct_size, 1)
    require_at_least("--train-epochs", args.train_epochs, 0)
    if args.classes is not None and any(c < 0 for c in args.classes):
        raise UserError(f"--classes must be class indices >= 0, got {args.classes}")
    for gamma in [getattr(args, "gamma", 1.0), *getattr(args, "gammas", [])]:
        IRepairConfig(gamma=gamma, ub=args.ub, lr=args.lr).validate()


def context(args):
    """RepairContext of the run (trains it first when the directory does not exist); checks the flags first."""
    from repair_jax.cli import train_run
    from repair_jax.repair.protocol import RepairContext
    from repair_jax.runs import load_run
    from repair_jax.train import TrainConfig

    check(args)
    run_dir = Path(args.run)
    if args.smoke:
        run_dir = Path(args.out) / "smoke_run"
        if not run_dir.exists():
            train_run(TrainConfig(dataset="digits", model="mlp", model_kwargs={"hidden": [64, 64]},
                                  epochs=10, lr=3e-3), run_dir, progress=False)
    elif not run_dir.exists():
        train_run(TrainConfig(dataset=args.dataset, model=args.model, epochs=args.train_epochs,
                              batch_size=128, lr=1e-3), run_dir, progress=True)
    return RepairContext.from_run(load_run(run_dir))


def classes(args, ctx):
    """The requested classes (default all) that have a misclassified input in the pool."""
    import numpy as np

    k = ctx.dataset.num_classes
    wanted = args.classes if args.classes is not None else list(range(k))
    if any(c >= k for c in wanted):
        from repair_jax.errors import UserError
        raise UserError(f"--classes: {ctx.dataset.name} has classes 0..{k - 1}, got {wanted}")
    y = ctx.dataset.pool.y
    wrong = np.bincount(y[ctx.pool_predictions != y], minlength=ctx.dataset.num_classes)
    kept = [c for c in wanted if wrong[c] > 0]
    if args.smoke:
        kept = kept[:2]
    for c in set(wanted) - set(kept):
        print(f"note: class {c} skipped ({wrong[c]} misclassified pool inputs)")
    return kept


def setup(args):
    """(RepairContext, classes, IRepairConfig from --gamma/--ub/--lr) shared by the sweep scripts."""
    from repair_jax.repair.irepair import IRepairConfig

    ctx = context(args)
    return ctx, classes(args, ctx), IRepairConfig(gamma=args.gamma, ub=args.ub, lr=args.lr)


def plot(args, name: str, runs: list[dict], methods: dict, title: str) -> None:
    """PNG of the mean drop (95% CI) against the group (|R|) for ``methods`` {label: predicate}."""
    from repair_jax.plots import plot_accuracy_drop
    from repair_jax.repair.protocol import mean_ci

    groups = {}
    for label, keep in methods.items():
        by_x: dict = {}
        for r in runs:
            if keep(r):
                by_x.setdefault(r["group"], []).append(100 * r["accuracy_drop"])
        groups[label] = [(x, *mean_ci(v)) for x, v in by_x.items()]
    plot_accuracy_drop(groups, Path(args.out) / f"{name}.png", title=title)


def finish(args, name: str, runs: list[dict], table: str, header: str) -> None:
    from repair_jax.io import write_json, write_text

    out = Path(args.out)
    # every run's record is in {name}.jsonl; the JSON keeps the options and the table's inputs
    write_json(out / f"{name}.json", {"args": dict(vars(args)), "records": f"{name}.jsonl",
                                      "runs": len(runs), "table": table})
    write_text(out / f"{name}.md", f"{header}\n\n{table}\n")
    print(header)
    print(table)
    print(f"-> {out}/{name}.md")
