"""Shared pieces of the model-guiding experiment scripts: cached network training and tables."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from repair_jax.data import Dataset, Split
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
