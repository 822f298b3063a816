"""Influence-function experiments as configs (Adebayo 2022, Sec. 3.4 and Ch. 6 on real
digits): one frozen dataclass per result and its runner (registered with
:func:`repair_jax.experiment.runner`).

- :class:`InfluenceLooStudy`: the leave-one-out check of influence functions (Koh & Liang 2017; Adebayo 2022,
  Sec. 3.4, Eq. 3.1/6.2). Fit to convergence (full-batch L-BFGS, float64), pick the test points with
  the highest loss, predict the change of each one's loss from removing each of its ``k`` most
  influential training points (-I_up,loss / n), retrain without the point (warm start) and report the
  Pearson correlation of predicted and actual changes. A non-convex model (the damped MLP) gets the
  damping in its Hessian only, and retraining reaches a nearby stationary point at best.
- :class:`LabelFlipSensitivityStudy` (Adebayo 2022, Sec. 6.3, Fig. 6-1 / 6-2 analogues): the % change of each
  group's ECE when 0-30% of the *test* labels (fixed model) or of the *training* labels (refit) are
  flipped uniformly at random; each record also holds the fitted model's balanced accuracy on the clean test
  labels and the test group sizes (the study's preconditions).
- :class:`InfluenceRankingStudy` (Adebayo 2022, Sec. 6.5, Fig. 6-3 analogue): flip ``fraction`` of the training
  labels, fit a softmax regression, rank the training points by IF-Calib (I_up,disparity, Eq. 6.4, on
  the ECE of the heavy-ink test group), IF-Calib-Label (Eq. 6.5), the training loss and IF-Norm
  (I_up,loss, Eq. 6.2 on the mean test loss); report the fraction of flipped points in the top ``top``.

- :class:`ConfusionRemovalStudy` (issue 17 Sec. 4): influence on group confusion (soft type1conf,
  Zhong et al. 2022, Sec. 2.2, through Adebayo 2022, Eq. 6.4) checked against retraining: for the most
  confused test pairs, remove the k training points that most increase the pair's soft type1conf,
  retrain to convergence (warm start) and compare the actual change with sum -I_up / n (Pearson and
  Spearman over all (pair, k)).

Groups, named for what they are: "heavy-ink" test digits (mean pixel intensity above the 75th
percentile of the training set; the minority, ~25%) and "light-ink" digits (the rest).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from repair_jax.errors import UserError, require_at_least
from repair_jax.experiment import runner
from repair_jax.influence.full_batch import fit_full_batch
from repair_jax.io import write_json, write_text
from repair_jax.progress import track
from repair_jax.stats import pearson, spearman

# ----------------------------------------------------------------------------- configs


@dataclasses.dataclass(frozen=True)
class FullBatchModel:
    """A model fit full-batch with L-BFGS: an MLP with ``hidden`` layers (none: softmax regression), its L2,
    the L-BFGS iteration cap and the hidden activation (:data:`repair_jax.models.MLP_ACTIVATIONS`; None:
    ReLU, as before the field existed)."""

    name: str
    hidden: tuple[int, ...]
    l2: float
    max_iter: int
    activation: str | None = None

    def __post_init__(self):
        from repair_jax.models import MLP_ACTIVATIONS

        if self.l2 < 0:
            raise UserError(f"{self.name}: l2 must be >= 0, got {self.l2}")
        require_at_least(f"{self.name}: max_iter", self.max_iter, 1)
        if self.activation is not None and self.activation not in MLP_ACTIVATIONS:
            raise UserError(f"{self.name}: activation must be one of {', '.join(MLP_ACTIVATIONS)}, got "
                            f"{self.activation!r}")


def fit_args(model: FullBatchModel) -> dict:
    """The keywords of :func:`repair_jax.influence.full_batch.fit_full_batch` that ``model`` fixes."""
    return {"hidden": tuple(model.hidden), "l2": model.l2, "max_iter": model.max_iter,
            "activation": model.activation}


SOFTMAX_REGRESSION = FullBatchModel("logistic_regression", (), 1e-3, 500)
MLP_32 = FullBatchModel("mlp", (32,), 1e-3, 300)


@dataclasses.dataclass(frozen=True)
class LooModel:
    """One model of the leave-one-out check: the fit, the Hessian damping, its training subset
    (None: all) and how many test points get ``k`` removals each."""

    model: FullBatchModel
    damping: float
    train_limit: int | None
    test_points: int

    def __post_init__(self):
        require_at_least("test_points", self.test_points, 1)
        if self.train_limit is not None:
            require_at_least("train_limit", self.train_limit, 1)


@dataclasses.dataclass(frozen=True)
class InfluenceLooStudy:
    """The leave-one-out check (see the module docstring)."""

    models: tuple[LooModel, ...]
    k: int = 20
    dataset: str = "digits"
    seed: int = 0

    def __post_init__(self):
        require_at_least("k", self.k, 1)
        if not self.models:
            raise UserError("the leave-one-out check needs at least one model")


def _check_seeds(seeds) -> None:
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"seeds must be a non-empty tuple of distinct seeds, got {seeds}")


@dataclasses.dataclass(frozen=True)
class LabelFlipSensitivityStudy:
    """Fig. 6-1 / 6-2 analogues (see the module docstring); ``train_limit``: training subset (None: all)."""

    seeds: tuple[int, ...] = (0, 1, 2)
    fractions: tuple[float, ...] = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
    models: tuple[FullBatchModel, ...] = (SOFTMAX_REGRESSION, MLP_32)
    train_limit: int | None = None
    dataset: str = "digits"

    def __post_init__(self):
        _check_seeds(self.seeds)
        if not self.fractions or self.fractions[0] != 0 or any(not 0 <= f < 1 for f in self.fractions):
            raise UserError(f"fractions must start at 0 and lie in [0, 1), got {self.fractions}")


# How the labels are flipped: "uniform" (default, as in Adebayo 2022, Sec. 6.5: fraction of the training points,
# each to a uniformly drawn other class); "pair": the same points, each to the next class (y + 1 mod K, a
# systematic confusion); "heavy-ink": uniform flips drawn among the heavy-ink training points only (label error
# concentrated in the measured group; Sec. 6.3 names label error more likely for some kinds of data).
RANKING_FLIPS = ("uniform", "pair", "heavy-ink")
# The test group whose ECE IF-Calib and IF-Calib-Label target: heavy-ink (default, the minority), light-ink, all.
RANKING_GROUPS = ("heavy-ink", "light-ink", "all")


@dataclasses.dataclass(frozen=True)
class InfluenceRankingStudy:
    """Fig. 6-3 analogue (see the module docstring). ``flip`` (:data:`RANKING_FLIPS`, None: uniform), ``group``
    (:data:`RANKING_GROUPS`, None: heavy-ink) and ``float64`` (None: float32) keep the committed setting at None."""

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    top: int = 50
    fraction: float = 0.1
    model: FullBatchModel = SOFTMAX_REGRESSION
    cg_tol: float = 1e-5
    damping: float = 0.0
    train_limit: int | None = None
    dataset: str = "digits"
    flip: str | None = None
    group: str | None = None
    float64: bool | None = None

    def __post_init__(self):
        _check_seeds(self.seeds)
        require_at_least("top", self.top, 1)
        if not 0 < self.fraction < 1:
            raise UserError(f"fraction must lie in (0, 1), got {self.fraction}")
        if self.flip not in (None, *RANKING_FLIPS):
            raise UserError(f"flip must be one of {', '.join(RANKING_FLIPS)}, got {self.flip!r}")
        if self.group not in (None, *RANKING_GROUPS):
            raise UserError(f"group must be one of {', '.join(RANKING_GROUPS)}, got {self.group!r}")


@dataclasses.dataclass(frozen=True)
class ConfusionRemovalStudy:
    """Influence on a pair's confusion vs. retraining without its most harmful points (module docstring).

    ``pairs``: how many of the most confused pairs (soft type1conf on ``select_split``) per data set; the
    ranking, the predicted and the actual changes are of the soft type1conf on ``select_split``; the
    test split gets the repair statistics (hard type1conf, accuracy, the verdict's lambda1 / lambda2)."""

    datasets: tuple[str, ...] = ("digits", "fashion_mnist")
    model: FullBatchModel = FullBatchModel("logistic_regression", (), 1e-2, 2000)
    pairs: int = 3
    ks: tuple[int, ...] = (5, 10, 20, 40, 80)
    train_limit: int | None = 2000
    cg_tol: float = 1e-10
    select_split: str = "val"
    lambda1: float = 0.25
    lambda2: float = 0.01
    seed: int = 0

    def __post_init__(self):
        require_at_least("pairs", self.pairs, 1)
        if self.select_split not in ("val", "test"):
            raise UserError(f"select_split must be val or test, got {self.select_split!r}")
        if not self.datasets or not self.ks or any(k < 1 for k in self.ks):
            raise UserError(f"need at least one data set and k >= 1, got {self.datasets}, {self.ks}")


# ----------------------------------------------------------------------------- shared pieces


def ink(x: np.ndarray) -> np.ndarray:
    """Mean pixel intensity per image, (N,)."""
    return x.reshape(len(x), -1).mean(1)


HEAVY_INK, LIGHT_INK = "heavy-ink (minority)", "light-ink (majority)"  # the group names the records hold


def ink_groups(ds) -> tuple[float, dict]:
    """(threshold, {"heavy-ink (minority)": test mask, "light-ink (majority)": test mask})."""
    thr = float(np.quantile(ink(ds.train.x), 0.75))
    heavy = ink(ds.test.x) > thr
    return thr, {HEAVY_INK: heavy, LIGHT_INK: ~heavy}


def class_probs(loss, params, x) -> jax.Array:
    return jax.nn.softmax(loss.logits(params, jnp.asarray(x)))


# ----------------------------------------------------------------------------- leave-one-out check


def _loo_test_point(loss, params, train: dict, one: dict, spec: LooModel, k: int) -> dict:
    """Predicted (-I_up,loss / n, explicit Hessian) vs actual (retrained) change of one test point's
    loss for its ``k`` most influential training points."""
    from repair_jax.influence import influence_up_loss
    from repair_jax.influence.loo import leave_one_out

    n = len(train["y"])
    scores, r = influence_up_loss(loss, params, train, one, method="explicit", l2=spec.model.l2,
                                  damping=spec.damping)
    pred = -np.asarray(scores) / n
    top = np.argsort(-np.abs(pred))[:k]
    res = leave_one_out(loss, params, train, lambda p: jnp.mean(loss(p, one)), top, l2=spec.model.l2, tol=1e-8,
                        max_iter=spec.model.max_iter)
    return {"cg": r.summary(), "pearson": pearson(pred[top], res["actual"]),
            "max_retrain_grad_norm": float(res["grad_norms"].max()),
            "predicted": pred[top].tolist(), "actual": res["actual"].tolist(), "train_indices": top.tolist()}


def loo_check(spec: LooModel, ds, k: int, seed: int) -> dict:
    """The leave-one-out check of one model (float64; call inside ``jax.enable_x64``)."""
    t0 = time.perf_counter()
    # the MLP objective is non-convex: the damping is added to its Hessian only (Koh & Liang's
    # damped estimate); L-BFGS stops at max_iter if the gradient tolerance is not reached
    loss, params, gnorm, train = fit_full_batch(ds, ds.train.y, **fit_args(spec.model), seed=seed, tol=1e-8,
                                                dtype=jnp.float64, train_limit=spec.train_limit)
    test_losses = np.asarray(loss(params, {"x": jnp.asarray(ds.test.x, jnp.float64), "y": jnp.asarray(ds.test.y)}))
    per_point = []
    for ti in np.argsort(-test_losses)[:spec.test_points]:
        one = {"x": jnp.asarray(ds.test.x[ti:ti + 1], jnp.float64), "y": jnp.asarray(ds.test.y[ti:ti + 1])}
        point = _loo_test_point(loss, params, train, one, spec, k)
        per_point.append({"test_index": int(ti), "test_loss": float(test_losses[ti]), **point})
    p_all = np.concatenate([p["predicted"] for p in per_point])
    a_all = np.concatenate([p["actual"] for p in per_point])
    return {"model": spec.model.name, "hidden": list(spec.model.hidden), "l2": spec.model.l2, "damping": spec.damping,
            "n_train": len(train["y"]), "lbfgs_max_iter": spec.model.max_iter, "solver": "explicit",
            "params": int(sum(a.size for a in jax.tree_util.tree_leaves(params))),
            "fit_grad_norm": gnorm, "k": k, "pearson_all": pearson(p_all, a_all),
            "pearson_per_test_point": [d["pearson"] for d in per_point], "seconds": time.perf_counter() - t0,
            "test_points": per_point}


def loo_table(rows: list[dict]) -> str:
    table = ["| model | params | n train | L2 | damping | removals | Pearson (all) | Pearson per test point |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['model']} | {r['params']} | {r['n_train']} | {r['l2']} | {r['damping']} | "
                     f"{r['k']} x {len(r['test_points'])} | {r['pearson_all']:.4f} | "
                     f"{', '.join(f'{p:.3f}' for p in r['pearson_per_test_point'])} |")
    return "\n".join(table) + "\n"


def plot_loo(path, rows: list[dict]) -> None:
    """Predicted vs actual leave-one-out changes, one panel per model."""
    from repair_jax.plots import plt, save_figure

    fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 4))
    for ax, r in zip(np.atleast_1d(axes), rows):
        p = np.concatenate([t["predicted"] for t in r["test_points"]])
        q = np.concatenate([t["actual"] for t in r["test_points"]])
        ax.scatter(q, p, s=12)
        lim = [min(p.min(), q.min()), max(p.max(), q.max())]
        ax.plot(lim, lim, "k--", lw=0.8)
        ax.set_xlabel("actual change in test loss (retrain without z_i)")
        ax.set_ylabel("predicted  -I_up,loss / n")
        ax.set_title(f"{r['model']}: Pearson {r['pearson_all']:.3f}", fontsize=9)
    save_figure(fig, path)


@runner(InfluenceLooStudy)
def run_influence_loo(config: InfluenceLooStudy, out: Path, *, force: bool = False, progress: bool = True) -> dict:
    """The leave-one-out check into ``out``: loo.json, loo.md, loo.png."""
    from repair_jax.data import load_dataset

    out = Path(out)
    ds = load_dataset(config.dataset, seed=config.seed)
    with jax.enable_x64(True):
        rows = [loo_check(spec, ds, config.k, config.seed)
                for spec in track(config.models, "InfluenceLooStudy", progress)]
    write_json(out / "loo.json", {"dataset": config.dataset, "seed": config.seed, "results": rows})
    text = loo_table(rows)
    write_text(out / "loo.md", text)
    plot_loo(out / "loo.png", rows)
    return {"results": rows, "tables": text}


# ----------------------------------------------------------------------------- label-flip sensitivity (Sec. 6.3)


def group_ece(p, y, masks: dict) -> dict:
    """ECE of the predicted probabilities ``p`` (N, K) against ``y`` within each group mask."""
    from repair_jax.metrics import expected_calibration_error

    return {g: float(expected_calibration_error(p, jnp.asarray(y), jnp.asarray(m.astype(np.float32))))
            for g, m in masks.items()}


def pct_change(curve: dict, base: dict) -> dict:
    return {g: 100.0 * (curve[g] - base[g]) / base[g] if base[g] > 0 else float("nan") for g in curve}


def probs_balanced_accuracy(p, y, num_classes: int) -> float:
    """Balanced accuracy of the argmax of ``p`` (N, K) against the labels ``y`` (computed on the host)."""
    from repair_jax.metrics import balanced_accuracy, confusion_matrix

    return float(balanced_accuracy(confusion_matrix(np.asarray(y), np.asarray(p).argmax(-1), num_classes)))


def sensitivity_records(config: LabelFlipSensitivityStudy, model: FullBatchModel, seed: int) -> list[dict]:
    """The test-time and training-time records of one (model, seed); the flips of both stages draw in
    turn from one generator seeded ``1000 + seed``. Each record also holds its fitted model's balanced accuracy
    on the clean test labels (test time: the model fit on clean labels) and the test group sizes (for the
    preconditions; the ECE computation does not use them)."""
    from repair_jax.data import flip_labels, load_dataset

    ds = load_dataset(config.dataset, seed=seed, train_limit=config.train_limit)
    _, masks = ink_groups(ds)
    sizes = {g: int(m.sum()) for g, m in masks.items()}
    rng = np.random.default_rng(1000 + seed)
    loss, params, _, _ = fit_full_batch(ds, ds.train.y, **fit_args(model), seed=seed)
    p_test = class_probs(loss, params, ds.test.x)
    base = group_ece(p_test, ds.test.y, masks)
    base_bacc = probs_balanced_accuracy(p_test, ds.test.y, ds.num_classes)
    rec = lambda stage, f, e, bacc: {"stage": stage, "model": model.name, "seed": seed, "fraction": f, "ece": e,
                                     "pct_change": pct_change(e, base), "balanced_accuracy": bacc,
                                     "group_sizes": sizes}
    records = [rec("test", f, group_ece(p_test, flip_labels(ds.test.y, f, ds.num_classes, rng)[0], masks), base_bacc)
               for f in config.fractions]  # test time: fixed model, flipped test labels
    for f in config.fractions:  # training time: refit on flipped training labels, clean test labels
        e, bacc = base, base_bacc
        if f != 0:
            l_f, p_f, _, _ = fit_full_batch(ds, flip_labels(ds.train.y, f, ds.num_classes, rng)[0], **fit_args(model),
                                            seed=seed)
            p_refit = class_probs(l_f, p_f, ds.test.x)
            e, bacc = group_ece(p_refit, ds.test.y, masks), probs_balanced_accuracy(p_refit, ds.test.y, ds.num_classes)
        records.append(rec("train", f, e, bacc))
    return records


def sensitivity_means(config: LabelFlipSensitivityStudy, records: list[dict]) -> dict:
    """{(stage, model, fraction): {group: (mean % change, mean ECE)}} over seeds."""
    gnames = list(records[0]["ece"])
    table = {}
    for stage in ("test", "train"):
        for model in config.models:
            for f in config.fractions:
                rs = [r for r in records if r["stage"] == stage and r["model"] == model.name and r["fraction"] == f]
                table[(stage, model.name, f)] = {g: (float(np.mean([r["pct_change"][g] for r in rs])),
                                                     float(np.mean([r["ece"][g] for r in rs]))) for g in gnames}
    return table


def sensitivity_table(config: LabelFlipSensitivityStudy, table: dict) -> str:
    gnames = list(next(iter(table.values())))
    lines = ["% change of group ECE vs. 0% flipped labels (mean over "
             f"{len(config.seeds)} seed(s); ECE at 0% in parentheses)", "",
             "| stage | model | flipped | " + " | ".join(gnames) + " |", "|---|---|---|" + "---|" * len(gnames)]
    for (stage, model_name, f), v in table.items():
        cells = [f"{v[g][0]:+.1f}% ({v[g][1]:.3f})" for g in gnames]
        lines.append(f"| {stage} | {model_name} | {f:.0%} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def accuracy_table(config: LabelFlipSensitivityStudy, records: list[dict]) -> str:
    """The fitted models' balanced accuracy on the clean test labels by flipped training fraction (mean over
    seeds) and the test group sizes of each seed; "" for records without them (written before they were)."""
    if any("balanced_accuracy" not in r or "group_sizes" not in r for r in records):
        return ""
    lines = ["", f"Balanced accuracy on the clean test labels (mean over {len(config.seeds)} seed(s)) of the model "
             "fit on the flipped training labels (the test stage keeps the model of 0%)", "",
             "| model | " + " | ".join(f"{f:.0%}" for f in config.fractions) + " |",
             "|---|" + "---|" * len(config.fractions)]
    for model in config.models:
        cells = [np.mean([r["balanced_accuracy"] for r in records if (r["stage"], r["model"], r["fraction"])
                          == ("train", model.name, f)]) for f in config.fractions]
        lines.append(f"| {model.name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    sizes = {r["seed"]: r["group_sizes"] for r in records}
    lines += ["", "Test group sizes: " + "; ".join(
        f"seed {seed}: " + ", ".join(f"{g} {n}" for g, n in gs.items()) for seed, gs in sizes.items())]
    return "\n".join(lines) + "\n"


def plot_sensitivity(path, config: LabelFlipSensitivityStudy, table: dict) -> None:
    from repair_jax.plots import plt, save_figure

    gnames = list(next(iter(table.values())))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=False)
    for ax, stage, title in zip(axes, ("test", "train"), ("test-time label flips (Fig. 6-1)",
                                                          "training-time label flips (Fig. 6-2)")):
        for model, ls in zip(config.models, ("-", "--", ":", "-.")):
            for g, c in zip(gnames, ("C3", "C0")):
                ax.plot([100 * f for f in config.fractions],
                        [table[(stage, model.name, f)][g][0] for f in config.fractions],
                        ls, color=c, marker="o", ms=3, label=f"{model.name}, {g}")
        ax.set_xlabel("% labels flipped")
        ax.set_ylabel("% change in group ECE")
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=6)
    save_figure(fig, path)


@runner(LabelFlipSensitivityStudy)
def run_label_flip_sensitivity(config: LabelFlipSensitivityStudy, out: Path, *, force: bool = False,
                               progress: bool = True) -> dict:
    """The label-flip sensitivity study into ``out``: sensitivity.json (each record: group ECE, its % change, the
    fitted model's balanced accuracy on the clean test labels, the test group sizes), sensitivity.md,
    sensitivity.png."""
    out = Path(out)
    t0 = time.perf_counter()
    todo = [(m, s) for m in config.models for s in config.seeds]
    records = [r for model, seed in track(todo, "LabelFlipSensitivityStudy", progress)
               for r in sensitivity_records(config, model, seed)]
    table = sensitivity_means(config, records)
    write_json(out / "sensitivity.json", {
        "dataset": config.dataset, "seeds": list(config.seeds), "fractions": list(config.fractions),
        "groups": "heavy-ink: test digits with mean intensity > 75th percentile of training intensities; "
                  "light-ink: the rest", "records": records, "seconds": time.perf_counter() - t0})
    text = sensitivity_table(config, table) + accuracy_table(config, records)
    write_text(out / "sensitivity.md", text)
    plot_sensitivity(out / "sensitivity.png", config, table)
    return {"records": records, "tables": text}


# ----------------------------------------------------------------------------- ranking mislabelled points (Sec. 6.5)


def ranking_scores(config: InfluenceRankingStudy, loss, params, train: dict, test: dict, mask, k: int):
    """The four rankings' scores (N,) each (higher: ranked first), and the IF-Calib solve's result."""
    from repair_jax.influence import (
        group_disparity_quantity, influence_pert_y, influence_up, influence_up_loss, label_flip_scores, s_test,
    )

    solver = dict(method="cg", l2=config.model.l2, tol=config.cg_tol, damping=config.damping)
    r = s_test(loss, params, train, group_disparity_quantity(loss, test, "ece", mask), **solver)
    scores = {
        "IF-Calib": np.asarray(influence_up(loss, params, train, r.x)),
        "IF-Calib-Label": np.asarray(label_flip_scores(influence_pert_y(loss, params, train, r.x, k), train["y"])),
        "Loss": np.asarray(loss(params, train)),
        "IF-Norm": np.asarray(influence_up_loss(loss, params, train, test, **solver)[0]),
    }
    return scores, r


def ranking_flips(config: InfluenceRankingStudy, ds, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(noisy labels, flipped mask) of the training split by ``config.flip`` (:data:`RANKING_FLIPS`); uniform is
    :func:`repair_jax.data.flip_labels` with ``seed``, the others draw their points from one generator seeded so."""
    from repair_jax.data import flip_labels

    y, k = np.asarray(ds.train.y), ds.num_classes
    if config.flip in (None, "uniform"):
        return flip_labels(y, config.fraction, k, seed)
    rng = np.random.default_rng(seed)
    n_flip = int(round(config.fraction * len(y)))
    pool = np.arange(len(y)) if config.flip == "pair" else np.flatnonzero(ink(ds.train.x) > ink_groups(ds)[0])
    if n_flip > len(pool):
        raise UserError(f"{config.flip} flips: {n_flip} flips asked of {len(pool)} eligible training points")
    idx = rng.choice(pool, n_flip, replace=False)
    shift = 1 if config.flip == "pair" else rng.integers(1, k, n_flip)
    y_noisy, mask = y.copy(), np.zeros(len(y), bool)
    y_noisy[idx], mask[idx] = (y[idx] + shift) % k, True
    return y_noisy.astype(np.int32), mask


def ranking_group(config: InfluenceRankingStudy, ds) -> tuple[str, np.ndarray]:
    """(name, float mask over the test split) of the group whose ECE IF-Calib targets (``config.group``)."""
    _, g = ink_groups(ds)
    if config.group == "all":
        return "all test digits", np.ones(len(ds.test), np.float32)
    name = "light-ink (majority)" if config.group == "light-ink" else "heavy-ink (minority)"
    return name, g[name].astype(np.float32)


def ranking_seed(config: InfluenceRankingStudy, seed: int) -> dict:
    """One seed: the fraction of flipped labels among each ranking's top ``config.top`` and each ranking's AUROC
    for the flipped points (float64 inside ``jax.enable_x64`` when ``config.float64``); the rankings are
    :func:`ranking_scores`' (signed: the points whose up-weighting raises the quantity first) and the magnitudes
    ``abs(IF-Calib)`` and ``abs(IF-Norm)``."""
    from repair_jax.data import load_dataset
    from repair_jax.influence.evaluate import noisy_label_auc
    from repair_jax.metrics import expected_calibration_error

    dtype = jnp.float64 if config.float64 else None
    with jax.enable_x64(bool(config.float64)):
        ds = load_dataset(config.dataset, seed=seed, train_limit=config.train_limit)
        y_noisy, flipped = ranking_flips(config, ds, seed)
        loss, params, gnorm, train = fit_full_batch(ds, y_noisy, **fit_args(config.model), seed=seed, dtype=dtype)
        test = {"x": jnp.asarray(ds.test.x, dtype), "y": jnp.asarray(ds.test.y)}
        thr, _ = ink_groups(ds)
        group, mask = ranking_group(config, ds)
        scores, r = ranking_scores(config, loss, params, train, test, mask, ds.num_classes)
        # "the most influential" (Sec. 6.5) read as magnitude: abs(I) ranks points of either sign first
        scores.update({f"abs({m})": np.abs(scores[m]) for m in ("IF-Calib", "IF-Norm")})
        p = class_probs(loss, params, test["x"])
        ece = float(expected_calibration_error(p, test["y"], jnp.asarray(mask)))
    frac = {k: float(flipped[np.argsort(-v, kind="stable")[:config.top]].mean()) for k, v in scores.items()}
    return {"seed": seed, "n_train": len(ds.train), "flipped": int(flipped.sum()), "ink_threshold": thr,
            "group": group, "group_size": int(mask.sum()), "group_ece": ece, "fit_grad_norm": float(gnorm),
            "cg": r.summary(), "top_flipped_fraction": frac,
            "auroc": {k: noisy_label_auc(v, flipped) for k, v in scores.items()}}


def model_label(model: FullBatchModel) -> str:
    """``softmax regression`` or ``MLP [h1, ...]`` (with its activation where not ReLU), for titles."""
    if not model.hidden:
        return "softmax regression"
    return f"MLP {list(model.hidden)}" + (f" ({model.activation})" if model.activation not in (None, "relu") else "")


def ranking_table(config: InfluenceRankingStudy, summary: dict) -> str:
    lines = [f"Fraction of flipped labels among the top {config.top} training points "
             f"({config.fraction:.0%} flipped, {len(config.seeds)} seeds, {config.dataset}, {model_label(config.model)}; "
             f"random = {config.fraction:.2f})", "", "| method | mean | std |", "|---|---|---|"]
    lines += [f"| {m} | {s['mean']:.3f} | {s['std']:.3f} |" for m, s in summary.items()]
    return "\n".join(lines) + "\n"


def plot_ranking(path, config: InfluenceRankingStudy, summary: dict) -> None:
    from repair_jax.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(5, 3.4))
    names = list(summary)
    ax.bar(names, [summary[n]["mean"] for n in names], yerr=[summary[n]["std"] for n in names], capsize=4)
    ax.axhline(config.fraction, color="k", ls="--", lw=0.8, label="random")
    ax.set_ylabel(f"flipped fraction in top {config.top}")
    ax.set_title(f"{config.dataset}, {model_label(config.model)} (Fig. 6-3 analogue)", fontsize=9)
    ax.legend(fontsize=8)
    save_figure(fig, path)


@runner(InfluenceRankingStudy)
def run_influence_ranking(config: InfluenceRankingStudy, out: Path, *, force: bool = False,
                          progress: bool = True) -> dict:
    """The ranking study into ``out``: ranking.json, ranking.md, ranking.png."""
    out = Path(out)
    t0 = time.perf_counter()
    rows = [ranking_seed(config, seed) for seed in track(config.seeds, "InfluenceRankingStudy", progress)]
    summary = {m: {"mean": float(np.mean([r["top_flipped_fraction"][m] for r in rows])),
                   "std": float(np.std([r["top_flipped_fraction"][m] for r in rows]))}
               for m in rows[0]["top_flipped_fraction"]}
    write_json(out / "ranking.json", {
        "dataset": config.dataset, "model": f"{config.model.name} (L2 {config.model.l2:g})",
        "flip_fraction": config.fraction, "top": config.top, "seeds": len(config.seeds),
        "group": "heavy-ink test digits (mean intensity > 75th pct of train)", "summary": summary,
        "per_seed": rows, "seconds": time.perf_counter() - t0})
    text = ranking_table(config, summary)
    write_text(out / "ranking.md", text)
    plot_ranking(out / "ranking.png", config, summary)
    return {"summary": summary, "tables": text}


# ----------------------------------------------------------------------------- confusion removal (issue 17 Sec. 4)


def _repair_stats(loss, base_params, retrained, test: dict, pair, lambda1: float, lambda2: float) -> list[dict]:
    """Test accuracy and hard type1conf of each retrained model against the model fit on all points, with
    the WR study's thresholds (Zhong et al. 2022, Sec. 2.2.3; deterministic fits: no significance test)."""
    from repair_jax.repair.evaluation import evaluate_outputs
    from repair_jax.repair.verdict import within_thresholds
    from repair_jax.repair.weighted import Targets

    targets = Targets((tuple(pair),))
    ev = lambda p: evaluate_outputs(np.asarray(class_probs(loss, p, test["x"])), np.asarray(test["y"]), targets, False)
    base = ev(base_params)
    rows = []
    for p in retrained:
        e = ev(p)
        red = (base["target_error"] - e["target_error"]) / base["target_error"] if base["target_error"] > 0 else 0.0
        change = e["accuracy"] - base["accuracy"]
        rows.append({"accuracy": e["accuracy"], "type1conf": e["target_error"], "error_reduction": red,
                     "accuracy_change": change, "within_thresholds": within_thresholds(red, change, lambda1, lambda2)})
    return [{"accuracy": base["accuracy"], "type1conf": base["target_error"]}] + rows


def _pair_removal(config: ConfusionRemovalStudy, loss, params, train: dict, sel: dict, test: dict, pr: dict,
                  names) -> dict:
    """Influence on the soft type1conf of one pair on the selection split, the removal check there and the
    repair statistics on the test split."""
    from repair_jax.influence import confusion_quantity, influence_up, s_test
    from repair_jax.influence.loo import remove_top_k

    m = config.model
    q = jax.jit(confusion_quantity(loss, sel, pair=pr["classes"]))
    r = s_test(loss, params, train, q, method="cg", l2=m.l2, tol=config.cg_tol)
    scores = influence_up(loss, params, train, r.x)
    res = remove_top_k(loss, params, train, q, scores, config.ks, l2=m.l2, tol=1e-8, max_iter=m.max_iter)
    stats = _repair_stats(loss, res["base_params"], res["params"], test, pr["classes"], config.lambda1,
                          config.lambda2)
    return {"pair": [names[c] for c in pr["classes"]], "classes": pr["classes"], "soft_type1conf": res["base"],
            "cg": r.summary(), "k": res["k"].tolist(), "predicted": res["predicted"].tolist(),
            "actual": res["actual"].tolist(), "max_retrain_grad_norm": float(res["grad_norms"].max()),
            "test_all_points": stats[0], "test_removed": stats[1:]}


def confusion_removal(config: ConfusionRemovalStudy, dataset: str) -> dict:
    """The removal check on one data set (float64; call inside ``jax.enable_x64``): pairs, ranking and
    predicted / actual changes on the ``select_split``, repair statistics on the test split."""
    from repair_jax.data import load_dataset
    from repair_jax.metrics import soft_confusion_matrix, top_pairs, type1conf_matrix

    t0 = time.perf_counter()
    ds = load_dataset(dataset, seed=config.seed, train_limit=config.train_limit)
    loss, params, gnorm, train = fit_full_batch(ds, ds.train.y, **fit_args(config.model), seed=config.seed, tol=1e-8,
                                                dtype=jnp.float64)
    split = lambda s: {"x": jnp.asarray(s.x, jnp.float64), "y": jnp.asarray(s.y)}
    sel, test = split(ds.split(config.select_split)), split(ds.test)
    soft = type1conf_matrix(soft_confusion_matrix(sel["y"], class_probs(loss, params, sel["x"])))
    rows = [_pair_removal(config, loss, params, train, sel, test, pr, ds.class_names)
            for pr in top_pairs(soft, config.pairs)]
    p_all = np.concatenate([r["predicted"] for r in rows])
    a_all = np.concatenate([r["actual"] for r in rows])
    return {"dataset": dataset, "model": config.model.name, "l2": config.model.l2, "n_train": len(train["y"]),
            "fit_grad_norm": gnorm, "select_split": config.select_split,
            "retrain": "warm start from the parameters re-converged on all points, L-BFGS to gradient norm 1e-8",
            "pearson": pearson(p_all, a_all), "spearman": spearman(p_all, a_all),
            "seconds": time.perf_counter() - t0, "pairs": rows}


def confusion_removal_table(results: list[dict]) -> str:
    """Per (data set, pair, k): predicted / actual change of the selection split's soft type1conf, and the
    test split's hard type1conf and accuracy after the removal; then the correlations per data set."""
    table = ["| data set | pair | k | predicted change | actual change | test type1conf (all points -> removed) "
             "| test accuracy | error reduction | within lambda1/lambda2 |", "|---|---|---|---|---|---|---|---|---|"]
    for d in results:
        for r in d["pairs"]:
            b = r["test_all_points"]
            for k, p, a, t in zip(r["k"], r["predicted"], r["actual"], r["test_removed"]):
                table.append(f"| {d['dataset']} | {','.join(r['pair'])} | {k} | {p:+.5f} | {a:+.5f} | "
                             f"{b['type1conf']:.4f} -> {t['type1conf']:.4f} | {b['accuracy']:.4f} -> "
                             f"{t['accuracy']:.4f} | {t['error_reduction']:+.1%} | {t['within_thresholds']} |")
    table += ["", "| data set | n train | Pearson | Spearman | (pair, k) points |", "|---|---|---|---|---|"]
    table += [f"| {d['dataset']} | {d['n_train']} | {d['pearson']:.4f} | {d['spearman']:.4f} | "
              f"{sum(len(r['k']) for r in d['pairs'])} |" for d in results]
    return "\n".join(table) + "\n"


@runner(ConfusionRemovalStudy)
def run_confusion_removal(config: ConfusionRemovalStudy, out: Path, *, force: bool = False,
                          progress: bool = True) -> dict:
    """The confusion removal check into ``out``: confusion_removal.json and .md."""
    out = Path(out)
    with jax.enable_x64(True):
        results = [confusion_removal(config, d) for d in track(config.datasets, "ConfusionRemovalStudy", progress)]
    write_json(out / "confusion_removal.json", {"config": dataclasses.asdict(config), "results": results})
    text = confusion_removal_table(results)
    write_text(out / "confusion_removal.md", text)
    return {"results": results, "tables": text}
