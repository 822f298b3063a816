"""The one command-line entry point: ``repair-jax`` / ``python -m repair_jax``.

Each subcommand is a module-level pair ``configure(parser)`` / ``run(args) -> int`` registered in
``SUBCOMMANDS``. A :class:`UserError` anywhere becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

from repair_jax.errors import UserError

# name -> (module, help). A module provides configure(parser) and run(args).
SUBCOMMANDS = {
    "train": ("repair_jax.cli", "train a classifier and write a run directory"),
    "diagnose": ("repair_jax.cli", "diagnose the group-level errors of a trained run"),
    "quickstart": ("repair_jax.cli", "the main job on the embedded digits: train, diagnose, repair"),
    "bench": ("repair_jax.cli", "run the benchmarks and write their JSON figures"),
    "irepair": ("repair_jax.repair.irepair_cli", "repair individual misclassifications (I-REPAIR, 001)"),
    "guide": ("repair_jax.guiding.cli", "model guiding: flag mislabelled / spurious points, update the model"),
    "influence": ("repair_jax.influence.cli", "rank training points by influence on a test loss or group metric"),
    "repair": ("repair_jax.repair.command", "repair a confused pair / biased triplet with Weighted Regularization"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


# ----------------------------------------------------------------------------- train

def _add_train_args(p: argparse.ArgumentParser, defaults) -> None:
    from repair_jax.data import DATASETS
    from repair_jax.models import MODELS

    p.add_argument("--dataset", default=defaults.dataset, help=f"one of {', '.join(DATASETS)}")
    p.add_argument("--model", default=defaults.model, help=f"one of {', '.join(MODELS)}")
    p.add_argument("--model-kwargs", default="{}", help='JSON options for the model, e.g. \'{"width": 16}\'')
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--optimizer", default=defaults.optimizer, choices=["adam", "sgd", "rmsprop"])
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--schedule", default=defaults.schedule, choices=["cosine", "constant", "step"])
    p.add_argument("--l2", type=float, default=defaults.l2, help="L2 coefficient in the objective")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--data-dir", default=None, help="directory with the data (IDX files, TFDS data)")
    p.add_argument("--train-limit", type=int, default=None, help="train on a stratified subset")
    p.add_argument("--data-parallel", action="store_true",
                   help="shard each batch over all devices (default when there are several)")
    p.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize() first (multi-host; see README)")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _config_from_args(args):
    from repair_jax.train import TrainConfig

    try:
        model_kwargs = json.loads(args.model_kwargs)
    except json.JSONDecodeError as e:
        raise UserError(f"--model-kwargs is not valid JSON: {e.msg}") from None
    if not isinstance(model_kwargs, dict):
        raise UserError("--model-kwargs must be a JSON object")
    cfg = TrainConfig(dataset=args.dataset, model=args.model, model_kwargs=model_kwargs,
                      epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer,
                      lr=args.lr, schedule=args.schedule, l2=args.l2, seed=args.seed,
                      data_dir=args.data_dir, train_limit=args.train_limit)
    cfg.validate()
    return cfg


def train_run(cfg, out, force: bool = False, progress: bool = True, data_parallel: bool = False,
              checkpoint_every: int = 0) -> dict:
    """Trains ``cfg`` and writes the run directory ``out`` atomically; returns run.json's record.

    ``checkpoint_every=k`` > 0 also keeps the weights after every k-th epoch (and the last one) with
    the step size in force at that epoch's last step, for TracInCP (``repair-jax influence --method tracin``).
    """
    import dataclasses

    import jax

    from repair_jax.errors import require_at_least
    from repair_jax.io import atomic_dir
    from repair_jax.runs import save_epoch_checkpoint, write_run
    from repair_jax.train import data_mesh, evaluate, learning_rate_at, steps_per_epoch, train_model

    require_at_least("--checkpoint-every", checkpoint_every, 0)
    cfg.validate()
    with atomic_dir(out, overwrite=force) as tmp:
        t0 = time.perf_counter()
        mesh = data_mesh() if (data_parallel or jax.device_count() > 1) else None
        ds = cfg.load_dataset()
        per_epoch = steps_per_epoch(cfg, len(ds.train))
        kept: list[dict] = []

        def keep(epoch, state):
            if epoch % checkpoint_every and epoch != cfg.epochs:
                return
            lr = learning_rate_at(cfg, cfg.epochs * per_epoch, epoch * per_epoch - 1)
            kept.append(save_epoch_checkpoint(tmp, epoch, lr, {"params": state.params,
                                                               "batch_stats": state.batch_stats}))

        model, state, history, ds = train_model(cfg, dataset=ds, progress=progress, mesh=mesh,
                                                on_epoch_end=keep if checkpoint_every else None)
        wall = time.perf_counter() - t0
        test_metric = evaluate(state, ds.test, ds.multilabel)
        info = {
            "config": dataclasses.asdict(cfg), "dataset": ds.name, "class_names": list(ds.class_names),
            "num_classes": ds.num_classes, "multilabel": ds.multilabel, "input_shape": list(ds.input_shape),
            "split_sizes": {s: len(ds.split(s)) for s in ("train", "val", "pool", "test")},
            "history": history, ("test_map" if ds.multilabel else "test_accuracy"): test_metric,
            "wall_time": wall, "devices": [str(d) for d in jax.devices()], "jax_version": jax.__version__,
        }
        if kept:
            info["epoch_checkpoints"] = kept
        write_run(tmp, info, {"params": state.params, "batch_stats": state.batch_stats})
    return info


def _configure_train(p):
    from repair_jax.train import TrainConfig

    _add_train_args(p, TrainConfig())
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="K",
                   help="also keep the weights every K epochs (and the last), for TracInCP; 0 = only the final")
    p.add_argument("--out", required=True, help="run directory to create")


def _run_train(args) -> int:
    if args.distributed:
        import jax
        jax.distributed.initialize()
    cfg = _config_from_args(args)
    info = train_run(cfg, args.out, force=args.force, progress=not args.no_progress,
                     data_parallel=args.data_parallel, checkpoint_every=args.checkpoint_every)
    key = "test_map" if info["multilabel"] else "test_accuracy"
    print(f"trained {cfg.model} on {info['dataset']} in {info['wall_time']:.1f}s: "
          f"{key.replace('_', ' ')} {info[key]:.4f} -> {args.out}")
    return 0


# ----------------------------------------------------------------------------- diagnose

def diagnose_run(run_path, out, split: str = "test", top_k: int = 5, force: bool = True) -> dict:
    """Diagnoses a run; writes DIR/diagnosis.json and DIR/confusion_matrix.png atomically."""
    from repair_jax.diagnosis import diagnose
    from repair_jax.io import atomic_dir, write_json
    from repair_jax.plots import plot_confusion_matrix
    from repair_jax.runs import load_run

    if top_k <= 0:
        raise UserError(f"--top must be positive, got {top_k}")
    run = load_run(run_path)
    ds = run.dataset()
    with atomic_dir(out, overwrite=force) as tmp:
        d = diagnose(run.state(), ds, split=split, top_k=top_k)
        write_json(tmp / "diagnosis.json", d)
        if not ds.multilabel:
            plot_confusion_matrix(d["confusion_matrix"], ds.class_names, tmp / "confusion_matrix.png",
                                  title=f"{ds.name} {run.info['config']['model']} ({split})")
    return d


def _configure_diagnose(p):
    p.add_argument("--run", required=True, help="run directory written by `repair-jax train`")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--split", default="test", choices=["train", "val", "pool", "test"])
    p.add_argument("--top", type=int, default=5, help="how many pairs/triplets to list")


def _run_diagnose(args) -> int:
    from repair_jax.diagnosis import format_summary

    d = diagnose_run(args.run, args.out, args.split, args.top)
    print(format_summary(d))
    print(f"-> {args.out}/diagnosis.json")
    return 0


# ----------------------------------------------------------------------------- quickstart

def _configure_quickstart(p):
    p.add_argument("--out", default="runs/quickstart", help="directory for the run and its results")
    p.add_argument("--epochs", type=int, default=3,
                   help="training epochs (few on purpose: the small CNN then makes group errors to repair)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repair-seeds", type=int, default=3, help="seeds for the selected repair settings")
    p.add_argument("--no-progress", action="store_true")


def _run_quickstart(args) -> int:
    import shutil
    from pathlib import Path

    from repair_jax.diagnosis import format_summary
    from repair_jax.repair import RepairConfig, Targets, format_table, run_study
    from repair_jax.runs import load_run
    from repair_jax.train import TrainConfig

    out = Path(args.out)
    cfg = TrainConfig(dataset="digits", model="cnn", model_kwargs={"width": 8, "dense": 32},
                      epochs=args.epochs, batch_size=64, lr=3e-3, seed=args.seed)
    t0 = time.perf_counter()
    print(f"[1/3] training a small BatchNorm CNN (width 8) on scikit-learn digits for only {args.epochs} "
          "epochs, so that it still makes group-level errors...")
    info = train_run(cfg, out / "run", force=True, progress=not args.no_progress)
    print(f"      test accuracy {info['test_accuracy']:.4f} ({info['wall_time']:.1f}s)")
    print("[2/3] diagnosing group-level errors on the test split...")
    d = diagnose_run(out / "run", out / "diagnosis")
    print(format_summary(d))
    a, b = d["top_pairs"][0]["classes"]
    rcfg = RepairConfig(epochs=1, lr=3e-4, batch_size=64, seeds=args.repair_seeds, rhos=(0.1, 0.5, 0.9))
    print(f"[3/3] repairing the most confused pair {a},{b} with orig-ft and every WR method "
          f"(rho grid {list(rcfg.rhos)}, 1 fine-tuning epoch, {rcfg.seeds} seeds for the selected settings)...")
    run = load_run(out / "run")
    shutil.rmtree(out / "repair", ignore_errors=True)  # the model was retrained: start the study afresh
    summary = run_study(run.model, run.variables, run.dataset(), Targets(((a, b),)), out / "repair", rcfg,
                        progress=not args.no_progress)
    print(format_table(summary))
    print(f"done in {time.perf_counter() - t0:.1f}s -> {out}")
    return 0


# ----------------------------------------------------------------------------- bench

def _configure_bench(p):
    p.add_argument("--out", default="benchmarks/results", help="directory for the JSON figures")
    p.add_argument("--only", default=None, help="comma-separated benchmark names")
    p.add_argument("--quick", action="store_true", help="small sizes (seconds, for smoke tests)")


def _run_bench(args) -> int:
    from benchmarks.__main__ import run_benchmarks

    run_benchmarks(args.out, only=args.only.split(",") if args.only else None, quick=args.quick)
    return 0


_LOCAL = {
    "train": (_configure_train, _run_train),
    "diagnose": (_configure_diagnose, _run_diagnose),
    "quickstart": (_configure_quickstart, _run_quickstart),
    "bench": (_configure_bench, _run_bench),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="repair-jax", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (module, help_) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if module == __name__:
            _LOCAL[name][0](p)
        else:
            importlib.import_module(module).configure(p)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    module = SUBCOMMANDS[args.command][0]
    try:
        if module == __name__:
            return _LOCAL[args.command][1](args)
        return importlib.import_module(module).run(args)
    except UserError as e:
        sys.stderr.write(f"repair-jax {args.command}: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
