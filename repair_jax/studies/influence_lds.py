"""Attribution quality as a config (issue 17 Part 1): the LDS, leave-one-out and noisy-label figures of
:mod:`repair_jax.influence.evaluate` for the attribution methods of ``LdsStudy.methods`` (any of
:data:`repair_jax.influence.evaluate.LDS_METHODS`, the registry :data:`repair_jax.influence.INFLUENCE_METHODS`)
on softmax regression and a one-hidden-layer MLP, on real digits and Fashion-MNIST (a stratified
training subset for CPU), registered with :func:`repair_jax.experiment.runner`.

Per (data set, model) cell, in float64: fit to convergence on the ``train_limit`` training points
(full-batch L-BFGS, :func:`repair_jax.influence.full_batch.fit_full_batch`); draw ``num_subsets`` subsets
of ``alpha`` of them; retrain on each (vmapped L-BFGS, warm-started from the fitted parameters: for the
non-convex MLP this measures the attribution around that solution, not over random initialisations as
TRAK's retraining from scratch does); record the losses of ``test_points`` test points. The damping of
every solver is ``relative_damping`` x the largest eigenvalue of the Hessian. LOO: ``loo_points`` random
training points removed one at a time (exact retraining, :func:`repair_jax.influence.evaluate.loo_changes`).
Noisy labels (a synthetic variant of the real data, named as such): ``noisy_fraction`` of the training
labels flipped to another class, refit, self-influence of ``self_influence_points`` random training points.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from repair_jax.errors import UserError, require_at_least
from repair_jax.experiment import run_cells, runner
from repair_jax.influence.evaluate import validate_lds_args
from repair_jax.studies.influence import FullBatchModel, fit_args
from repair_jax.io import write_json, write_text

FIT_TOL = LOO_TOL = 1e-8  # the gradient-norm tolerance of the full fits and of the leave-one-out retraining


@dataclasses.dataclass(frozen=True)
class LdsStudy:
    """LDS / LOO / noisy-label AUC of every attribution method (module docstring)."""

    datasets: tuple[str, ...] = ("digits", "fashion_mnist")
    # every fit converged (issue 29): the MLP smooth (softplus; a ReLU MLP's minimum sits on kinks where the
    # gradient norm does not fall, repair_jax.influence.full_batch) with room for its ~1,100 L-BFGS steps
    models: tuple[FullBatchModel, ...] = (FullBatchModel("logistic_regression", (), 1e-2, 500),
                                          FullBatchModel("mlp", (8,), 1e-2, 3000, "softplus"))
    methods: tuple[str, ...] = ("explicit", "cg", "lissa", "tracin", "trak", "ekfac")  # the committed study's
    train_limit: int = 300
    num_subsets: int = 40
    alpha: float = 0.5
    test_points: int = 40
    relative_damping: float = 0.01
    retrain_steps: int = 1000
    retrain_tol: float = 1e-6
    loo_points: int = 10
    noisy_fraction: float = 0.1
    self_influence_points: int = 60
    lissa_tol: float = 1e-3
    seed: int = 0

    def __post_init__(self):
        validate_lds_args(self.alpha, self.num_subsets, self.methods)
        for name in ("train_limit", "test_points", "retrain_steps", "loo_points", "self_influence_points"):
            require_at_least(name, getattr(self, name), 2)
        if not 0 < self.noisy_fraction < 1 or not self.relative_damping >= 0 or not self.retrain_tol > 0:
            raise UserError(f"noisy_fraction must lie in (0, 1), relative_damping be >= 0 and retrain_tol > 0, got "
                            f"{self.noisy_fraction}, {self.relative_damping}, {self.retrain_tol}")
        if not self.datasets or not self.models or not self.methods:
            raise UserError("the LDS study needs at least one data set, model and method")


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _cell_setup(config: LdsStudy, dataset: str, model: FullBatchModel, labels=None) -> dict:
    """Fit (float64) on the first ``train_limit`` points (``labels``: noisy training labels) and the damping."""
    from repair_jax.data import load_dataset
    from repair_jax.influence.full_batch import fit_full_batch
    from repair_jax.influence.hvp import damped_operator

    ds = load_dataset(dataset, seed=config.seed, train_limit=config.train_limit)
    y = ds.train.y if labels is None else labels
    loss, params, gnorm, train = fit_full_batch(ds, y, **fit_args(model), seed=config.seed, tol=FIT_TOL,
                                                dtype=jnp.float64)
    damping = damped_operator(loss, params, train, l2=model.l2, relative_damping=config.relative_damping)[2]
    t = min(config.test_points, len(ds.test))
    test = {"x": jnp.asarray(ds.test.x[:t], jnp.float64), "y": jnp.asarray(ds.test.y[:t])}
    return {"ds": ds, "loss": loss, "params": params, "fit_grad_norm": gnorm, "train": train, "test": test,
            "damping": float(damping)}


def _solver(config: LdsStudy, model: FullBatchModel, setup: dict, method: str) -> dict:
    """The options of ``method``'s scores: L2 and damping for every method; LiSSA's looser tolerance."""
    return dict(l2=model.l2, damping=setup["damping"], tol=config.lissa_tol if method == "lissa" else None)


def lds_cell(config: LdsStudy, dataset: str, model: FullBatchModel) -> dict:
    """One (data set, model): subsets, retraining, LOO, and per method its scores' LDS, LOO correlation,
    noisy-label AUC and wall times."""
    from repair_jax.influence import evaluate as ev

    s = _cell_setup(config, dataset, model)
    loss, params, train, test = s["loss"], s["params"], s["train"], s["test"]
    n = len(train["y"])
    rng = np.random.default_rng(config.seed)
    masks = ev.draw_subsets(n, config.num_subsets, config.alpha, config.seed)
    (xs, norms, unravel), retrain_s = _timed(lambda: ev.retrain_on_subsets(
        loss, params, train, masks, l2=model.l2, steps=config.retrain_steps, tol=config.retrain_tol))
    actual = ev.subset_outputs(loss, xs, unravel, test)
    removed = np.sort(rng.choice(n, config.loo_points, replace=False))
    (changes, loo_norms), loo_s = _timed(lambda: ev.loo_changes(loss, params, train, test, removed, l2=model.l2,
                                                               tol=LOO_TOL, max_iter=model.max_iter))
    noisy = _noisy_setup(config, dataset, model, s["ds"])
    methods = {}
    for method in config.methods:
        try:
            methods[method] = _method_figures(config, model, s, noisy, method, masks, actual, removed, changes)
        except UserError as e:  # a solver that failed on this model (e.g. diverged): recorded, shown as missing
            methods[method] = {"error": str(e)}
    return {"dataset": dataset, "model": model.name, "hidden": list(model.hidden), "l2": model.l2,
            "n_train": n, "params": int(jax.flatten_util.ravel_pytree(params)[0].size), "test_points": len(test["y"]),
            "activation": model.activation, "damping": s["damping"], "fit_grad_norm": s["fit_grad_norm"],
            "noisy_fit_grad_norm": noisy["fit_grad_norm"], "retrain_s": retrain_s,
            "retrain_max_grad_norm": float(norms.max()), "loo_s": loo_s, "loo_indices": removed.tolist(),
            "loo_max_grad_norm": float(loo_norms.max()), "noisy_flipped": int(noisy["flipped"].sum()),
            "actual": actual.tolist(), "methods": methods}


def _method_figures(config: LdsStudy, model: FullBatchModel, s: dict, noisy: dict, method: str, masks, actual,
                    removed, changes) -> dict:
    from repair_jax.influence import evaluate as ev

    scores, secs = _timed(lambda: ev.attribution_scores(method, s["loss"], s["params"], s["train"], s["test"],
                                                        **_solver(config, model, s, method)))
    predicted = ev.predicted_outputs(scores, masks)
    lds = ev.linear_datamodeling_score(predicted, actual)
    loo = ev.loo_correlation(scores, removed, changes)
    return {"lds": lds["mean"], "lds_per_test_point": lds["per_test_point"].tolist(),
            "loo_spearman_mean": loo["spearman_mean"], "loo_spearman_all": loo["spearman_all"],
            "loo_pearson_all": loo["pearson_all"], "scores_s": secs, **_noisy_method(config, model, noisy, method),
            "plot": {"predicted": predicted.tolist()}}


def _noisy_setup(config: LdsStudy, dataset: str, model: FullBatchModel, ds) -> dict:
    """The synthetic noisy-label variant: flipped training labels, the refit model, the sampled points."""
    from repair_jax.data import flip_labels

    n = min(config.train_limit, len(ds.train))
    y, flipped = flip_labels(ds.train.y[:n], config.noisy_fraction, ds.num_classes, config.seed + 1)
    setup = _cell_setup(config, dataset, model, labels=y)
    idx = np.sort(np.random.default_rng(config.seed + 2).choice(n, min(config.self_influence_points, n),
                                                                replace=False))
    return {**setup, "flipped": flipped, "indices": idx}


def _noisy_method(config: LdsStudy, model: FullBatchModel, noisy: dict, method: str) -> dict:
    from repair_jax.influence import evaluate as ev

    si, secs = _timed(lambda: ev.self_influence(method, noisy["loss"], noisy["params"], noisy["train"],
                                                noisy["indices"], **_solver(config, model, noisy, method)))
    flipped = noisy["flipped"][noisy["indices"]]
    return {"noisy_label_auc": ev.noisy_label_auc(si, flipped), "self_influence_s": secs}


def lds_table(cells: list[dict]) -> str:
    """One row per (data set, model, method): LDS, LOO Spearman, noisy-label AUC and the scores' wall time."""
    from repair_jax.tables import markdown_table

    keys = ("lds", "loo_spearman_mean", "loo_spearman_all", "noisy_label_auc", "scores_s")
    rows = [(c["dataset"], c["model"], c["params"], m, *(r.get(k) for k in keys))
            for c in cells for m, r in c["methods"].items()]
    notes = ["LDS: mean over test points of the Spearman correlation, over the subsets, of the summed scores and "
             "the retrained test loss. LOO: Spearman of -score/n and the exact leave-one-out change (mean per test "
             "point; all pairs). AUC: flipped labels (synthetic) ranked by self-influence. Time: the scores of all "
             "test points (s, including compilation). A missing cell: that solver failed (its error is in lds.json)."]
    return markdown_table(["data set", "model", "params", "method", "LDS", "LOO Spearman (per test point)",
                           "LOO Spearman (all)", "noisy-label AUC", "scores (s)"], rows, notes, "{:.3f}") + "\n"


def _standardised(a):
    a = np.asarray(a, np.float64)
    return (a - a.mean(0)) / np.where(a.std(0) > 0, a.std(0), 1.0)


def plot_lds(path, cells: list[dict]) -> None:
    """Predicted vs actual subset outputs, standardised per test point and pooled: one panel per
    (cell, method)."""
    from repair_jax.plots import plt, save_figure

    methods = list(cells[0]["methods"])
    fig, axes = plt.subplots(len(cells), len(methods), figsize=(2.6 * len(methods), 2.6 * len(cells)),
                             squeeze=False)
    for row, c in zip(axes, cells):
        actual = _standardised(c["actual"]).ravel()
        for ax, m in zip(row, methods):
            if "error" in c["methods"][m]:
                continue
            ax.scatter(actual, _standardised(c["methods"][m]["plot"]["predicted"]).ravel(), s=2, alpha=0.3)
            ax.set_title(f"{c['dataset']} {c['model']}\n{m}: LDS {c['methods'][m]['lds']:.2f}", fontsize=7)
            ax.tick_params(labelsize=6)
        row[0].set_ylabel("predicted (z-score)", fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("actual test loss (z-score)", fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


@runner(LdsStudy)
def run_lds(config: LdsStudy, out: Path, *, force: bool = False, progress: bool = True) -> dict:
    """The study into ``out``: cells.jsonl (resumable per cell), lds.json, lds.md, lds.png."""
    out = Path(out)
    models = {m.name: m for m in config.models}

    def run(cell) -> dict:
        record, secs = _timed(lambda: lds_cell(config, cell[0], models[cell[1]]))
        return {**record, "seconds": secs}

    with jax.enable_x64(True):
        cells = run_cells(out / "cells.jsonl", dataclasses.asdict(config),
                          [(d, m.name) for d in config.datasets for m in config.models], run,
                          key=lambda r: (r["dataset"], r["model"]), force=force, progress=progress, label="LdsStudy")
    write_json(out / "lds.json", {"config": dataclasses.asdict(config), "output": "test loss", "cells": cells})
    text = lds_table(cells)
    write_text(out / "lds.md", text)
    plot_lds(out / "lds.png", cells)
    return {"cells": len(cells), "tables": text}
