"""Shared pieces of the model-guiding experiment scripts: cached network training and tables."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from repair_jax.data import Dataset, Split
from repair_jax.errors import UserError
from repair_jax.guiding import BilevelConfig
from repair_jax.io import atomic_dir
from repair_jax.runs import load_run, write_run
from repair_jax.train import TrainConfig, train_model


def train_cached(cfg: TrainConfig, ds: Dataset, path: Path, progress: bool = False):
    """Trains ``cfg`` on ``ds`` (its train split as given) once; later calls load the run directory."""
    path = Path(path)
    if not (path / "run.json").is_file():
        model, state, history, _ = train_model(cfg, ds, progress=progress)
        info = {"config": dataclasses.asdict(cfg), "dataset": ds.name, "class_names": list(ds.class_names),
                "num_classes": ds.num_classes, "multilabel": False, "input_shape": list(ds.input_shape),
                "history": history}
        with atomic_dir(path, overwrite=True) as tmp:
            write_run(tmp, info, {"params": state.params, "batch_stats": state.batch_stats})
    run = load_run(path)
    return run, run.state()


def add_sweep_args(p, datasets, out: str) -> None:
    """The flags of a (dataset, seed) sweep: --smoke, --datasets, --seeds, --cache, --out."""
    p.add_argument("--smoke", action="store_true", help="one seed, few outer steps (seconds)")
    p.add_argument("--datasets", nargs="+", default=list(datasets))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--cache", default="runs/guiding_cache", help="trained networks, reused across runs")
    p.add_argument("--out", default=out)


def run_sweep(a, run_one, describe, skip: bool = False) -> list[dict]:
    """``run_one(dataset, seed, a, cache) -> row`` for every (dataset, seed) of the flags that is
    not yet in ``OUT/rows.jsonl`` (``rows_smoke.jsonl`` with --smoke); each row is appended as soon
    as it is done, so a killed sweep resumes and loses only the run in progress. ``describe(row)``
    is printed per row. Returns the logged rows of the requested datasets and seeds (``skip``: log
    nothing new, only read)."""
    from repair_jax.io import append_jsonl, read_jsonl

    log = Path(a.out) / ("rows_smoke.jsonl" if a.smoke else "rows.jsonl")
    done = {(r["dataset"], r["seed"]) for r in read_jsonl(log)} if log.exists() else set()
    for name in a.datasets:
        for seed in a.seeds:
            if (name, seed) in done or skip:
                continue
            row = run_one(name, seed, a, Path(a.cache))
            print(name, seed, describe(row), flush=True)
            append_jsonl(log, row)
    if not log.exists():
        return []
    return [r for r in read_jsonl(log) if r["dataset"] in a.datasets and r["seed"] in a.seeds]


def add_bilevel_args(p, *, gamma: float = 1.0, fi_weight: float = 0.1, outer_steps: int = 100) -> None:
    """The model-guiding flags every guiding experiment takes (the defaults differ per experiment)."""
    p.add_argument("--audit-size", type=int, default=100)
    p.add_argument("--gamma", type=float, default=gamma, help="weight of the label-perturbation size")
    p.add_argument("--fi-weight", type=float, default=fi_weight, help="weight of the feature-importance term")
    p.add_argument("--l2", type=float, default=1e-2, help="lower-level L2 (strong convexity)")
    p.add_argument("--outer-steps", type=int, default=outer_steps)
    p.add_argument("--outer-lr", type=float, default=0.05)


def bilevel_config(a, **overrides) -> BilevelConfig:
    """The BilevelConfig of the flags of :func:`add_bilevel_args` (``overrides`` win), validated; the
    scripts call it once before they train anything, so a bad flag costs no training."""
    if a.audit_size < 1:
        raise UserError(f"--audit-size must be >= 1, got {a.audit_size}")
    kw = dict(gamma=a.gamma, fi_weight=a.fi_weight, l2=a.l2, outer_steps=a.outer_steps, outer_lr=a.outer_lr)
    cfg = BilevelConfig(**{**kw, **overrides})
    cfg.validate()
    return cfg


def with_train(ds: Dataset, x: np.ndarray, y: np.ndarray) -> Dataset:
    return dataclasses.replace(ds, train=Split(np.asarray(x, np.float32), np.asarray(y, np.int32)))


def markdown_table(header: list[str], rows: list[list]) -> str:
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def mean_std(values) -> str:
    v = np.asarray(values, np.float64)
    return f"{v.mean():.3f} ± {v.std():.3f}" if len(v) > 1 else f"{v.mean():.3f}"


def write_tables(out: Path, smoke: bool, text: str, rows: list, args) -> None:
    """Writes the Markdown tables and summary.json (``_smoke`` variants in smoke mode), prints the tables."""
    from repair_jax.io import write_json, write_text
    suffix = "_smoke" if smoke else ""
    write_text(Path(out) / f"tables{suffix}.md", text)
    write_json(Path(out) / f"summary{suffix}.json", {"rows": rows, "args": vars(args)})
    print(text)
