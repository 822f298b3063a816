"""Model-guiding experiments as configs (Adebayo 2022, Ch. 5): one frozen dataclass per
paper table and its runner (registered with :func:`repair_jax.experiment.runner`).

- :class:`NoisyLabelsStudy` (Tables 5.1-5.2 analogues, Sec. 5.3 "Detecting & Fixing Noisy Training
  Labels"): flip ``noise`` of the training labels (synthetic noise on real digits / a Fashion-MNIST
  subset), train an MLP on them, score every training point by model guiding, influence functions
  (explicit Hessian on the carved model), DUTI (the bilevel on a linear model of the standardised
  embeddings, no concept term) and the training loss. Detection AUROC over all training points
  (flipped = positive); fix AUROC over the pairs (flipped point i, class k != noisy label), positive
  when k is the true label.
- :class:`SpuriousStudy` (Tables 5.3-5.4 analogues, "Detecting & Fixing Spurious Correlation"): a
  synthetic tag patch on ``tag_fraction`` of one class of the real training images and on half of
  the test / audit images; AUROC of finding the tagged points (model guiding vs Errors-ERM) and the
  worst-group test accuracy over (class, tag) groups (guided model vs ERM vs group DRO vs SSA: group
  DRO on pseudo-groups estimated from the audit set's tags, Nam et al. 2022).
- :class:`CreditStudy` (Sec. 5.2, the lending example, regression path) on the named *synthetic*
  credit-limit table of :func:`repair_jax.guiding.synthetic.credit_table`.
- :class:`FullGuidingRun`: Algorithm 1 on every training image of a trained run (all 60,000
  Fashion-MNIST images through the width-32 CNN; meant for a GPU), with wall times.

The two network sweeps log one row per (data set, seed) in ``OUT/rows.jsonl``
(:class:`repair_jax.io.ResumableJsonl` bound to the whole config: a resumed sweep never reports
another configuration's numbers) and write ``tables.md`` and ``summary.json``; trained networks are
cached under ``network_cache`` (default ``OUT/networks``) keyed by a digest of their training config
and data.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from repair_jax.data import Dataset, Split, flip_labels, load_dataset
from repair_jax.errors import UserError, require_at_least
from repair_jax.experiment import config_record, run_cells, runner
from repair_jax.guiding.algorithm import GuidingConfig, model_guiding
from repair_jax.guiding.bilevel import BilevelConfig, bilevel_update
from repair_jax.guiding.synthetic import audit_from_split, concept_library
from repair_jax.io import write_json, write_text
from repair_jax.metrics import binary_auroc
from repair_jax.progress import track
from repair_jax.tables import markdown_table
from repair_jax.train import TrainConfig

# ----------------------------------------------------------------------------- configs


@dataclasses.dataclass(frozen=True)
class GuidingData:
    """One data set of a network sweep: the training subset, the MLP trained on it (Adam, batch 64)
    and, for the spurious study, the class whose images carry the tag."""

    name: str
    train_limit: int | None
    epochs: int
    hidden: tuple[int, ...]
    lr: float = 1e-3
    batch_size: int = 64
    spurious_class: str = ""

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(dataset=self.name, model="mlp", model_kwargs={"hidden": list(self.hidden)},
                           epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, seed=seed,
                           train_limit=self.train_limit)


def _check_sweep(datasets, seeds, audit_size: int, bilevel: BilevelConfig) -> None:
    if not datasets or not seeds:
        raise UserError("a guiding sweep needs at least one data set and one seed")
    if len(set(seeds)) != len(seeds) or len({d.name for d in datasets}) != len(datasets):
        raise UserError("duplicated seed or data set in a guiding sweep")
    require_at_least("audit_size", audit_size, 1)
    bilevel.validate()
    for d in datasets:
        d.train_config(0).validate()


def smoke_sweep(config, train_limit: int = 300, epochs: int = 3, audit_size: int = 60, outer_steps: int = 5):
    """A network sweep at smoke size: its first seed and first data set, ``train_limit`` training points
    and ``epochs``, a smaller audit set and few outer steps (seconds per row; every data set runs the same
    code, and each one's compiled steps cost most of a smoke row on a CPU)."""
    first = config.datasets[0]
    return dataclasses.replace(
        config, datasets=(dataclasses.replace(first, train_limit=train_limit, epochs=epochs),),
        seeds=config.seeds[:1], audit_size=audit_size,
        bilevel=dataclasses.replace(config.bilevel, outer_steps=outer_steps))


def _check_fraction(name: str, value: float) -> None:
    if not 0 < value < 1:
        raise UserError(f"{name} must lie in (0, 1), got {value}")


@dataclasses.dataclass(frozen=True)
class NoisyLabelsStudy:
    """Tables 5.1-5.2 analogues (Adebayo 2022, Sec. 5.3): see the module docstring."""

    datasets: tuple[GuidingData, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    noise: float = 0.2
    audit_size: int = 100
    bilevel: BilevelConfig = BilevelConfig(gamma=1.0, fi_weight=0.1, outer_steps=100)
    network_cache: str = ""

    def __post_init__(self):
        _check_sweep(self.datasets, self.seeds, self.audit_size, self.bilevel)
        _check_fraction("noise", self.noise)


@dataclasses.dataclass(frozen=True)
class SpuriousStudy:
    """Tables 5.3-5.4 analogues (Adebayo 2022, Sec. 5.3): see the module docstring."""

    datasets: tuple[GuidingData, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    tag_fraction: float = 0.95
    audit_size: int = 100
    bilevel: BilevelConfig = BilevelConfig(gamma=1.0, fi_weight=1.0, outer_steps=100)
    budget: int = 50
    dro_eta: float = 5.0
    network_cache: str = ""

    def __post_init__(self):
        _check_sweep(self.datasets, self.seeds, self.audit_size, self.bilevel)
        _check_fraction("tag_fraction", self.tag_fraction)
        if any(not d.spurious_class for d in self.datasets):
            raise UserError("every data set of the spurious study names its spurious_class")
        GuidingConfig(bilevel=self.bilevel, budget=self.budget).validate()
        if not self.dro_eta > 0:
            raise UserError(f"dro_eta must be positive, got {self.dro_eta}")


@dataclasses.dataclass(frozen=True)
class CreditStudy:
    """The regression path on the synthetic credit-limit table (Adebayo 2022, Sec. 5.2): see the module docstring."""

    seeds: tuple[int, ...] = (0, 1, 2)
    n: int = 2000
    audit_size: int = 100
    test_size: int = 2000
    bilevel: BilevelConfig = BilevelConfig(gamma=0.5, fi_weight=0.1, outer_steps=200)

    def __post_init__(self):
        if not self.seeds:
            raise UserError("the credit study needs at least one seed")
        for name in ("n", "audit_size", "test_size"):
            require_at_least(name, getattr(self, name), 1)
        self.bilevel.validate()


@dataclasses.dataclass(frozen=True)
class FullGuidingRun:
    """Algorithm 1 on all training points of a trained run (train, val and pool splits together,
    ``noise`` of their labels flipped); the audit set is the first ``audit_size`` test images (at most
    half the test set), the rest is held out. ``train``: when given, the run is trained into
    ``OUT/run`` first (the smoke config's tiny digits MLP) instead of read from ``run``."""

    run: str = "experiments/results/fashion_mnist_cnn/run"
    noise: float = 0.2
    seed: int = 0
    audit_size: int = 100
    bilevel: BilevelConfig = BilevelConfig(gamma=1.0, fi_weight=0.1, outer_steps=100, inner_maxiter=2000)
    train: TrainConfig | None = None

    def __post_init__(self):
        _check_fraction("noise", self.noise)
        require_at_least("audit_size", self.audit_size, 1)
        self.bilevel.validate()
        if self.train is not None:
            self.train.validate()


# ----------------------------------------------------------------------------- shared pieces


def with_train(ds: Dataset, x: np.ndarray, y: np.ndarray) -> Dataset:
    """``ds`` with its training split replaced by (x, y)."""
    return dataclasses.replace(ds, train=Split(np.asarray(x, np.float32), np.asarray(y, np.int32)))


def train_cached(cfg: TrainConfig, ds: Dataset, cache: Path, path: Path | None = None):
    """``(run, state)`` of ``cfg`` trained on ``ds`` (its train split as given) through
    :func:`repair_jax.runs.trained_run`, in ``path`` (default ``cache/<dataset>_s<seed>_<digest of the config and
    the training data>``, so a shared cache holds one network per config and data), reused by later calls."""
    from repair_jax.runs import data_digest, trained_run

    key = hashlib.sha256((json.dumps(dataclasses.asdict(cfg), sort_keys=True) + data_digest(ds)).encode()).hexdigest()
    path = Path(path) if path is not None else Path(cache) / f"{cfg.dataset}_s{cfg.seed}_{key[:16]}"
    run = trained_run(path, cfg, dataset=ds)
    return run, run.state()


def _markdown_table(header: list[str], rows: list[list]) -> str:
    """The guiding reports' tables: :func:`repair_jax.tables.markdown_table` with three decimals."""
    return markdown_table(header, rows, float_format="{:.3f}") + "\n"


def mean_std(values) -> str:
    """``"mean ± std"`` over seeds with three decimals (the mean alone for one value)."""
    v = np.asarray(values, np.float64)
    return f"{v.mean():.3f} ± {v.std():.3f}" if len(v) > 1 else f"{v.mean():.3f}"


def _write_tables(out: Path, config, rows: list[dict], text: str) -> dict:
    write_text(out / "tables.md", text)
    write_json(out / "summary.json", {"rows": rows, "config": dataclasses.asdict(config)})
    return {"rows": rows, "tables": text, "report": text}


RowFn = Callable[[object, GuidingData, int, Path], dict]


def run_sweep(config, out: Path, run_one: RowFn, *, force: bool, progress: bool) -> list[dict]:
    """``run_one(config, data, seed, cache) -> row`` for every (data set, seed) of ``config`` not yet in
    ``OUT/rows.jsonl`` (:func:`repair_jax.experiment.run_cells`). Returns the rows in config order."""
    out = Path(out)
    cache = Path(config.network_cache) if config.network_cache else out / "networks"
    data = {d.name: d for d in config.datasets}
    return run_cells(out / "rows.jsonl", config_record(config), [(d.name, s) for d in config.datasets
                                                                  for s in config.seeds],
                     lambda cell: run_one(config, data[cell[0]], cell[1], cache), key=lambda r: (r["dataset"], r["seed"]),
                     force=force, progress=progress, label=type(config).__name__,
                     note=lambda cell: f"{cell[0]} seed {cell[1]}")


def _audit(ds: Dataset, size: int, x=None, tag=None):
    m = min(size, len(ds.pool))
    x = ds.pool.x[:m] if x is None else x
    return audit_from_split(x, ds.pool.y[:m], ds.name, ds.class_names, tag)


# ----------------------------------------------------------------------------- noisy labels (Tables 5.1-5.2)


def fix_auroc(scores_nk: np.ndarray, y_noisy, y_true, flipped) -> float:
    """AUROC over the pairs (flipped point i, class k != its noisy label); positive when k = true label."""
    idx = np.flatnonzero(flipped)
    s = np.asarray(scores_nk)[idx]
    k = s.shape[1]
    target = (np.arange(k)[None] == np.asarray(y_true)[idx, None]).astype(np.float32)
    keep = np.arange(k)[None] != np.asarray(y_noisy)[idx, None]
    return float(binary_auroc(target[keep], s[keep]))


def _duti(carved, y_noisy, audit, bilevel: BilevelConfig, k: int):
    """DUTI: the bilevel update on a linear model of the standardised embeddings, no concept term."""
    h, ha = carved.h_train, carved.h_audit
    mu, sd = h.mean(0), np.maximum(h.std(0), 1e-6)
    hs, has = (h - mu) / sd, (ha - mu) / sd
    zeros = np.zeros_like(has)
    return bilevel_update({"z": hs, "y": y_noisy, "z_audit": has, "y_audit": audit.y, "a_audit": zeros,
                           "s_audit": zeros, "c_audit": audit.c},
                          dataclasses.replace(bilevel, fi_weight=0.0), "classification", k)


def _noisy_label_scores(config: NoisyLabelsStudy, carved, y_noisy, audit, k: int) -> tuple[dict, dict]:
    """Per method: (detection scores (n,), fix scores (n, K)) and the two methods' wall times / convergence."""
    from repair_jax.guiding.baselines import influence_on_audit, training_loss_scores
    from repair_jax.guiding.pipeline import guiding_problem

    t0 = time.perf_counter()
    mg = model_guiding(guiding_problem(carved, y_noisy, audit), carved.theta, GuidingConfig(bilevel=config.bilevel),
                       "classification", k)
    t_mg = time.perf_counter() - t0
    t0 = time.perf_counter()
    duti = _duti(carved, y_noisy, audit, config.bilevel, k)
    t_duti = time.perf_counter() - t0
    infl_detect, infl_fix = influence_on_audit(carved.theta, carved.z_train, y_noisy, carved.z_audit, audit.y,
                                               audit.c, config.bilevel.l2, k)
    logits = carved.logits_train
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    scores = {"model_guiding": (mg.nl_scores, mg.bilevel.delta), "influence": (infl_detect, infl_fix),
              "duti": (1 - duti.delta[np.arange(len(y_noisy)), y_noisy], duti.delta),
              "training_loss": (training_loss_scores(logits, y_noisy), probs)}
    info = {"mg_lower_converged": mg.bilevel.lower_converged, "duti_lower_converged": duti.lower_converged,
            "time_model_guiding_s": t_mg, "time_duti_s": t_duti}
    return scores, info


def noisy_labels_row(config: NoisyLabelsStudy, data: GuidingData, seed: int, cache: Path) -> dict:
    """One (data set, seed) of the noisy-labels study: detection and fix AUROC of the four methods."""
    from repair_jax.guiding.pipeline import carve_network
    from repair_jax.train import predict

    ds = load_dataset(data.name, seed=seed, train_limit=data.train_limit)
    k = ds.num_classes
    y_noisy, flipped = flip_labels(ds.train.y, config.noise, k, seed)
    _, state = train_cached(data.train_config(seed), with_train(ds, ds.train.x, y_noisy), cache)
    audit = _audit(ds, config.audit_size)
    carved = carve_network(state, ds.train.x, y_noisy, audit, concept_library(ds.name, ds.class_names), k,
                           l2=config.bilevel.l2)
    scores, info = _noisy_label_scores(config, carved, y_noisy, audit, k)
    test_logits, _ = predict(state, ds.test.x)
    return {"dataset": data.name, "seed": seed, "n_train": int(len(y_noisy)), "n_flipped": int(flipped.sum()),
            "audit_size": len(audit.y),
            "network_test_accuracy": float(np.mean(test_logits.argmax(1) == ds.test.y)),
            "detect_auroc": {m: float(binary_auroc(flipped, d)) for m, (d, _) in scores.items()},
            "fix_auroc": {m: fix_auroc(f, y_noisy, ds.train.y, flipped) for m, (_, f) in scores.items()},
            **info}


def noisy_labels_tables(rows: list[dict]) -> str:
    methods = ["model_guiding", "influence", "duti", "training_loss"]
    out = []
    for key, title in (("detect_auroc", "Table 5.1 analogue: AUROC of detecting the flipped training labels"),
                       ("fix_auroc", "Table 5.2 analogue: AUROC of suggesting the right fix")):
        body = []
        for name in sorted({r["dataset"] for r in rows}):
            rs = [r for r in rows if r["dataset"] == name]
            body.append([f"{name} (n={rs[0]['n_train']}, {len(rs)} seeds)"] +
                        [mean_std([r[key][m] for r in rs]) for m in methods])
        out.append(f"**{title}** (mean ± std over seeds)\n\n" + _markdown_table(
            ["dataset", "model guiding", "influence functions", "DUTI", "training loss"], body))
    return "\n".join(out)


@runner(NoisyLabelsStudy)
def run_noisy_labels(config: NoisyLabelsStudy, out: Path, *, force: bool = False, progress: bool = True) -> dict:
    """Runs (or resumes) the noisy-labels study into ``out``: rows.jsonl, tables.md, summary.json."""
    rows = run_sweep(config, out, noisy_labels_row, force=force, progress=progress)
    return _write_tables(Path(out), config, rows, noisy_labels_tables(rows))


# ----------------------------------------------------------------------------- spurious correlation (Tables 5.3-5.4)


def train_group_dro(cfg: TrainConfig, ds: Dataset, groups: np.ndarray, num_groups: int, eta: float):
    """A network of ``cfg`` trained with the group-DRO objective over ``groups`` (n,) ints."""
    import jax

    from repair_jax.models import create_model, init_variables
    from repair_jax.train import create_train_state, fit, group_dro_objective, make_optimizer

    model = create_model(cfg.model, ds.num_classes, **cfg.model_kwargs)
    variables = init_variables(model, jax.random.PRNGKey(cfg.seed), ds.input_shape)
    steps = cfg.epochs * max(1, len(ds.train) // cfg.batch_size)
    state = create_train_state(model, variables, make_optimizer(cfg, steps))
    make_batch = lambda idx: {"x": ds.train.x[idx], "y": ds.train.y[idx], "group": groups[idx]}
    state, _ = fit(state, ds, cfg, objective=functools.partial(group_dro_objective, num_groups=num_groups, eta=eta),
                   make_batch=make_batch, progress=False)
    return state


def _tagged_data(config: SpuriousStudy, data: GuidingData, seed: int):
    """(data set with tagged training images, tag masks of train / test, tagged test images, audit set)."""
    from repair_jax.guiding.synthetic import add_tag, tag_mask_for_class

    ds = load_dataset(data.name, seed=seed, train_limit=data.train_limit)
    tag_train = tag_mask_for_class(ds.train.y, ds.class_index(data.spurious_class), config.tag_fraction, seed)
    rng = np.random.default_rng(seed + 1)
    tag_test = rng.uniform(size=len(ds.test)) < 0.5
    m = min(config.audit_size, len(ds.pool))
    tag_audit = rng.uniform(size=m) < 0.5
    audit = _audit(ds, m, add_tag(ds.pool.x[:m], tag_audit), tag_audit)
    tds = with_train(ds, add_tag(ds.train.x, tag_train), ds.train.y)
    return tds, tag_train, tag_test, add_tag(ds.test.x, tag_test), audit


def spurious_row(config: SpuriousStudy, data: GuidingData, seed: int, cache: Path) -> dict:
    """One (data set, seed) of the spurious-correlation study."""
    from repair_jax.guiding.baselines import errors_erm_scores, ssa_pseudo_groups
    from repair_jax.guiding.pipeline import guide_network
    from repair_jax.metrics import worst_group_accuracy
    from repair_jax.train import predict

    tds, tag_train, tag_test, x_test, audit = _tagged_data(config, data, seed)
    k, c, y, y_test = tds.num_classes, tds.class_index(data.spurious_class), tds.train.y, tds.test.y
    cfg = data.train_config(seed)
    run, state = train_cached(cfg, tds, cache)
    gcfg = GuidingConfig(bilevel=config.bilevel, budget=config.budget)
    report, guided, result, carved = guide_network(state, run.variables, tds.train.x, y, audit,
                                                   concept_library(tds.name, tds.class_names, with_tag=True), gcfg,
                                                   k, tds.class_names, x_test, y_test)
    states = {"model_guiding": state.replace(params=guided["params"]),
              "group_dro": train_group_dro(cfg, tds, (y * 2 + tag_train).astype(np.int32), 2 * k, config.dro_eta),
              "ssa": train_group_dro(cfg, tds, ssa_pseudo_groups(  # the audit set: SSA's group-labelled split
                  tds.train.x.reshape(len(y), -1), y, audit.x.reshape(len(audit.y), -1), audit.y,
                  audit.a[:, -1].astype(int), k), 2 * k, config.dro_eta),
              "erm": state}
    preds = {m: predict(st, x_test)[0].argmax(1) for m, st in states.items()}
    errs = errors_erm_scores(tds.train.x.reshape(len(y), -1), y, k)
    theta0, theta1 = carved.theta["w"], result.bilevel.theta["w"]
    return {"dataset": data.name, "seed": seed, "n_train": int(len(y)), "n_tagged": int(tag_train.sum()),
            "spurious_class": data.spurious_class, "audit_size": len(audit.y),
            "spurious_auroc": {"model_guiding": float(binary_auroc(tag_train, result.spu_scores)),
                               "errors_erm": float(binary_auroc(tag_train, errs))},
            "F_spu_precision": float(tag_train[result.F_spu].mean()) if len(result.F_spu) else None,
            "F_spu_size": int(len(result.F_spu)),
            "worst_group_accuracy": {m: float(worst_group_accuracy(y_test, p, y_test * 2 + tag_test, 2 * k))
                                     for m, p in preds.items()},
            "test_accuracy": {**{m: float(np.mean(p == y_test)) for m, p in preds.items()},
                              "carved": report["metrics"]["test"]["carved_accuracy"]},
            "tag_weight_for_class": {"carved": float(theta0[-1, c]), "guided": float(theta1[-1, c])},
            "lower_converged": result.bilevel.lower_converged}


SPURIOUS_METHODS = {"model_guiding": "MG", "group_dro": "GDRO", "ssa": "SSA", "erm": "ERM"}


def spurious_tables(rows: list[dict]) -> str:
    """Tables 5.3 and 5.4 from the rows; a method no row has (SSA in rows logged before it was added) is left
    out of Table 5.4 rather than reported empty."""
    methods = [m for m in SPURIOUS_METHODS if all(m in r["worst_group_accuracy"] for r in rows)]
    body3, body4 = [], []
    for name in sorted({r["dataset"] for r in rows}):
        rs = [r for r in rows if r["dataset"] == name]
        lab = f"{name} + tag on {rs[0]['spurious_class']} (n={rs[0]['n_train']}, {len(rs)} seeds)"
        body3.append([lab] + [mean_std([r["spurious_auroc"][m] for r in rs]) for m in ("model_guiding", "errors_erm")])
        body4.append([lab] + [mean_std([100 * r[key][m] for r in rs]) for key in ("worst_group_accuracy", "test_accuracy")
                              for m in methods])
    header4 = ["dataset"] + [f"{SPURIOUS_METHODS[m]} {kind}" for kind in ("worst", "avg") for m in methods]
    return "\n".join([
        "**Table 5.3 analogue: AUROC of finding the tagged training points** (mean ± std over seeds)\n\n"
        + _markdown_table(["dataset", "model guiding", "Errors-ERM"], body3),
        "**Table 5.4 analogue: worst-group test accuracy (%) over (class, tag) groups**, and average test "
        "accuracy (%) (mean ± std over seeds)\n\n" + _markdown_table(header4, body4)])


@runner(SpuriousStudy)
def run_spurious(config: SpuriousStudy, out: Path, *, force: bool = False, progress: bool = True) -> dict:
    """Runs (or resumes) the spurious-correlation study into ``out``: rows.jsonl, tables.md, summary.json."""
    rows = run_sweep(config, out, spurious_row, force=force, progress=progress)
    return _write_tables(Path(out), config, rows, spurious_tables(rows))


# ----------------------------------------------------------------------------- credit table (regression path)

CREDIT_IMPORTANCE = np.array([1, 1, 0, 1, 0], np.float32)  # income, asset, age, credit_score, gender


def credit_row(config: CreditStudy, seed: int) -> dict:
    """One seed of the credit study: the expert's audit set (fresh rows, true limits) marks income, asset
    and credit score as relevant, age and gender as irrelevant."""
    from repair_jax.guiding.carving import carved_predict, fit_concept_basis, fit_linear_head, project
    from repair_jax.guiding.formats import AuditSet, ConceptLibrary
    from repair_jax.guiding.synthetic import CREDIT_FEATURES, credit_table

    X, y_true, y_obs, noisy = credit_table(config.n, seed)
    Xa, ya, _, _ = credit_table(config.audit_size, seed + 1000, noise_fraction=0.0, spurious=0.0)
    Xt, yt, _, _ = credit_table(config.test_size, seed + 2000, noise_fraction=0.0, spurious=0.0)
    library = ConceptLibrary(CREDIT_FEATURES, ("scalar",) * 4 + ("binary",))
    audit = AuditSet(Xa, ya, Xa, np.tile(CREDIT_IMPORTANCE, (len(ya), 1)), np.ones(len(ya), np.float32), "regression")
    basis = fit_concept_basis(Xa, Xa, library, l2=1e-3)  # the "embedding" of a table row is the row itself
    z, za = project(basis, X), project(basis, Xa)
    theta = fit_linear_head(z, y_obs, "regression", 1, l2=config.bilevel.l2)
    res = model_guiding({"z": z, "y": y_obs, "z_audit": za, "y_audit": ya, "a_audit": za,  # concept values in the standardised concept coordinates
                         "s_audit": audit.s, "c_audit": audit.c}, theta, GuidingConfig(bilevel=config.bilevel),
                        "regression")
    resid = np.abs(carved_predict(basis, theta, X)[:, 0] - y_obs)
    A = np.c_[X, np.ones(len(X))]  # Errors-ERM for regression: residual of least squares on the raw features
    ols = np.abs(A @ np.linalg.lstsq(A, y_obs, rcond=None)[0] - y_obs)
    rmse = lambda th: float(np.sqrt(np.mean((carved_predict(basis, th, Xt)[:, 0] - yt) ** 2)))
    gender = X[:, 4] > 0.5
    return {"seed": seed, "n_train": config.n, "n_noisy": int(noisy.sum()), "audit_size": config.audit_size,
            "noisy_auroc": {"model_guiding": float(binary_auroc(noisy, res.nl_scores)),
                            "training_residual": float(binary_auroc(noisy, resid))},
            "spurious_auroc": {"model_guiding": float(binary_auroc(gender, res.spu_scores)),
                               "errors_erm": float(binary_auroc(gender, ols))},
            "gender_weight": {"carved": float(theta["w"][4, 0]), "guided": float(res.bilevel.theta["w"][4, 0])},
            "test_rmse_vs_true_limit": {"carved": rmse(theta), "guided": rmse(res.bilevel.theta)},
            "lower_converged": res.bilevel.lower_converged}


def credit_tables(config: CreditStudy, rows: list[dict]) -> str:
    ms = lambda key, m: mean_std([r[key][m] for r in rows])
    return (f"**Regression path: synthetic credit-limit table** (n={config.n}, audit {config.audit_size}, "
            f"{len(rows)} seeds, mean ± std)\n\n" + _markdown_table(
                ["quantity", "model guiding", "baseline"],
                [["AUROC, noisy rows (baseline: training residual)", ms("noisy_auroc", "model_guiding"),
                  ms("noisy_auroc", "training_residual")],
                 ["AUROC, gender = 1 rows (Table 5.3 credit row; baseline: Errors-ERM)",
                  ms("spurious_auroc", "model_guiding"), ms("spurious_auroc", "errors_erm")],
                 ["gender weight (guided vs carved)", ms("gender_weight", "guided"), ms("gender_weight", "carved")],
                 ["test RMSE vs true limit (guided vs carved)", ms("test_rmse_vs_true_limit", "guided"),
                  ms("test_rmse_vs_true_limit", "carved")]]))


@runner(CreditStudy)
def run_credit(config: CreditStudy, out: Path, *, force: bool = False, progress: bool = True) -> dict:
    """Runs the credit study into ``out``: tables.md, summary.json (seconds per seed, so not resumable)."""
    rows = [credit_row(config, seed) for seed in track(config.seeds, "CreditStudy", progress)]
    return _write_tables(Path(out), config, rows, credit_tables(config, rows))


# ----------------------------------------------------------------------------- full-scale guiding


def _full_run(config: FullGuidingRun, out: Path):
    from repair_jax.runs import load_run, trained_run

    if config.train is not None:
        return trained_run(out / "run", config.train), str(out / "run")
    if not (Path(config.run) / "run.json").is_file():
        raise UserError(f"run {config.run}: no run.json there (train it with the fashion_mnist_cnn config)")
    return load_run(config.run), config.run


def _full_guiding(config: FullGuidingRun, run, progress: bool) -> dict:
    """Carving and the bilevel update on every training point of ``run``, with their wall times."""
    import jax

    from repair_jax.guiding.pipeline import carve_network, guiding_problem

    ds = run.dataset()
    if ds.multilabel:
        raise UserError("model guiding needs a single-label classifier")
    x = np.concatenate([ds.train.x, ds.val.x, ds.pool.x])
    y_noisy, flipped = flip_labels(np.concatenate([ds.train.y, ds.val.y, ds.pool.y]), config.noise,
                                   ds.num_classes, config.seed)
    m = min(config.audit_size, len(ds.test) // 2)
    audit = audit_from_split(ds.test.x[:m], ds.test.y[:m], ds.name, ds.class_names)
    library = concept_library(ds.name, ds.class_names)
    state = run.state()
    t0 = time.perf_counter()
    carved = carve_network(state, x, y_noisy, audit, library, ds.num_classes, l2=config.bilevel.l2)
    jax.block_until_ready(carved.theta)
    t_carve = time.perf_counter() - t0
    t0 = time.perf_counter()
    mg = model_guiding(guiding_problem(carved, y_noisy, audit), carved.theta,
                       GuidingConfig(config.bilevel, carve_l2=config.bilevel.l2), "classification", ds.num_classes,
                       progress=progress)
    jax.block_until_ready(mg.bilevel.delta)
    return {"ds": ds, "state": state, "carved": carved, "mg": mg, "y_noisy": y_noisy, "flipped": flipped,
            "audit_size": m, "concepts": len(library.names), "carve_seconds": t_carve,
            "guiding_seconds_incl_compile": time.perf_counter() - t0}


def _full_result(config: FullGuidingRun, run_path: str, g: dict) -> dict:
    import jax

    from repair_jax.guiding.baselines import training_loss_scores
    from repair_jax.guiding.pipeline import accuracy_of_head
    from repair_jax.train import predict

    ds, carved, mg, m, y_noisy, flipped = g["ds"], g["carved"], g["mg"], g["audit_size"], g["y_noisy"], g["flipped"]
    test_logits, h_test = predict(g["state"], ds.test.x[m:])
    y_test = ds.test.y[m:]
    return {
        "dataset": ds.name, "run": run_path, "n_train": int(len(y_noisy)), "n_flipped": int(flipped.sum()),
        "audit_size": m, "n_test_held_out": int(len(y_test)), "concepts": g["concepts"],
        "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
        "outer_steps": config.bilevel.outer_steps, "carve_seconds": g["carve_seconds"],
        "guiding_seconds_incl_compile": g["guiding_seconds_incl_compile"],
        "lower_converged": bool(mg.bilevel.lower_converged), "flagged_noisy_labels": int(len(mg.F_nl)),
        "detect_auroc": {"model_guiding": float(binary_auroc(flipped, mg.nl_scores)),
                         "training_loss": float(binary_auroc(flipped, training_loss_scores(carved.logits_train,
                                                                                           y_noisy)))},
        "test_accuracy": {"network": float(np.mean(np.asarray(test_logits).argmax(1) == y_test)),
                          "carved": accuracy_of_head(carved.basis, carved.theta, h_test, y_test),
                          "guided": accuracy_of_head(carved.basis, mg.bilevel.theta, h_test, y_test)},
        "note": ("the network was trained on the clean labels of its train split, so its training loss "
                 "ranks the flipped labels almost perfectly; the carved and guided heads are fit on the "
                 "noisy labels of all its training points"),
    }


def full_guiding_table(r: dict) -> str:
    lines = [f"| {key} | {val} |" for key, val in (
        ("training points (labels flipped)", f"{r['n_train']} ({r['n_flipped']})"),
        ("backend", r["backend"]), ("carving s", f"{r['carve_seconds']:.1f}"),
        ("bilevel update s (incl. compile)", f"{r['guiding_seconds_incl_compile']:.1f} ({r['outer_steps']} outer steps)"),
        ("lower level converged", r["lower_converged"]),
        ("detection AUROC, model guiding", f"{r['detect_auroc']['model_guiding']:.3f}"),
        ("test accuracy network / carved / guided",
         " / ".join(f"{r['test_accuracy'][s]:.4f}" for s in ("network", "carved", "guided"))))]
    return "| quantity | value |\n|---|---|\n" + "\n".join(lines) + "\n"


@runner(FullGuidingRun)
def run_full_guiding(config: FullGuidingRun, out: Path, *, force: bool = False, progress: bool = True) -> dict:
    """Guides every training point of the run into ``out``: result.json, result.md."""
    out = Path(out)
    run, run_path = _full_run(config, out)
    result = _full_result(config, run_path, _full_guiding(config, run, progress))
    write_json(out / "result.json", result)
    text = full_guiding_table(result)
    write_text(out / "result.md", text)
    return {**result, "tables": text}
