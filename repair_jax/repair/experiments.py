"""The repair papers' tables as configs (see :mod:`repair_jax.experiment`): config types and their runners.

* :class:`TrainAndDiagnose` - train a model into ``OUT/run`` and diagnose it (``OUT/diagnosis``,
  ``OUT/summary.json``): the original models the studies repair.
* :class:`WRStudy` - Weighted Regularization studies of one original model (Zhong et al. 2022,
  Sec. 4.3-4.4): train it (cached in ``OUT/run``) or take an existing run, pick the targets (fixed class
  groups, or diagnosed on the validation split), run :func:`repair_jax.repair.run_study` per target into
  ``OUT/<study>`` and, optionally, w-os's whole trade-off (:mod:`repair_jax.repair.frontier`).
* :class:`Sweep` - several named configs run one after another into ``OUT/<name>`` (Table 1 of Zhong et al. 2022:
  one setting per data set and model).
* :class:`FrontierComparison` - finished all-pairs frontiers side by side (``OUT/compare.md``).
* :class:`IRepairStudy` - tables of Henriksen et al. 2022, Sec. 5 (:class:`IRepairTable1`,
  :class:`IRepairScenario`, :class:`IRepairRQ`) over one trained run (:class:`IRepairProtocol`);
  each table writes ``OUT/<name>.{jsonl,json,md,png}``.

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
from repair_jax.repair import IRepairConfig, RepairConfig
from repair_jax.train import TrainConfig

DIAGNOSED = ("pair", "triplet")
# the original model's recipes: the CPU-sized CNN, and the recipe of Zhong et al. 2022, Sec. 4.1 for the ResNets
# (SGD 0.1, Nesterov momentum 0.9, x0.1 at 50% and 75% of the epochs, L2 5e-4, batch 128)
RECIPES = {"cnn": dict(optimizer="adam", lr=3e-3, schedule="cosine", l2=0.0, batch_size=64),
           "sgd_step": dict(optimizer="sgd", lr=0.1, schedule="step", l2=5e-4, batch_size=128)}


def recipe(name: str, **fields) -> TrainConfig:
    """A :class:`TrainConfig` of one of the :data:`RECIPES` with ``fields`` (data set, model, epochs...)."""
    return TrainConfig(**{**RECIPES[name], **fields})


# ----------------------------------------------------------------------------- runs

def trained_run(run_dir: Path, train: TrainConfig | None, progress: bool, force: bool = False):
    """The run in ``run_dir``, trained there first (with ``train``) when it holds no run.json or ``force``;
    an existing run trained otherwise than ``train`` is refused (one line naming the field)."""
    from repair_jax.io import first_difference, to_jsonable
    from repair_jax.runs import load_run, train_run

    if force or not (run_dir / "run.json").is_file():
        if train is None:
            raise UserError(f"no trained run in {run_dir} (no run.json there)")
        train_run(train, run_dir, force=force, progress=progress)
    run = load_run(run_dir)
    if train is not None:
        # seeds compared resolved (run.json spells out split/init/order seeds that a config leaves to `seed`)
        field = first_difference(to_jsonable(dataclasses.asdict(run.config.resolved())),
                                 to_jsonable(dataclasses.asdict(train.resolved())))
        if field is not None:
            raise UserError(f"the run in {run_dir} was trained otherwise ({field} differs from the config's train)")
    return run


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
    return (f"Original model: {c['model']} {c['model_kwargs']}, {c['epochs']} epochs on {len(dataset.train)} "
            f"training examples of {dataset.name}, {metric_text(run.info)}. Targets diagnosed on the "
            f"validation split. Fine-tuning: {r.epochs} epoch(s), {r.optimizer} lr {r.lr} ({r.schedule}), "
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


# ----------------------------------------------------------------------------- I-REPAIR (Henriksen et al. 2022, Sec. 5)

@dataclasses.dataclass(frozen=True)
class IRepairProtocol:
    """The repair problems of Henriksen et al. 2022, Sec. 5 over one trained run: ``run`` (trained there with ``train`` when
    missing; None: OUT/run), ``seeds`` per problem, the ``classes`` (None: every class with a
    misclassified pool input; at most ``max_classes`` of them), |C| = ``correct_size``, RMSprop ``lr`` and
    the iteration bound ``ub``. ``model_label`` names the model in the tables' headers."""

    train: TrainConfig
    run: str | None = None
    seeds: int = 3
    classes: tuple[int, ...] | None = None
    max_classes: int | None = None
    correct_size: int = 40
    ub: int = 5000
    lr: float = 1e-4
    model_label: str = "FC 2x256"

    def validate(self, gammas=(1.0,)) -> None:
        self.train.validate()
        require_at_least("seeds", self.seeds, 1)
        require_at_least("correct_size", self.correct_size, 1)
        if self.max_classes is not None:
            require_at_least("max_classes", self.max_classes, 1)
        if self.classes is not None and any(c < 0 for c in self.classes):
            raise UserError(f"classes must be class indices >= 0, got {list(self.classes)}")
        for gamma in gammas:
            IRepairConfig(gamma=gamma, ub=self.ub, lr=self.lr).validate()

    @classmethod
    def fashion_mnist_mlp(cls, run: str, **fields) -> "IRepairProtocol":
        """The FC 2x256 network of Henriksen et al. 2022, Sec. 5 on Fashion-MNIST (10 epochs of Adam 1e-3, cosine, batch 128),
        cached in ``run``."""
        train = TrainConfig(dataset="fashion_mnist", model="mlp", epochs=10, batch_size=128, lr=1e-3)
        return cls(train=train, run=run, **fields)

    @classmethod
    def digits_smoke(cls) -> "IRepairProtocol":
        """Smoke size: an MLP (64, 64) trained on digits in OUT/run, 2 seeds, 2 classes, lr 1e-3."""
        train = TrainConfig(dataset="digits", model="mlp", model_kwargs={"hidden": [64, 64]}, epochs=10, lr=3e-3)
        return cls(train=train, seeds=2, max_classes=2, lr=1e-3, model_label="smoke")

    def base_config(self, gamma: float = 1.0) -> IRepairConfig:
        return IRepairConfig(gamma=gamma, ub=self.ub, lr=self.lr)


def single_class_problems(classes, k: int, seed: int) -> list[tuple]:
    """One problem per class: ``([c], tag, group = |R|)``."""
    return [([c], f"{k}/{c}/{seed}", k) for c in classes]


def table_jobs(table, p: IRepairProtocol, classes: list[int]) -> list[dict]:
    """A table's jobs for :func:`repair_jax.repair.protocol.run_jobs`: seeds outermost (a cut-short sweep
    still covers every size), then |R|, then the table's ``problems``, each with the table's ``variants``."""
    jobs = []
    for seed in range(p.seeds):
        for k in table.sizes:
            for cls, tag, group in table.problems(classes, k, seed):
                job = dict(classes=list(cls), repair_size=k, correct_size=p.correct_size, seed=seed, group=group)
                jobs += table.variants(job, tag, p)
    return jobs


@dataclasses.dataclass(frozen=True)
class IRepairTable1:
    """RQ iv / Table 1: single-class repair, retraining vs I-REPAIR (each gamma) vs MM repair (each
    L-inf bound), |R| in ``sizes``; p-values against retraining."""

    sizes: tuple[int, ...] = (1, 2, 4, 8)
    gammas: tuple[float, ...] = (0.01, 0.05, 0.1, 0.5, 1.0)
    mm_epsilons: tuple[float, ...] = (1.0, 5.0)
    name = "table1"
    baseline = "retrain"

    def all_gammas(self):
        return self.gammas

    def problems(self, classes, k: int, seed: int) -> list[tuple]:
        return single_class_problems(classes, k, seed)

    def variants(self, job: dict, tag: str, p: IRepairProtocol) -> list[dict]:
        base = p.base_config()
        return ([{**job, "key": f"retrain/{tag}", "method": "retrain", "config": base}]
                + [{**job, "key": f"irepair{g}/{tag}", "method": "irepair", "config": dataclasses.replace(base, gamma=g)}
                   for g in self.gammas]
                + [{**job, "key": f"mm{e}/{tag}", "method": "mm", "mm_epsilon": e, "config": base}
                   for e in self.mm_epsilons])

    def header(self, p: IRepairProtocol, ds_name: str, classes, accuracy_before: float) -> str:
        return (f"Table 1 analogue on {ds_name} ({p.model_label}): single-class repair, classes {classes}, "
                f"{p.seeds} seeds, |C| = {p.correct_size}, RMSprop lr {p.lr}, ub {p.ub}; accuracy before repair "
                f"{accuracy_before:.4f}; drop in percentage points on the test split.")

    def plotted(self) -> dict:
        methods = {"retrain": lambda r: r["method"] == "retrain"}
        methods.update({f"I-REPAIR gamma={g:g}": (lambda r, g=g: r["method"] == "irepair" and r["gamma"] == g)
                        for g in self.gammas})
        methods.update({f"MM eps={e:g}": (lambda r, e=e: r["method"] == "mm" and r["mm_epsilon"] == e)
                        for e in self.mm_epsilons})
        return methods

    def title(self, ds_name: str, seeds: int) -> str:
        return f"{ds_name}: single-class repair ({seeds} seeds)"


@dataclasses.dataclass(frozen=True)
class IRepairScenario:
    """RQ i: I-REPAIR (``gamma``) against retraining. Scenario 1 (Fig. 1a): single-class repair sets of
    K in ``sizes`` for every class. Scenario 2 (Fig. 1d): repair sets over ``num_classes`` classes with K
    per class (the classes of a problem drawn at random per seed)."""

    scenario: int = 1
    sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    num_classes: tuple[int, ...] = tuple(range(1, 11))
    gamma: float = 1.0
    baseline = "retrain"

    @property
    def name(self) -> str:
        return f"scenario{self.scenario}"

    def all_gammas(self):
        if self.scenario not in (1, 2):
            raise UserError(f"scenario must be 1 or 2, got {self.scenario}")
        return (self.gamma,)

    def problems(self, classes: list[int], k: int, seed: int) -> list[tuple]:
        if self.scenario == 1:
            return single_class_problems(classes, k, seed)
        rng = np.random.default_rng(1000 + seed)
        drawn = [sorted(rng.choice(classes, size=min(m, len(classes)), replace=False).tolist())
                 for m in self.num_classes]
        return [(cls, f"{k}/m{m}/{seed}", f"{len(cls)} classes x {k}") for cls, m in zip(drawn, self.num_classes)]

    def variants(self, job: dict, tag: str, p: IRepairProtocol) -> list[dict]:
        cfg = p.base_config(self.gamma)
        return [{**job, "key": f"irepair/{tag}", "method": "irepair", "config": cfg},
                {**job, "key": f"retrain/{tag}", "method": "retrain", "config": dataclasses.replace(cfg, gamma=1.0)}]

    def header(self, p: IRepairProtocol, ds_name: str, classes, accuracy_before: float) -> str:
        return (f"Scenario {self.scenario} on {ds_name}: classes {classes}, {p.seeds} seeds, K {list(self.sizes)}, "
                f"|C| = {p.correct_size}, gamma {self.gamma}, RMSprop lr {p.lr}, ub {p.ub}; accuracy before "
                f"{accuracy_before:.4f}; drop in percentage points.")

    def plotted(self) -> dict:
        return {"retrain": lambda r: r["method"] == "retrain",
                f"I-REPAIR gamma={self.gamma:g}": lambda r: r["method"] == "irepair"}

    def title(self, ds_name: str, seeds: int) -> str:
        return f"{ds_name}: scenario {self.scenario} ({seeds} seeds)"


@dataclasses.dataclass(frozen=True)
class IRepairRQ:
    """RQ ii / iii. ``locking``: influence locking against random locking with each probability in
    ``probabilities`` (Fig. 1b); ``loss``: the correct-set influence loss, output magnitude against
    cross-entropy; ``margin``: the margin stopping rule (Fig. 1c), I-REPAIR and retraining per margin."""

    part: str = "locking"
    sizes: tuple[int, ...] = (8,)
    gamma: float = 1.0
    probabilities: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
    margins: tuple[float, ...] = (0.0, 0.1, 0.3, 0.5)

    @property
    def name(self) -> str:
        return f"rq_{self.part}"

    @property
    def baseline(self) -> str | None:
        return {"locking": "irepair", "loss": None, "margin": "retrain"}[self.part]

    def all_gammas(self):
        if self.part not in ("locking", "loss", "margin"):
            raise UserError(f"part must be locking, loss or margin, got {self.part!r}")
        return (self.gamma,)

    def problems(self, classes, k: int, seed: int) -> list[tuple]:
        return single_class_problems(classes, k, seed)

    def variants(self, job: dict, tag: str, p: IRepairProtocol) -> list[dict]:
        k, cfg = job["repair_size"], p.base_config(self.gamma)
        if self.part == "locking":
            return [{**job, "group": k, "key": f"irepair/{tag}", "method": "irepair", "config": cfg}] + [
                {**job, "group": k, "key": f"random{pr}/{tag}", "method": "random", "lock_p": pr, "config": cfg}
                for pr in self.probabilities]
        if self.part == "loss":
            return [{**job, "group": f"{k}, C loss {loss}", "key": f"{loss}/{tag}", "method": "irepair",
                     "config": dataclasses.replace(cfg, correct_loss=loss)} for loss in ("magnitude", "cross_entropy")]
        return [{**job, "group": f"{k}, margin {m:g}", "key": f"{method}{m}/{tag}", "method": method,
                 "config": dataclasses.replace(cfg, margin=m)} for m in self.margins for method in ("irepair", "retrain")]

    def header(self, p: IRepairProtocol, ds_name: str, classes, accuracy_before: float) -> str:
        return (f"RQ {'iii' if self.part == 'margin' else 'ii'} ({self.part}) on {ds_name}: classes {classes}, "
                f"{p.seeds} seeds, |R| {list(self.sizes)}, |C| = {p.correct_size}, gamma {self.gamma}, RMSprop "
                f"lr {p.lr}, ub {p.ub}; accuracy before {accuracy_before:.4f}; drop in percentage points.")

    def plotted(self) -> dict:
        return {}

    def title(self, ds_name: str, seeds: int) -> str:
        return f"{ds_name}: RQ {self.part} ({seeds} seeds)"

    def extra_table(self, runs: list[dict]) -> str:
        """``loss``: the t-test of the two correct-set losses at each |R|."""
        if self.part != "loss":
            return ""
        from repair_jax.repair.protocol import t_test_p

        def drops(k, loss):
            return [100 * r["accuracy_drop"] for r in runs if r["requested_size"] == k and r["correct_loss"] == loss]
        return "\n\n" + "\n".join(f"|R| = {k}: p (magnitude vs cross-entropy) = "
                                  f"{t_test_p(drops(k, 'magnitude'), drops(k, 'cross_entropy')):.3g}"
                                  for k in self.sizes)


@dataclasses.dataclass(frozen=True)
class IRepairStudy:
    """Tables of Henriksen et al. 2022, Sec. 5 (:class:`IRepairTable1`, :class:`IRepairScenario`, :class:`IRepairRQ`) over
    one :class:`IRepairProtocol`; each writes OUT/<name>.jsonl (one record per run, resumable),
    <name>.json, <name>.md and, where it plots, <name>.png."""

    protocol: IRepairProtocol
    tables: tuple[Any, ...]

    def validate(self) -> None:
        names = [t.name for t in self.tables] if self.tables else []
        if not names or len(set(names)) != len(names):
            raise UserError(f"an I-REPAIR study needs tables with distinct names, got {names}")
        for t in self.tables:
            require_at_least(f"{t.name} sizes", min(t.sizes, default=0), 1)
        self.protocol.validate([g for t in self.tables for g in t.all_gammas()])


def repair_classes(p: IRepairProtocol, ctx) -> tuple[list[int], list[int]]:
    """(the requested classes that have a misclassified pool input, at most ``max_classes``; the skipped ones)."""
    k = ctx.dataset.num_classes
    wanted = list(p.classes) if p.classes is not None else list(range(k))
    if any(c >= k for c in wanted):
        raise UserError(f"classes: {ctx.dataset.name} has classes 0..{k - 1}, got {wanted}")
    y = ctx.dataset.pool.y
    wrong = np.bincount(y[ctx.pool_predictions != y], minlength=k)
    kept = [c for c in wanted if wrong[c] > 0][:p.max_classes]
    return kept, sorted(set(wanted) - set(kept))


def plot_drops(runs: list[dict], methods: dict, path: Path, title: str) -> None:
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
    plot_accuracy_drop(groups, path, title=title)


@runner(IRepairStudy)
def run_irepair_study(config: IRepairStudy, out: Path, *, force: bool, progress: bool) -> dict:
    from repair_jax.repair.protocol import RepairContext, run_jobs, summary_table

    config.validate()
    p = config.protocol
    ctx = RepairContext.from_run(trained_run(Path(p.run) if p.run else out / "run", p.train, progress))
    classes, skipped = repair_classes(p, ctx)
    name_ds, reports = ctx.dataset.name, {}
    for t in config.tables:
        runs = run_jobs(ctx, table_jobs(t, p, classes), out / f"{t.name}.jsonl", progress=progress)
        table = summary_table(runs, baseline=t.baseline) + getattr(t, "extra_table", lambda _: "")(runs)
        header = t.header(p, name_ds, classes, ctx.accuracy_before)
        if t.plotted():
            plot_drops(runs, t.plotted(), out / f"{t.name}.png", t.title(name_ds, p.seeds))
        write_json(out / f"{t.name}.json", {"records": f"{t.name}.jsonl", "runs": len(runs), "table": table,
                                            "classes": classes, "skipped_classes": skipped})
        write_text(out / f"{t.name}.md", f"{header}\n\n{table}\n")
        reports[t.name] = f"{header}\n\n{table}"
    return {"classes": classes, "skipped_classes": skipped, "report": "\n\n".join(reports.values())}
