"""Pradhan et al.'s (2020) Table 1 as an experiment: model x robustness method x imbalance level, over seeds.

Pradhan et al. 2020, Sec. 3 "Result" / Table 1: balanced accuracy and F1 per (model, method)
row and level-of-bias column; here also accuracy, DOB, per-class recall and the fooling rate of a
UAP (Shafahi et al. SGD variant) computed against each trained model. Training follows Pradhan et al.'s (2020)
routine: Adam, cross-entropy, the triangular cyclical learning rate, standard augmentation.

A method is a value, :class:`RobustMethod` (its state initialiser and its training step), looked up by
name in :data:`METHODS`; the sweep only calls its ``train``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np
import optax

from repair_jax.data import Dataset
from repair_jax.errors import UserError
from repair_jax.experiment import SharedStep, nested_train, run_cells, runner
from repair_jax.io import write_json, write_text
from repair_jax.metrics import summarize, top_pairs
from repair_jax.models import create_model, init_variables
from repair_jax.imbalance import parse_imbalance
from repair_jax.robustness.methods import METHODS
from repair_jax.robustness.report import head_tail_recall, plot_recall_vs_class_size, report_markdown, versus_plain
from repair_jax.robustness.schedules import triangular_cyclical_lr
from repair_jax.robustness.uap import eval_logits_fn, fooling_rate, uap_sgd
from repair_jax.train import TrainConfig, create_train_state, predict


@dataclasses.dataclass(frozen=True)
class RobustnessStudy:
    """One data set's Table 1 grid. ``levels`` are imbalance specs (see :mod:`repair_jax.imbalance`). ``train``:
    the data set, epochs, batch size and training-set size of every cell (each seed replaces its ``seed``, which
    also splits the data); the models are the grid's ``models`` (options per model in ``model_kwargs``) and the
    optimizer Pradhan et al.'s Adam on the triangular cyclical rate (``base_lr``, ``max_lr``), so ``train``'s
    model, optimizer and step-size fields stay at their defaults."""

    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(
        dataset="fashion_mnist", epochs=10, batch_size=128))
    models: tuple[str, ...] = ("cnn", "squeezenet")
    model_kwargs: tuple[tuple[str, tuple], ...] = ()  # ((model, ((option, value), ...)), ...)
    methods: tuple[str, ...] = ("plain", "augmix", "ant", "uat", "sat")
    levels: tuple[str, ...] = ("balanced", "linear(10)", "longtail(100)")
    seeds: tuple[int, ...] = (0, 1, 2)
    base_lr: float = 1e-4
    max_lr: float = 3e-3
    max_rotation: float = 15.0
    eps_linf: float = 0.03  # UAT / SAT / UAP ball (Linf)
    eps_noise_l2: float = 2.0  # ANT noise norm
    uap_examples: int = 1000

    def validate(self) -> None:
        """Every option checked before the driver writes anything (:func:`check_study`)."""
        check_study(self)

    @classmethod
    def upgrade_fields(cls, fields: dict) -> dict:
        """A record written before the recipe became ``train`` (:func:`repair_jax.experiment.upgraded_record`)."""
        return nested_train(fields, ("dataset", "epochs", "batch_size", "train_limit"))


def check_study(config: RobustnessStudy) -> None:
    config.train.validate()
    config.train.require_defaults(
        ("model", "model_kwargs", "optimizer", "lr", "momentum", "schedule", "l2"),
        "the models are `models` (options in `model_kwargs`), the optimizer Adam on the triangular cyclical rate "
        "(`base_lr`, `max_lr`)")
    unknown = [m for m in config.methods if m not in METHODS]
    if unknown:
        raise UserError(f"unknown robustness method {unknown[0]!r}; choose from {', '.join(METHODS)}")
    if config.train.batch_size % 8:
        raise UserError(f"batch_size must be a multiple of 8 (the shared adversarial heap), got {config.train.batch_size}")
    for name in ("eps_linf", "eps_noise_l2"):
        if not getattr(config, name) > 0:
            raise UserError(f"{name} (a norm bound) must be > 0, got {getattr(config, name)}")
    for level in config.levels:  # bad specs (a lambda outside (0, 1], a ratio < 1) fail before any output
        parse_imbalance(level)


def run_cell(config: RobustnessStudy, model_name: str, method: str, dataset: Dataset, seed: int) -> dict:
    """Trains one (model, method) on ``dataset`` and returns its test numbers."""
    kwargs = dict(dict(config.model_kwargs).get(model_name, ()))
    model = create_model(model_name, dataset.num_classes, **kwargs)
    variables = init_variables(model, jax.random.PRNGKey(seed), dataset.input_shape)
    steps = max(1, len(dataset.train) // min(config.train.batch_size, len(dataset.train)))
    lr = triangular_cyclical_lr(config.base_lr, config.max_lr, max(1, steps * max(config.train.epochs, 1) // 4))
    state = create_train_state(model, variables, optax.adam(lr))
    state, _ = METHODS[method].train(state, dataset, config, seed)
    logits, _ = predict(state, dataset.test.x)
    s = summarize(dataset.test.y, logits, dataset.num_classes)
    n = min(config.uap_examples, len(dataset.test))
    f = eval_logits_fn(state)
    v = uap_sgd(f, dataset.test.x[:n], dataset.test.y[:n], config.eps_linf, "linf", epochs=2, seed=seed)
    fool = fooling_rate(f, dataset.test.x[:n], v, dataset.test.y[:n], dataset.num_classes)
    return {"accuracy": s["accuracy"], "balanced_accuracy": s["balanced_accuracy"], "macro_f1": s["macro_f1"],
            "dob": s["dob"], "recall": s["per_class"]["recall"], "fooling_rate": fool["fooling_rate"],
            "fooling_rate_per_class": fool["per_class"], "type1conf": s["type1conf"],
            "train_counts": np.bincount(dataset.train.y, minlength=dataset.num_classes)}


METRICS = ("balanced_accuracy", "macro_f1", "accuracy", "dob", "fooling_rate")


def aggregate(records: list[dict]) -> list[dict]:
    """Mean and (population) std over seeds of each metric, per (model, method, level)."""
    cells: dict[tuple, list[dict]] = {}
    for r in records:
        cells.setdefault((r["model"], r["method"], r["level"]), []).append(r)
    rows = []
    for (model, method, level), rs in cells.items():
        row = {"model": model, "method": method, "level": level, "seeds": len(rs)}
        for m in METRICS:
            vals = np.array([r[m] for r in rs], float)
            row[m] = {"mean": float(vals.mean()), "std": float(vals.std())}
        row["recall"] = np.mean([r["recall"] for r in rs], axis=0).tolist()
        if all("type1conf" in r for r in rs):  # records written before 2026-11-30 lack it
            row["top_pairs"] = top_pairs(np.mean([r["type1conf"] for r in rs], axis=0), 3)
        rows.append(row)
    return rows


def confused_pairs_markdown(rows: list[dict]) -> str:
    """The three most confused pairs (type1conf of the test predictions, mean over seeds; Zhong et al. 2022, Sec. 2.2) of
    each (model, method, level) as Markdown, the entry point to ``repair-jax diagnose`` / ``repair``; empty
    when the records predate the field."""
    from repair_jax.tables import markdown_table

    have = [r for r in rows if "top_pairs" in r]
    if not have:
        return ""
    body = [[r["model"], r["method"], r["level"], "; ".join(f"{p['classes'][0]},{p['classes'][1]} ({p['value']:.3f})"
                                                           for p in r["top_pairs"])] for r in have]
    return "\n## Most confused pairs\n\n" + markdown_table(["model", "method", "level", "pairs (type1conf)"], body) + "\n"


def table_markdown(rows: list[dict], levels, metric: str) -> str:
    """Pradhan et al. 2020, Table 1 layout: rows (model, method), columns the levels of bias; ``mean ± std``."""
    head = f"| {metric} | " + " | ".join(levels) + " |\n|---|" + "---|" * len(levels) + "\n"
    by = {(r["model"], r["method"], r["level"]): r[metric] for r in rows}
    keys = sorted({(r["model"], r["method"]) for r in rows})
    lines = [f"| {m} {meth} | " + " | ".join(
        f"{by[(m, meth, lv)]['mean']:.4f} ± {by[(m, meth, lv)]['std']:.4f}" if (m, meth, lv) in by else "-"
        for lv in levels) + " |" for m, meth in keys]
    return head + "\n".join(lines) + "\n"


@runner(RobustnessStudy)
def run_robustness_study(config: RobustnessStudy, out: Path, *, force: bool, progress: bool) -> dict:
    """Runs (resumably) every cell of ``config`` into ``out``: results.jsonl, summary.json, tables.md
    (Pradhan et al.'s (2020) two tables, then the paired tests of :mod:`repair_jax.robustness.report`), significance.json and
    recall_vs_class_size.png."""
    check_study(config)
    def run(cell) -> dict:
        model_name, method, level, seed = cell
        dataset = data((level, seed))
        return {"model": model_name, "method": method, "level": level, "seed": seed, "dataset": dataset.name,
                **run_cell(config, model_name, method, dataset, seed)}

    # cells ordered by (seed, level) so that one loaded data set serves its models and methods
    data = SharedStep(lambda ls: dataclasses.replace(config.train, dataset=f"{config.train.dataset}:{ls[0]}",
                                                     seed=ls[1]).load_dataset())
    cells = [(m, meth, lv, s) for s in config.seeds for lv in config.levels for m in config.models
             for meth in config.methods]
    records = run_cells(out / "results.jsonl", dataclasses.asdict(config), cells, run,
                        key=lambda r: (r["model"], r["method"], r["level"], r["seed"]), force=force,
                        progress=progress, label="robustness cells", config_type=RobustnessStudy)
    rows = aggregate(records)
    write_json(out / "summary.json", {"rows": rows})
    sig, ht = versus_plain(records), head_tail_recall(records)
    pairs = confused_pairs_markdown(rows)
    write_json(out / "significance.json", {"versus_plain": sig, "head_tail_recall": ht})
    write_text(out / "tables.md", "\n".join(table_markdown(rows, config.levels, m) for m in
                                            ("balanced_accuracy", "macro_f1")) + "\n" + report_markdown(sig, ht) + pairs)
    if any(len(set(r["train_counts"])) > 1 for r in records):
        plot_recall_vs_class_size(records, out / "recall_vs_class_size.png")
    return {"cells": len(rows), "runs": len(records)}
