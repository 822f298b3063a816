"""The tables of Zhong et al. 2022 (Weighted Regularization) as configs (see :mod:`repair_jax.experiment`): config types and their runners.

* :class:`TrainAndDiagnose` - train a model into ``OUT/run`` and diagnose it (``OUT/diagnosis``,
  ``OUT/summary.json``): the original models the studies repair.
* :class:`WRStudy` - Weighted Regularization studies of one original model (Zhong et al. 2022,
  Sec. 4.3-4.4): train it (cached in ``OUT/run``) or take an existing run, pick the targets (fixed class
  groups, or diagnosed on the validation split), run :func:`repair_jax.repair.run_study` per target into
  ``OUT/<study>`` and, optionally, w-os's whole trade-off (:mod:`repair_jax.repair.frontier`).
* :class:`Sweep` - several named configs run one after another into ``OUT/<name>`` (Table 1 of Zhong et al. 2022:
  one setting per data set and model).
* :class:`FrontierComparison` - finished all-pairs frontiers side by side (``OUT/compare.md``).

Every runner checks its whole config before any training and returns a summary whose ``report`` is
the Markdown the caller may print; the library prints nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from repair_jax.errors import UserError, require_at_least
from repair_jax.experiment import run_experiment, runner
from repair_jax.io import write_json, write_text
from repair_jax.repair import RepairConfig
from repair_jax.runs import trained_run
from repair_jax.train import TrainConfig

DIAGNOSED = ("pair", "triplet")
# the original model's recipes: the CPU-sized CNN, and the recipe of Zhong et al. 2022, Sec. 4.1 for the ResNets
# (SGD 0.1, Nesterov momentum 0.9, x0.1 at 50% and 75% of the epochs, L2 5e-4, batch 128)
RECIPES = {"cnn": dict(optimizer="adam", lr=3e-3, schedule="cosine", l2=0.0, batch_size=64),
           "sgd_step": dict(optimizer="sgd", lr=0.1, schedule="step", l2=5e-4, batch_size=128)}


def recipe(name: str, **fields) -> TrainConfig:
    """A :class:`TrainConfig` of one of the :data:`RECIPES` with ``fields`` (data set, model, epochs...)."""
    return TrainConfig(**{**RECIPES[name], **fields})


def metric_text(info: dict) -> str:
    return f"test mAP {info['test_map']:.4f}" if "test_map" in info else f"test accuracy {info['test_accuracy']:.4f}"


@contextlib.contextmanager
def data_source(mock_examples: int):
    """TFDS's mock data with ``mock_examples`` examples per split (0: the real data)."""
    if not mock_examples:
        yield
        return
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=mock_examples, policy=tfds.testing.MockPolicy.USE_CODE):
        yield


@dataclasses.dataclass(frozen=True)
class TrainAndDiagnose:
    """Train ``train`` into OUT/run and diagnose it on the test split (OUT/diagnosis, OUT/summary.json)."""

    train: TrainConfig
    top_k: int = 5

    def validate(self) -> None:
        from repair_jax.models import check_model_options

        self.train.validate()
        check_model_options(self.train.model_kwargs)
        require_at_least("top_k", self.top_k, 1)


@runner(TrainAndDiagnose)
def run_train_and_diagnose(config: TrainAndDiagnose, out: Path, *, force: bool, progress: bool) -> dict:
    from repair_jax.diagnosis import diagnose_run
    from repair_jax.diagnosis import format_summary

    config.validate()
    t0 = time.perf_counter()
    info = trained_run(out / "run", config.train, progress, force=force).info
    d = diagnose_run(out / "run", out / "diagnosis", top_k=config.top_k)
    names = d["class_names"]
    summary = {
        "dataset": config.train.dataset, "model": config.train.model, "config": info["config"],
        "test_accuracy": info["test_accuracy"], "train_wall_time_s": info["wall_time"],
        "total_wall_time_s": time.perf_counter() - t0, "devices": info["devices"],
        "top_pairs": [{"classes": [names[i] for i in q["classes"]], "type1conf": q["type1conf"]}
                      for q in d["top_pairs"]],
        "top_triplets": [{"classes": [names[i] for i in q["classes"]], "cd": q["cd"]}
                         for q in d["top_triplets"]],
        "dob": d["dob"], "balanced_accuracy": d["balanced_accuracy"], "macro_f1": d["macro_f1"],
    }
    write_json(out / "summary.json", summary)
    return {**summary, "report": format_summary(d) + f"\n{metric_text(info)} -> {out}"}


# ----------------------------------------------------------------------------- WR studies

@dataclasses.dataclass(frozen=True)
class TargetRule:
    """One study of a :class:`WRStudy`: its output subdirectory and its targets - fixed ``groups`` (all
    pairs (A, B) or all triplets (A, B, C), class indices) or ``diagnosed`` on the validation split:
    ``pair`` the most confused pair, ``triplet`` that pair with the anchor C of largest cd (Zhong et al. 2022, Sec. 4.1
    keeps the confused pair and picks a C with cd > 0; we take the largest)."""

    name: str
    groups: tuple[tuple[int, ...], ...] = ()
    diagnosed: str = ""

    def validate(self) -> None:
        if bool(self.groups) == bool(self.diagnosed):
            raise UserError(f"study {self.name!r}: give either fixed target groups or diagnosed=pair|triplet")
        if self.diagnosed and self.diagnosed not in DIAGNOSED:
            raise UserError(f"study {self.name!r}: diagnosed must be pair or triplet, got {self.diagnosed!r}")


@dataclasses.dataclass(frozen=True)
class WRStudy:
    """Weighted Regularization studies of one original model (Zhong et al. 2022, Sec. 4.3-4.4).

    ``train``: the original model, trained into OUT/run (cached); or ``run``: an existing run directory.
    ``repair``: fine-tuning schedule, rho grid, seeds and methods of every study; its L2 must be the run's
    (fine-tuning keeps the original L2). ``frontier_rhos`` > 0 adds w-os's trade-off on that many rhos
    to every study, ``all_pairs`` the every-pair frontier to the named studies. ``mock_examples`` > 0
    runs on TFDS mock data (smoke runs of the CIFAR settings without the data)."""

    repair: RepairConfig
    studies: tuple[TargetRule, ...]
    train: TrainConfig | None = None
    run: str | None = None
    frontier_rhos: int = 0
    all_pairs: tuple[str, ...] = ()
    mock_examples: int = 0

    @classmethod
    def diagnosed(cls, repair: RepairConfig, *, train: TrainConfig | None = None, run: str | None = None,
                  frontier_rhos: int = 61) -> "WRStudy":
        """Studies ``pair`` and ``triplet`` diagnosed on the validation split, with w-os's trade-off over
        ``frontier_rhos`` rhos on both and on every pair (0: none)."""
        return cls(repair=repair, studies=(TargetRule("pair", diagnosed="pair"), TargetRule("triplet", diagnosed="triplet")),
                   train=train, run=run, frontier_rhos=frontier_rhos, all_pairs=("pair",) if frontier_rhos else ())

    def shrunk(self, train: TrainConfig | None = None, mock_examples: int = 0,
               studies: tuple[str, ...] | None = None) -> "WRStudy":
        """The same studies (or only those named in ``studies``) at smoke size: ``train`` (default: a
        width-4 CNN, 2 epochs on digits; trained into OUT/run) as the original model, one fine-tuning
        epoch, rhos 0.1 and 0.9, 2 seeds, orig / orig-ft / w-os, 5 frontier rhos."""
        kept = tuple(r for r in self.studies if studies is None or r.name in studies)
        train = train or recipe("cnn", dataset="digits", model="cnn", model_kwargs={"width": 4, "dense": 16}, epochs=2)
        methods = tuple(m for m in self.repair.methods if m in ("orig", "orig-ft", "w-os"))
        repair = dataclasses.replace(self.repair, epochs=1, rhos=(0.1, 0.9), seeds=2, methods=methods, l2=train.l2)
        return dataclasses.replace(self, train=train, run=None, repair=repair, mock_examples=mock_examples,
                                   studies=kept, all_pairs=tuple(n for n in self.all_pairs if n in {r.name for r in kept}),
                                   frontier_rhos=5 if self.frontier_rhos else 0)

    def validate(self) -> None:
        """Every option, before any (possibly long) training."""
        from repair_jax.models import check_model_options

        if (self.train is None) == (self.run is None):
            raise UserError("a WR study needs either train (a recipe to train) or run (a trained run), not both")
        if self.train is not None:
            self.train.validate()
            check_model_options(self.train.model_kwargs)
        self.repair.validate()
        if not self.studies:
            raise UserError("a WR study needs at least one study (target rule)")
        for rule in self.studies:
            rule.validate()
        names = [r.name for r in self.studies]
        unknown = [n for n in self.all_pairs if n not in names]
        if len(set(names)) != len(names) or unknown:
            raise UserError(f"study names must be unique and all_pairs must name studies; got {names}, {unknown}")
        if self.frontier_rhos:
            require_at_least("frontier_rhos", self.frontier_rhos, 2)


def diagnosed_targets(run, dataset) -> dict:
    """{"pair": the most confused pair, "triplet": that pair with the anchor C of largest
    |err[A, C] - err[B, C]| (A the class with the larger error to C)} on the validation split."""
    from repair_jax.diagnosis import diagnose
    from repair_jax.repair import Targets

    d = diagnose(run.state(), dataset, split="val", top_k=3)
    a, b = d["top_pairs"][0]["classes"]
    err = np.asarray(d["pairwise_error"])
    c = max((c for c in range(dataset.num_classes) if c not in (a, b)), key=lambda c: abs(err[a, c] - err[b, c]))
    if err[a, c] < err[b, c]:
        a, b = b, a
    return {"pair": Targets(((a, b),)), "triplet": Targets(((a, b, c),))}


def study_header(config: WRStudy, run, dataset) -> str:
    import jax

    c, r = run.info["config"], config.repair
    chosen = ("diagnosed on the validation split" if all(rule.diagnosed for rule in config.studies) else
              "fixed by the config" if not any(rule.diagnosed for rule in config.studies) else
              "fixed by the config or diagnosed on the validation split")
    return (f"Original model: {c['model']} {c['model_kwargs']}, {c['epochs']} epochs on {len(dataset.train)} "
            f"training examples of {dataset.name}, {metric_text(run.info)}. Targets {chosen}. Fine-tuning: {r.epochs} epoch(s), {r.optimizer} lr {r.lr} ({r.schedule}), "
            f"batch {r.batch_size}, L2 {r.l2:g}, {r.seeds} seeds. "
            f"Devices: {', '.join(str(d) for d in jax.devices())}.\n\n")


@runner(WRStudy)
def run_wr_study(config: WRStudy, out: Path, *, force: bool, progress: bool) -> dict:
    from repair_jax.repair import Targets, format_table, run_study

    config.validate()
    with data_source(config.mock_examples):
        run = trained_run(Path(config.run) if config.run else out / "run", config.train, progress)
        if run.config.l2 != config.repair.l2:
            raise UserError(f"repair.l2 {config.repair.l2:g} differs from the run's L2 {run.config.l2:g}: "
                            "fine-tuning keeps the original model's L2")
        ds = run.dataset()
        diagnosed = diagnosed_targets(run, ds) if any(r.diagnosed for r in config.studies) else {}
        summaries, tables = {}, []
        for rule in config.studies:
            targets = diagnosed[rule.diagnosed] if rule.diagnosed else Targets(rule.groups)
            s = run_study(run.classifier(), ds, targets, out / rule.name, config.repair, progress=progress)
            summaries[rule.name] = s
            tables.append(f"### {rule.name}\n\n" + format_table(s))
            if config.frontier_rhos:
                summaries[rule.name + "_frontier"] = study_frontiers(out / rule.name, run, config, rule.name,
                                                                      progress)
    report = study_header(config, run, ds) + "\n".join(tables)
    write_text(out / "tables.md", report)
    return {"studies": summaries, "report": report}


def study_frontiers(study: Path, run, config: WRStudy, name: str, progress: bool) -> dict:
    """w-os's trade-off on the study's target (and on every pair when ``name`` is in ``all_pairs``)."""
    from repair_jax.repair import frontier

    outputs = frontier.StudyOutputs(study, run)
    rhos = frontier.frontier_rhos(config.frontier_rhos)
    res = {"target": frontier.study_frontier(outputs, rhos)}
    if name in config.all_pairs:
        res["all_pairs"] = frontier.all_pairs_frontier(outputs, rhos, progress)
    return res


# ----------------------------------------------------------------------------- sweeps and analyses

@dataclasses.dataclass(frozen=True)
class Sweep:
    """Named configs run one after another, each into OUT/<name> with its own experiment.json."""

    configs: tuple[tuple[str, Any], ...]

    def validate(self) -> None:
        """The names, then every setting, before the first one starts."""
        names = [n for n, _ in self.configs]
        if not names or len(set(names)) != len(names):
            raise UserError(f"a sweep needs unique, non-empty config names, got {names}")
        for _, c in self.configs:
            if hasattr(c, "validate"):
                c.validate()


@runner(Sweep)
def run_sweep(config: Sweep, out: Path, *, force: bool, progress: bool) -> dict:
    config.validate()
    summaries = {name: run_experiment(c, out / name, force=force, progress=progress) for name, c in config.configs}
    report = "\n\n".join(f"## {n}\n\n{s.get('report', '')}" for n, s in summaries.items())
    return {"settings": summaries, "report": report}


@dataclasses.dataclass(frozen=True)
class FrontierComparison:
    """Finished all-pairs frontiers (``(label, study directory)``) side by side: OUT/compare.md
    (:func:`repair_jax.repair.frontier.compare_table`, the union of each study's ``top`` confused pairs)."""

    studies: tuple[tuple[str, str], ...]
    top: int = 5

    def validate(self) -> None:
        require_at_least("top", self.top, 1)
        if not self.studies:
            raise UserError("the comparison needs at least one (label, study) pair")


@runner(FrontierComparison)
def run_frontier_comparison(config: FrontierComparison, out: Path, *, force: bool, progress: bool) -> dict:
    from repair_jax.repair.frontier import compare_table

    config.validate()
    table = compare_table(list(config.studies), config.top)
    write_text(out / "compare.md", table + "\n")
    return {"report": table}
