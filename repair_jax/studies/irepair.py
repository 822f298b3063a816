"""The tables of Henriksen et al. 2022, Sec. 5 as configs (see :mod:`repair_jax.experiment`).

:class:`IRepairStudy` - :class:`IRepairTable1`, :class:`IRepairScenario` and :class:`IRepairRQ` over one trained run
(:class:`IRepairProtocol`); each table writes ``OUT/<name>.{jsonl,json,md,png}``. The runner checks its whole config
before any training and returns a summary whose ``report`` is the Markdown the caller may print.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from repair_jax.errors import UserError, require_at_least
from repair_jax.experiment import runner
from repair_jax.io import write_json, write_text
from repair_jax.repair import IRepairConfig
from repair_jax.runs import trained_run
from repair_jax.train import TrainConfig


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
        runs = run_jobs(ctx, table_jobs(t, p, classes), out / f"{t.name}.jsonl", progress=progress, force=force)
        table = summary_table(runs, baseline=t.baseline) + getattr(t, "extra_table", lambda _: "")(runs)
        header = t.header(p, name_ds, classes, ctx.accuracy_before)
        if t.plotted():
            plot_drops(runs, t.plotted(), out / f"{t.name}.png", t.title(name_ds, p.seeds))
        write_json(out / f"{t.name}.json", {"records": f"{t.name}.jsonl", "runs": len(runs), "table": table,
                                            "classes": classes, "skipped_classes": skipped})
        write_text(out / f"{t.name}.md", f"{header}\n\n{table}\n")
        reports[t.name] = f"{header}\n\n{table}"
    return {"classes": classes, "skipped_classes": skipped, "report": "\n\n".join(reports.values())}
