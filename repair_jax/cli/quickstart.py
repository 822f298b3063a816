"""``repair-jax quickstart``: the main job on the embedded digits: train a small CNN, diagnose it,
repair its most confused pair (OUT/run, OUT/diagnosis, OUT/repair)."""

from __future__ import annotations

import time
from pathlib import Path

from repair_jax.cli.common import add_out, seed_type
from repair_jax.errors import require_at_least


def configure(p) -> None:
    add_out(p, "directory for the run and its results", default="runs/quickstart")
    p.add_argument("--epochs", type=int, default=3,
                   help="training epochs (few on purpose: the small CNN then makes group errors to repair)")
    p.add_argument("--seed", type=seed_type("--seed"), default=0, help="seed of the training run")
    p.add_argument("--repair-seeds", type=int, default=3, help="seeds for the selected repair settings")


def run(args) -> int:
    from repair_jax.diagnosis import diagnose_run, format_summary
    from repair_jax.repair import RepairConfig, Targets, format_table, run_study
    from repair_jax.runs import load_run, train_run
    from repair_jax.train import TrainConfig

    require_at_least("--epochs", args.epochs, 0)
    require_at_least("--repair-seeds", args.repair_seeds, 1)
    out, show = Path(args.out), not args.no_progress
    cfg = TrainConfig(dataset="digits", model="cnn", model_kwargs={"width": 8, "dense": 32},
                      epochs=args.epochs, batch_size=64, lr=3e-3, seed=args.seed)
    t0 = time.perf_counter()
    print(f"[1/3] training a small BatchNorm CNN (width 8) on scikit-learn digits for only {args.epochs} "
          "epochs, so that it still makes group-level errors...")
    info = train_run(cfg, out / "run", force=args.force, progress=show)
    print(f"      test accuracy {info['test_accuracy']:.4f} ({info['wall_time']:.1f}s)")
    print("[2/3] diagnosing group-level errors on the test split...")
    d = diagnose_run(out / "run", out / "diagnosis", force=args.force)
    print(format_summary(d))
    a, b = d["top_pairs"][0]["classes"]
    rcfg = RepairConfig(epochs=1, lr=3e-4, batch_size=64, seeds=args.repair_seeds, rhos=(0.1, 0.5, 0.9))
    print(f"[3/3] repairing the most confused pair {a},{b} with orig-ft and every WR method "
          f"(rho grid {list(rcfg.rhos)}, 1 fine-tuning epoch, {rcfg.seeds} seeds for the selected settings)...")
    run_ = load_run(out / "run")
    # --force: the model was retrained, so the study starts afresh (without it OUT was empty)
    summary = run_study(run_.classifier(), run_.dataset(), Targets(((a, b),)), out / "repair", rcfg,
                        progress=show, force=args.force)
    print(format_table(summary))
    print(f"done in {time.perf_counter() - t0:.1f}s -> {out}")
    return 0
