"""Thesis Table 4.1 analogue as a config: do attributions find a spurious signal? (Adebayo 2022, Sec. 4.2.1-4.2.2).

Per seed: a normal model on clean data and, per signal (Tag, Stripe, texture), a spurious model trained
on data whose spurious-aligned class carries the signal (:func:`repair_jax.explain.spurious.contaminate`).
Spurious scores (Def. 4.2.1) of both are recorded with the thesis's thresholds (spurious > 0.85;
normal < 0.1 for every class and signal) whatever they are. On ``explain_examples`` test inputs
(x_norm) and their contaminated copies (x_spu), each method's K-SSD, CCM, FAM and FAM-GT (SSIM, mean
and SEM over the inputs) explain each model's predicted class. One record per (seed, signal) in
``results.jsonl`` (resumable); ``table.json`` averages the seeds.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from repair_jax.data import Split
from repair_jax.errors import UserError
from repair_jax.experiment import SharedStep, nested_train, run_cells, runner
from repair_jax.explain.model_fn import eval_apply_fn
from repair_jax.explain.pipeline import method_options
from repair_jax.explain.registry import attribute, parse_methods
from repair_jax.explain.spurious import (
    SIGNALS, add_signal, ccm, contaminate, fam, fam_gt, k_ssd, label_independent_signals, parse_signal, spurious_score,
)
from repair_jax.io import write_json, write_text
from repair_jax.studies.preconditions import (  # Adebayo 2022, Sec. 4.2.1
    NORMAL_THRESHOLD, SPURIOUS_THRESHOLD, split_by_definitions,
)
from repair_jax.train import TrainConfig

MEASURES = ("k_ssd", "ccm", "fam", "fam_gt")


TRAIN_FIELDS = ("dataset", "model", "model_kwargs", "epochs", "lr", "train_limit")  # flat before issue 28


@dataclasses.dataclass(frozen=True)
class SpuriousAttributionStudy:
    """``train``: the recipe of every model (normal and spurious) and its data set (split with its split seed,
    0 when unset); each seed of ``seeds`` replaces its ``seed``. ``signals``: names as
    :func:`repair_jax.explain.spurious.parse_signal` reads them (``"tag(6)"``, ``"texture(0.12)"``).

    ``normal_signal_fraction``: None trains the normal model on clean data (Adebayo 2022, Sec. 4.2.1). In (0, 1],
    each signal is pasted on its own random fraction of the normal model's training images, whatever their
    class (:func:`repair_jax.explain.spurious.label_independent_signals`): a model that has seen the signals
    and learnt that they carry no label. Our departure, for data where a clean model reads a signal as a class
    (on Fashion-MNIST a clean model reads the bright stripes as a bag: spurious score 0.81); the normal
    condition (score < 0.1 for every class and signal) is checked either way.

    ``spurious_models_only``: None puts every (seed, signal) pair in the tables, whatever its scores. True
    applies the thesis's definitions (Sec. 4.2.1: a model is a *spurious model* only above 0.85, *normal* only
    below 0.1) before averaging: a pair whose spurious or normal model fails its definition is left out of the
    tables and listed as left out (:func:`table_records`); every record stays in the log."""
    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(
        dataset="fashion_mnist", model="cnn", model_kwargs={"width": 16}, epochs=5, lr=1e-3))
    signals: tuple = SIGNALS
    aligned_class: int = 0
    methods: tuple = ("grad", "smoothgrad", "ig", "guided_backprop")
    explain_examples: int = 190  # Table 4.4's 190 examples
    steps: int = 32
    samples: int = 16
    seeds: tuple = (0, 1, 2)
    normal_signal_fraction: float | None = None
    spurious_models_only: bool | None = None

    def validate(self) -> None:
        self.train.validate()
        parse_methods(",".join(self.methods))
        self.validate_signals()

    def validate_signals(self) -> None:
        """The signal names and ``normal_signal_fraction`` (the part every Ch. 4 spurious study shares)."""
        for signal in self.signals:
            parse_signal(signal)
        if self.normal_signal_fraction is not None and not 0 < self.normal_signal_fraction <= 1:
            raise UserError(f"normal_signal_fraction must be None (a clean normal model) or in (0, 1], got "
                            f"{self.normal_signal_fraction}")

    @classmethod
    def upgrade_fields(cls, fields: dict) -> dict:
        """A record written before the recipe became ``train`` (:func:`repair_jax.experiment.upgraded_record`)."""
        return nested_train(fields, TRAIN_FIELDS)


class StudyModel(NamedTuple):
    """A trained model of the study: ``apply_fn(params, x) -> logits`` (eval mode), its params,
    ``predict(x) -> (N,)`` class indices and ``features(x) -> (N, D)`` penultimate features."""
    apply_fn: Callable
    params: Any
    predict: Callable
    features: Callable | None = None


class SpuriousCondition(NamedTuple):
    """One signal of one seed (Adebayo 2022, Sec. 4.2.1): the spurious model, its spurious score (Def. 4.2.1),
    the explained inputs x_norm, x_spu (N, H, W, C) and ground-truth masks (N, H, W), the explanations
    ``{"spu_spu", "spu_norm", "norm_norm", "norm_spu"} -> method -> (N, H, W, C)`` (model on inputs;
    each explains the model's predicted class) and ``method -> measure -> (mean, SEM)``."""
    spurious: StudyModel
    spurious_score: float
    x_norm: np.ndarray
    x_spu: np.ndarray
    masks: np.ndarray
    explanations: dict
    measures: dict


def study_dataset(train: TrainConfig):
    """The data set of a Ch. 4 study's recipe ``train``: split with its split seed, 0 when unset (one split,
    whatever the training seed)."""
    return dataclasses.replace(train, split_seed=0 if train.split_seed is None else train.split_seed).load_dataset()


def train_study_model(train: TrainConfig, dataset) -> StudyModel:
    """Trains the recipe ``train`` (its model, seed, epochs, ...) on ``dataset`` (normal, or contaminated by
    the caller)."""
    from repair_jax.train import predict, predict_labels, train_model

    _, state, _, _ = train_model(train, dataset=dataset, progress=False)
    apply_fn, params = eval_apply_fn(state)
    return StudyModel(apply_fn, params, lambda x: predict_labels(state, x), lambda x: predict(state, x)[1])


def train_spurious_model(config: SpuriousAttributionStudy, dataset, signal: str, seed: int):
    """The spurious model for ``signal`` (aligned class ``config.aligned_class``, Adebayo 2022, Sec. 4.2.1):
    ``(model, its contaminated data set, its spurious score on the test split)``."""
    xc, _ = contaminate(signal, dataset.train.x, dataset.train.y, config.aligned_class)
    contaminated = dataclasses.replace(dataset, train=Split(xc, dataset.train.y))
    spurious = train_study_model(dataclasses.replace(config.train, seed=seed), contaminated)
    return spurious, contaminated, spurious_score(spurious.predict, dataset.test.x, signal, config.aligned_class)


def _explain(config, model: StudyModel, x, references) -> dict:
    return {m: np.asarray(attribute(m, model.apply_fn, model.params, x, **method_options(
        m, references, None, config.steps, config.samples))) for m in config.methods}


def normal_model_scores(predict, x, signals, num_classes: int) -> dict:
    """Largest spurious score of a (normal) model over the classes, per signal."""
    return {s: max(spurious_score(predict, x, s, j) for j in range(num_classes)) for s in signals}


def spurious_condition(config: SpuriousAttributionStudy, dataset, normal: StudyModel, signal: str,
                       seed: int) -> SpuriousCondition:
    """Trains the spurious model for ``signal`` (aligned class ``config.aligned_class``), scores it on
    the test split and explains the first ``config.explain_examples`` test inputs with both models:
    K-SSD, CCM, FAM, FAM-GT per method (Adebayo 2022, Sec. 4.2.1)."""
    spurious, _, score = train_spurious_model(config, dataset, signal, seed)
    x_norm = dataset.test.x[:config.explain_examples]
    x_spu, masks = add_signal(signal, x_norm)
    refs = dataset.train.x
    e = {"spu_spu": _explain(config, spurious, x_spu, refs), "spu_norm": _explain(config, spurious, x_norm, refs),
         "norm_norm": _explain(config, normal, x_norm, refs), "norm_spu": _explain(config, normal, x_spu, refs)}
    measures = {m: {"k_ssd": k_ssd(e["spu_spu"][m], masks), "ccm": ccm(e["spu_norm"][m], e["norm_norm"][m]),
                    "fam": fam(e["norm_spu"][m], e["spu_spu"][m]), "fam_gt": fam_gt(e["norm_spu"][m], masks)}
                for m in config.methods}
    return SpuriousCondition(spurious, score, x_norm, x_spu, masks, e, measures)


def condition_fields(seed: int, signal: str, score: float, normal_scores: dict) -> dict:
    """The model-condition part of a record (Adebayo 2022, Sec. 4.2.1 thresholds), the same in every Ch. 4 study."""
    return {"seed": seed, "signal": signal, "spurious_score": score, "spurious_ok": score > SPURIOUS_THRESHOLD,
            "normal_max_score": max(normal_scores.values()), "normal_ok": max(normal_scores.values()) < NORMAL_THRESHOLD}


def _signal_record(config, seed, signal, ds, normal, normal_scores) -> dict:
    cond = spurious_condition(config, ds, normal, signal, seed)
    return {**condition_fields(seed, signal, cond.spurious_score, normal_scores), "measures": cond.measures}


def normal_training_set(config: SpuriousAttributionStudy, dataset, seed: int):
    """The normal model's data set: ``dataset`` itself, or with the signals independent of the label when
    ``config.normal_signal_fraction`` is set (see :class:`SpuriousAttributionStudy`)."""
    if config.normal_signal_fraction is None:
        return dataset
    x = label_independent_signals(config.signals, dataset.train.x, config.normal_signal_fraction, seed)
    return dataclasses.replace(dataset, train=Split(x, dataset.train.y))


def run_spurious_conditions(config: SpuriousAttributionStudy, ds, log_path: Path, header: dict, record: Callable,
                            name: str, *, force: bool, progress: bool, config_type: type) -> list[dict]:
    """The loop every Ch. 4 spurious study shares (:func:`repair_jax.experiment.run_cells` over (seed, signal)):
    per seed of ``config`` the normal model and its largest spurious scores (trained once per seed), then per
    signal ``record(seed, signal, normal, normal_scores) -> dict``. ``header``: the fields of the study's
    config, of type ``config_type``. Returns the records in config order."""
    def normal_of(seed: int):
        normal = train_study_model(dataclasses.replace(config.train, seed=seed), normal_training_set(config, ds, seed))
        return normal, normal_model_scores(normal.predict, ds.test.x, config.signals, ds.num_classes)

    normals = SharedStep(normal_of)
    return run_cells(log_path, header, [(seed, s) for seed in config.seeds for s in config.signals],
                     lambda cell: record(cell[0], cell[1], *normals(cell[0])), key=lambda r: (r["seed"], r["signal"]),
                     force=force, progress=progress, label=name, note=lambda cell: f"seed {cell[0]} {cell[1]}",
                     config_type=config_type)


def table_records(config: SpuriousAttributionStudy, records: list[dict]) -> tuple[list[dict], list[dict]]:
    """``(records in the tables, records left out)``: with ``config.spurious_models_only``, the pairs whose models
    meet the thesis's definitions (``spurious_ok`` and ``normal_ok``, Adebayo 2022, Sec. 4.2.1) and the others;
    otherwise every record and none."""
    if not config.spurious_models_only:
        return list(records), []
    return split_by_definitions(records)


def left_out_line(left_out: list[dict]) -> list[str]:
    """A markdown line naming the pairs left out of the tables (none: no line)."""
    if not left_out:
        return []
    pairs = ", ".join(f"seed {r['seed']} {r['signal']} (spurious {r['spurious_score']:.3f}, normal "
                      f"{r['normal_max_score']:.3f})" for r in left_out)
    return ["", f"Left out of the tables (their models are not a spurious / normal model by Adebayo 2022, "
                f"Sec. 4.2.1): {pairs}."]


def summarize(records: list[dict]) -> dict:
    """Table 4.1 layout: signal -> method -> measure -> mean over seeds of the per-seed means (and SEMs)."""
    table: dict = {}
    for rec in records:
        for method, values in rec["measures"].items():
            cell = table.setdefault(rec["signal"], {}).setdefault(method, {})
            for name in MEASURES:
                cell.setdefault(name, []).append(values[name])
    return {s: {m: {n: {"mean": float(np.mean([v[0] for v in vals])), "sem": float(np.mean([v[1] for v in vals]))}
                    for n, vals in cells.items()} for m, cells in methods.items()} for s, methods in table.items()}


@runner(SpuriousAttributionStudy)
def run_spurious_attribution_study(config: SpuriousAttributionStudy, out: Path, *, force: bool,
                                   progress: bool) -> dict:
    config.validate()
    ds = study_dataset(config.train)
    records = run_spurious_conditions(config, ds, Path(out) / "results.jsonl", dataclasses.asdict(config),
                                      lambda seed, s, normal, scores: _signal_record(config, seed, s, ds, normal, scores),
                                      "spurious study", force=force, progress=progress,
                                      config_type=SpuriousAttributionStudy)
    kept, left_out = table_records(config, records)
    summary = {"table": summarize(kept), "records": len(records),
               "spurious_ok": all(r["spurious_ok"] for r in records),
               "normal_ok": all(r["normal_ok"] for r in records)}
    if config.spurious_models_only:
        summary["left_out"] = [[r["seed"], r["signal"]] for r in left_out]
    write_json(Path(out) / "table.json", summary)
    write_text(Path(out) / "table.md", table_markdown(summary["table"], records, left_out))
    return summary


MEASURE_NAMES = {"k_ssd": "K-SSD", "ccm": "CCM", "fam": "FAM", "fam_gt": "FAM-GT"}


def table_markdown(table: dict, records: list[dict], left_out: list[dict] = ()) -> str:
    """Table 4.1's layout from :func:`summarize`'s ``table``: the model conditions per seed and signal (and the
    pairs ``left_out``, :func:`table_records`), then per signal a row per measure and a column per method, mean
    (SEM) over the seeds in the table."""
    lines = ["# Table 4.1 analogue: SSIM of explanations, mean (SEM) over the seeds", "",
             "| seed | signal | spurious score (> 0.85?) | normal model's largest score (< 0.1?) |", "|---|---|---|---|"]
    lines += [f"| {r['seed']} | {r['signal']} | {r['spurious_score']:.3f} ({'yes' if r['spurious_ok'] else 'no'}) | "
              f"{r['normal_max_score']:.3f} ({'yes' if r['normal_ok'] else 'no'}) |" for r in records]
    lines += left_out_line(list(left_out))
    for signal, methods in table.items():
        lines += ["", f"**{signal}**", "", "| measure | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
        lines += [f"| {name} | " + " | ".join(f"{methods[m][k]['mean']:.3f} ({methods[m][k]['sem']:.3f})"
                                              for m in methods) + " |" for k, name in MEASURE_NAMES.items()]
    return "\n".join(lines) + "\n"
