"""Several runs side by side (Sharma n.d., "Average metrics", "class wise Precision,
Recall, Fscore", "Class wise AUROC, DI"): one JSON record, one markdown report, one figure, and each
run's one-vs-rest ROC curves.

``compare_runs`` is the library function behind ``repair-jax compare RUN1 RUN2 ... --out DIR``; the
tables are formatted by :func:`format_comparison` (the library computes, the report module formats).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import jax
import numpy as np

from repair_jax import metrics
from repair_jax.errors import UserError
from repair_jax.io import atomic_dir, write_json, write_text

AVERAGE_COLUMNS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "auroc_macro", "dob",
                   "precision_std")
CLASS_METRICS = ("precision", "recall", "f1", "auroc", "disparate_impact", "disparate_impact_soft")
COMPARISON_JSON, COMPARISON_MD, COMPARISON_PNG = "comparison.json", "comparison.md", "comparison.png"


def evaluate_predictions(name: str, y_true, logits, num_classes: int, curves: bool = True) -> dict:
    """One row of the comparison: the average metrics of :data:`AVERAGE_COLUMNS` (plus weighted
    averages), ``per_class`` lists of :data:`CLASS_METRICS`, the confusion matrix and (``curves``) the
    one-vs-rest ROC curves. y_true (N,) int, logits (N, K)."""
    s = metrics.bias_summary(y_true, logits, num_classes)
    row = {"name": name, "num_examples": int(np.asarray(y_true).shape[0]),
           **{k: v for k, v in s.items() if k not in ("per_class", "confusion_matrix")},
           "per_class": {k: np.asarray(v).tolist() for k, v in s["per_class"].items()},
           "confusion_matrix": np.asarray(s["confusion_matrix"]).tolist()}
    if curves:
        probs = np.asarray(jax.nn.softmax(np.asarray(logits, np.float32)))
        row["roc_curves"] = [{k: v.tolist() for k, v in c.items()}
                             for c in metrics.roc_curves_ovr(y_true, probs, num_classes)]
    return row


def _names(run_paths: Sequence[str | Path]) -> list[str]:
    names = [Path(p).name or str(p) for p in run_paths]
    if len(set(names)) < len(names):  # same directory name under different parents: use the paths
        names = [str(p) for p in run_paths]
    return names


def _run_predictions(path, split: str):
    from repair_jax.runs import load_run
    from repair_jax.train import predict

    run = load_run(path)
    ds = run.dataset()
    if ds.multilabel:
        raise UserError(f"{path}: compare needs single-label runs; {ds.name} is multi-label")
    sp = ds.split(split)
    logits, _ = predict(run.state(), sp.x)
    return ds.class_names, sp.y, logits


def compare_rows(run_paths: Sequence[str | Path], split: str = "test") -> tuple[list[str], list[dict]]:
    """(class names, one :func:`evaluate_predictions` row per run); the runs must share their classes."""
    if len(run_paths) < 1:
        raise UserError("compare needs at least one run directory")
    check_distinct_runs(run_paths)
    class_names, rows = None, []
    for name, path in zip(_names(run_paths), run_paths):
        names, y, logits = _run_predictions(path, split)
        if class_names is not None and tuple(names) != tuple(class_names):
            raise UserError(f"{path} has other classes than {run_paths[0]}; compare runs of one data set")
        class_names = names
        rows.append(evaluate_predictions(name, y, logits, len(names)))
    return list(class_names), rows


def check_distinct_runs(run_paths: Sequence[str | Path]) -> None:
    """A run given twice (the same directory, however spelled) would be two identical rows: refused."""
    seen: dict[Path, str] = {}
    for p in run_paths:
        key = Path(p).resolve()
        if key in seen:
            raise UserError(f"run {p} is given twice (as {seen[key]} too); name each run once")
        seen[key] = str(p)


def compare_runs(run_paths: Sequence[str | Path], out: str | Path, split: str = "test",
                 force: bool = False) -> dict:
    """Writes OUT/comparison.json, comparison.md, comparison.png and roc_<i>_<name>.png; returns the record."""
    from repair_jax.bias.plots import plot_comparison, plot_roc_curves

    class_names, rows = compare_rows(run_paths, split)
    record = {"split": split, "class_names": class_names, "runs": [str(p) for p in run_paths], "rows": rows}
    with atomic_dir(out, overwrite=force) as tmp:
        write_json(tmp / COMPARISON_JSON, record)
        write_text(tmp / COMPARISON_MD, format_comparison(record))
        plot_comparison(rows, AVERAGE_COLUMNS, "recall", class_names, tmp / COMPARISON_PNG)
        for i, row in enumerate(rows):
            safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in row["name"])
            plot_roc_curves(row["roc_curves"], class_names, tmp / f"roc_{i}_{safe}.png",
                            title=f"{row['name']} ({split})", aurocs=row["per_class"]["auroc"])
    return record


def _table(header: Sequence[str], body: Sequence[Sequence]) -> list[str]:
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(fmt(v) for v in r) + " |" for r in body)]


def format_comparison(record: dict) -> str:
    """Markdown: the average-metrics table (one row per run) and one class-wise table per metric."""
    rows, names = record["rows"], record["class_names"]
    lines = [f"# Comparison ({record['split']} split)", "", "## Average metrics", ""]
    lines += _table(["run", *AVERAGE_COLUMNS], [[r["name"], *(float(r[c]) for c in AVERAGE_COLUMNS)]
                                                for r in rows])
    for m in CLASS_METRICS:
        lines += ["", f"## Class-wise {m}", ""]
        lines += _table(["class", *(r["name"] for r in rows)],
                        [[n, *(float(r["per_class"][m][k]) for r in rows)] for k, n in enumerate(names)])
    return "\n".join(lines) + "\n"
