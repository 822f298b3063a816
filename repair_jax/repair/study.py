"""The repair study of 000_92ecc981581ec3ed.txt Sec. 4.3-4.4 over one trained model and one target.

Phases (every run is one line of ``results.jsonl``, keyed by (method, rho, seed); re-running skips
finished keys, so a kill loses at most the run in progress):

1. ``orig`` and ``orig-ft`` (seed 0);
2. grid: every fine-tuned WR method at each rho of the grid (seed 0); w-os over the grid, then
   0.01, 0.001, 0.0001 in turn while no value has reduced the error by lambda1 relative to orig-ft;
3. selection of rho per method by the rules of Sec. 4.4 on the *validation* split
   (:func:`repair_jax.repair.stats.select_rhos`);
4. the selected settings and orig-ft with seeds 0..S-1 (the seed sets the fine-tuning data order);
   ``orig`` and ``w-os`` are deterministic and run once (their value stands for every seed in the tests).

Reported numbers are on the *test* split. ``summary.json`` holds means, stds, ranks, rank sums and
the tests against orig-ft; ``table.md`` the Table 2-like table; PNGs the plots.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from repair_jax import metrics
from repair_jax.data import Dataset, class_subset_batches, shuffled_batches, weighted_batches
from repair_jax.errors import UserError
from repair_jax.io import append_jsonl, read_jsonl, write_json, write_text
from repair_jax.models import has_batch_norm
from repair_jax.repair import stats
from repair_jax.repair.weighted import (
    FINE_TUNED, METHODS, RHO_GRID, W_OS_EXTRA_RHOS, Targets, check_rho,
    weighted_augmentation_class_weights, weighted_batch_norm_objective, weighted_dbr_objective,
    weighted_loss_objective, weighted_output_smoothing,
)
from repair_jax.train import (
    TrainConfig, create_train_state, erm_objective, fit, make_optimizer, predict,
)


@dataclasses.dataclass
class RepairConfig:
    """The fine-tuning schedule shared by orig-ft and every WR method, and the study's options."""

    epochs: int = 5
    lr: float = 1e-4
    batch_size: int = 64
    optimizer: str = "adam"
    schedule: str = "constant"
    l2: float = 0.0
    seeds: int = 5
    methods: tuple[str, ...] = METHODS
    rhos: tuple[float, ...] = RHO_GRID
    lambda1: float = 0.25   # error reduction that counts as a repair (000 Sec. 2.2.3)
    lambda2: float = 0.01   # accuracy loss allowed for the "repaired" verdict: absolute (1 point) ...
    lambda2_relative: bool = False  # ... or, if True, a fraction of orig-ft's accuracy (000 Sec. 2.2.3)
    select_split: str = "val"
    eval_split: str = "test"

    def validate(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise UserError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
        if self.seeds < 1:
            raise UserError(f"seeds must be >= 1, got {self.seeds}")
        if not self.rhos:
            raise UserError("the rho grid is empty")
        for r in self.rhos:
            check_rho(r)
        if not 0 <= self.lambda1 <= 1 or not 0 <= self.lambda2 <= 1:
            raise UserError("lambda1 and lambda2 must lie in [0, 1]")
        self.train_config(0).validate()

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, optimizer=self.optimizer,
                           lr=self.lr, schedule=self.schedule, l2=self.l2, seed=seed)


# ----------------------------------------------------------------------------- evaluation

def error_kind(targets: Targets, multilabel: bool) -> str:
    if targets.kind == "bias":
        return "cd"
    return "type2conf" if multilabel else "type1conf"


def target_error(err_matrix, targets: Targets) -> float:
    """Mean over the pairs of their confusion, or mean over the triplets of their cd (000 Sec. 2.2)."""
    err = np.asarray(err_matrix)
    vals = [err[g[0], g[1]] if len(g) == 2 else float(metrics.confusion_disparity(err, *g))
            for g in targets.groups]
    return float(np.mean(vals))


def evaluate_outputs(scores: np.ndarray, y: np.ndarray, targets: Targets, multilabel: bool) -> dict:
    """Accuracy (mAP for multi-label), target error and the confusion matrix of one prediction set.

    ``scores``: softmax probabilities (N, K) or sigmoid probabilities (multi-label; predicted =
    p > 0.5). Multi-label ``confusion_matrix`` is the type2conf matrix.
    """
    k = scores.shape[1]
    if multilabel:
        pred = (scores > 0.5).astype(np.int32)
        cm = np.asarray(metrics.type2conf_matrix(y, pred))
        err = cm
        acc = float(metrics.mean_average_precision(jnp.asarray(y), jnp.asarray(scores)))
    else:
        cm = np.asarray(metrics.confusion_matrix(jnp.asarray(y), jnp.asarray(scores.argmax(1)), k))
        err = np.asarray(metrics.type1conf_matrix(cm))
        acc = float(np.trace(cm) / max(cm.sum(), 1))
    return {"accuracy": acc, "target_error": target_error(err, targets),
            "error_kind": error_kind(targets, multilabel), "confusion_matrix": cm}


def output_probabilities(logits: np.ndarray, multilabel: bool) -> np.ndarray:
    return np.asarray(jax.nn.sigmoid(logits) if multilabel else jax.nn.softmax(logits, axis=-1))


def w_os_tradeoff(probs: np.ndarray, y: np.ndarray, targets: Targets, rhos, multilabel: bool = False) -> list[dict]:
    """w-os (000 Sec. 3.4) over any set of rhos on one prediction set: ``[{rho, accuracy, target_error}]``.

    w-os needs no training, so its whole trade-off curve (Fig. 10) costs one forward pass. A diagnostic:
    picking rho from the curve of the split one reports on is tuning on that split.
    """
    rows = []
    for rho in rhos:
        ev = evaluate_outputs(np.asarray(weighted_output_smoothing(probs, targets, float(rho), multilabel)),
                              y, targets, multilabel)
        rows.append({"rho": float(rho), "accuracy": ev["accuracy"], "target_error": ev["target_error"]})
    return rows


# ----------------------------------------------------------------------------- one run

def fine_tune(method: str, rho: float | None, seed: int, model, variables: dict, dataset: Dataset,
              targets: Targets, cfg: RepairConfig, progress: bool = False):
    """Fine-tunes the base ``variables`` with ``method`` (orig-ft, w-aug, w-bn, w-loss, w-dbr); returns the state."""
    tc = cfg.train_config(seed)
    train = dataset.train
    bs = min(cfg.batch_size, len(train))
    n_batches = max(1, len(train) // bs)
    tx = make_optimizer(tc, cfg.epochs * n_batches)
    # a copy: the jitted step donates its input state, and the base weights serve every run
    state = create_train_state(model, jax.tree_util.tree_map(jnp.array, variables), tx)
    ml, k = dataset.multilabel, dataset.num_classes
    rho_arr = np.float32(1.0 if rho is None else rho)
    with_rho = lambda idx: {**train.batch(idx), "rho": rho_arr}
    batch_indices, make_batch = None, with_rho
    if method == "orig-ft":
        objective = functools.partial(erm_objective, multilabel=ml, l2=cfg.l2)
        make_batch = train.batch
    elif method == "w-aug":
        objective = functools.partial(erm_objective, multilabel=ml, l2=cfg.l2)
        cw = weighted_augmentation_class_weights(targets, k, rho)
        batch_indices = lambda rng: weighted_batches(train.y, cw, bs, n_batches, rng)
        make_batch = train.batch
    elif method == "w-bn":
        if not has_batch_norm(variables):
            raise UserError("w-bn needs a model with BatchNorm layers (000 Sec. 3.3.3); "
                            "this model has none - use e.g. --model cnn")
        objective = functools.partial(weighted_batch_norm_objective, multilabel=ml, l2=cfg.l2)
        tlabels = train.y
        in_targets = (np.isin(tlabels, targets.classes) if not ml
                      else np.asarray(tlabels)[:, list(targets.classes)].sum(1) > 0)
        if not np.any(in_targets):
            raise UserError("w-bn needs training examples of the target classes; the training split has none")
        batch_indices = lambda rng: zip(
            shuffled_batches(len(train), bs, rng),
            class_subset_batches(tlabels, targets.classes, k, bs, n_batches, rng))
        make_batch = lambda pair: {**train.batch(pair[0]), "x_target": train.x[pair[1]], "rho": rho_arr}
    elif method == "w-loss":
        objective = functools.partial(weighted_loss_objective, targets=targets, multilabel=ml, l2=cfg.l2)
    elif method == "w-dbr":
        objective = functools.partial(weighted_dbr_objective, targets=targets, num_classes=k,
                                      multilabel=ml, l2=cfg.l2)
    else:
        raise UserError(f"{method!r} is not a fine-tuning method")
    state, _ = fit(state, dataset, tc, objective=objective, progress=progress, epochs=cfg.epochs,
                   batch_indices=batch_indices, make_batch=make_batch)
    return state


def _record(method, rho, seed, evals: dict, wall: float, targets: Targets) -> dict:
    test, sel = evals["eval"], evals["select"]
    return {"method": method, "rho": rho, "seed": seed, "accuracy": test["accuracy"],
            "target_error": test["target_error"], "error_kind": test["error_kind"],
            "confusion_matrix": test["confusion_matrix"], "select_accuracy": sel["accuracy"],
            "select_target_error": sel["target_error"], "wall_time": wall, "targets": targets.to_json()}


def run_one(method: str, rho: float | None, seed: int, model, variables: dict, dataset: Dataset,
            targets: Targets, cfg: RepairConfig, base_logits: dict | None = None) -> dict:
    """One run -> its results.jsonl record (test numbers, plus ``select_*`` on the selection split)."""
    t0 = time.perf_counter()
    ml = dataset.multilabel
    splits = {"eval": dataset.split(cfg.eval_split), "select": dataset.split(cfg.select_split)}
    if method in ("orig", "w-os"):
        state = create_train_state(model, variables, optax.identity())
    else:
        state = fine_tune(method, rho, seed, model, variables, dataset, targets, cfg)
    evals = {}
    for name, sp in splits.items():
        if base_logits is not None and method in ("orig", "w-os"):
            logits = base_logits[name]
        else:
            logits, _ = predict(state, sp.x)
        probs = output_probabilities(logits, ml)
        if method == "w-os":
            probs = np.asarray(weighted_output_smoothing(probs, targets, rho, ml))
        evals[name] = evaluate_outputs(probs, sp.y, targets, ml)
    return _record(method, rho, seed, evals, time.perf_counter() - t0, targets)


# ----------------------------------------------------------------------------- the sweep

def _key(method, rho, seed):
    return (method, None if rho is None else round(float(rho), 6), int(seed))


def run_study(model, variables: dict, dataset: Dataset, targets: Targets, out: str | Path,
              cfg: RepairConfig | None = None, progress: bool = True, plots: bool = True) -> dict:
    """Runs (or resumes) the whole study into ``out``; returns the summary (also ``summary.json``)."""
    cfg = cfg or RepairConfig()
    cfg.validate()
    targets.validate(dataset.num_classes)
    for m in cfg.methods:
        if m == "w-bn" and not has_batch_norm(variables):
            raise UserError("w-bn needs a model with BatchNorm layers (000 Sec. 3.3.3); this model has "
                            "none - drop w-bn from --methods or use a BatchNorm model (e.g. cnn)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.jsonl"
    done = {_key(r["method"], r["rho"], r["seed"]): r for r in read_jsonl(results_path)}
    base_state = create_train_state(model, variables, optax.identity())
    base_logits = {n: predict(base_state, dataset.split(s).x)[0]
                   for n, s in (("eval", cfg.eval_split), ("select", cfg.select_split))}
    bar = tqdm(total=0, desc="repair runs", disable=None if progress else True)

    def get(method, rho, seed):
        key = _key(method, rho, seed)
        if key not in done:
            rec = run_one(method, rho, seed, model, variables, dataset, targets, cfg, base_logits)
            append_jsonl(results_path, rec)
            done[key] = rec
        bar.update(1)
        return done[key]

    methods = list(cfg.methods)
    wr_ft = [m for m in methods if m in FINE_TUNED and m != "orig-ft"]
    bar.total = 2 + len(wr_ft) * len(cfg.rhos) + ("w-os" in methods) * len(cfg.rhos)
    bar.refresh()
    orig = get("orig", None, 0)
    ft0 = get("orig-ft", None, 0)
    grid: dict[str, list[dict]] = {}
    for m in wr_ft:
        grid[m] = [get(m, rho, 0) for rho in cfg.rhos]
    if "w-os" in methods:
        grid["w-os"] = [get("w-os", rho, 0) for rho in cfg.rhos]
        goal = (1 - cfg.lambda1) * ft0["select_target_error"]
        for rho in W_OS_EXTRA_RHOS:
            if any(r["select_target_error"] <= goal for r in grid["w-os"]):
                break
            bar.total += 1
            grid["w-os"].append(get("w-os", rho, 0))
    # selection on the selection split (Sec. 4.4)
    selected: dict[str, list[float]] = {}
    for m, rows in grid.items():
        sel_rows = [{"rho": r["rho"], "accuracy": r["select_accuracy"],
                     "target_error": r["select_target_error"]} for r in rows]
        selected[m] = stats.select_rhos(sel_rows, orig["select_accuracy"], orig["select_target_error"],
                                        cfg.lambda1)
    seeds = list(range(cfg.seeds))
    final: list[tuple[str, float | None]] = [("orig", None), ("orig-ft", None)]
    final += [(m, rho) for m in grid for rho in selected[m]]
    bar.total += (cfg.seeds - 1) * sum(1 for m, _ in final if m in FINE_TUNED)
    bar.refresh()
    runs: dict[tuple, list[dict]] = {}
    for m, rho in final:
        runs[(m, rho)] = [get(m, rho, s) for s in (seeds if m in FINE_TUNED else [0])]
    bar.close()
    summary = summarize_study(runs, grid, selected, targets, dataset, cfg)
    write_json(out / "summary.json", summary)
    write_text(out / "table.md", format_table(summary))
    if plots:
        plot_study(out, runs, grid, targets, dataset, summary)
    return summary


def accuracy_loss_allowed(cfg: RepairConfig, orig_ft_accuracy: float) -> float:
    """lambda2 as an accuracy difference: absolute, or (``lambda2_relative``) a fraction of orig-ft's
    mean accuracy - 000 Sec. 2.2.3 states "1% of the original accuracy"; the default is 1 point."""
    return cfg.lambda2 * orig_ft_accuracy if cfg.lambda2_relative else cfg.lambda2


def summarize_study(runs: dict, grid: dict, selected: dict, targets: Targets, dataset: Dataset,
                    cfg: RepairConfig) -> dict:
    """Means/stds, ranks and rank sums (Sec. 4.3.1), tests vs orig-ft (Sec. 4.3.2), repaired verdicts."""
    n = cfg.seeds
    rows = []
    base = runs[("orig-ft", None)]
    base_acc = [r["accuracy"] for r in base]
    base_err = [r["target_error"] for r in base]
    allowed_loss = accuracy_loss_allowed(cfg, float(np.mean(base_acc)))
    for (m, rho), recs in runs.items():
        acc = [r["accuracy"] for r in recs]
        err = [r["target_error"] for r in recs]
        if m not in FINE_TUNED:  # deterministic: its single value stands for every seed
            acc, err = acc * n, err * n
        row = {"method": m, "rho": rho, "label": m if rho is None else f"{m}({rho:g})",
               "runs": len(recs), "accuracy_mean": float(np.mean(acc)), "accuracy_std": float(np.std(acc)),
               "error_mean": float(np.mean(err)), "error_std": float(np.std(err)),
               "deterministic": m not in FINE_TUNED}
        if m not in ("orig", "orig-ft"):
            row.update(stats.compare_to_baseline(acc, err, base_acc, base_err))
            e0, a0 = float(np.mean(base_err)), float(np.mean(base_acc))
            row["error_reduction_vs_orig_ft"] = (e0 - row["error_mean"]) / e0 if e0 > 0 else 0.0
            row["accuracy_change_vs_orig_ft"] = row["accuracy_mean"] - a0
            row["repaired"] = bool(row["error_reduction_vs_orig_ft"] >= cfg.lambda1
                                   and row["accuracy_change_vs_orig_ft"] >= -allowed_loss
                                   and row.get("err_p", 1.0) < 0.05)
        rows.append(row)
    ra, re, rs = stats.rank_sum([r["accuracy_mean"] for r in rows], [r["error_mean"] for r in rows])
    for r, a, e, s in zip(rows, ra, re, rs):
        r.update(acc_rank=a, err_rank=e, rank_sum=s)
    names = dataset.class_names
    return {"dataset": dataset.name, "targets": targets.to_json(), "target_names": targets.label(names),
            "error_kind": error_kind(targets, dataset.multilabel),
            "accuracy_kind": "mAP" if dataset.multilabel else "accuracy", "config": dataclasses.asdict(cfg),
            "eval_split": cfg.eval_split, "select_split": cfg.select_split, "seeds": list(range(cfg.seeds)),
            "selected": {m: v for m, v in selected.items()},
            "grid": {m: [{"rho": r["rho"], "select_accuracy": r["select_accuracy"],
                          "select_target_error": r["select_target_error"], "accuracy": r["accuracy"],
                          "target_error": r["target_error"]} for r in rs_] for m, rs_ in grid.items()},
            "rows": rows, "stats_test": "scipy.stats.ranksums (Wilcoxon rank-sum, two-sided)",
            "a12_thresholds": list(stats.A12_THRESHOLDS)}


def _fmt_test(row, key):
    if f"{key}_p" not in row:
        return "", ""
    mag = row[f"{key}_a12_magnitude"][0]
    return f"{row[f'{key}_p']:.3f}", f"{row[f'{key}_a12']:.2f}({mag})"


def _loss_text(summary: dict) -> str:
    c = summary["config"]
    if c.get("lambda2_relative"):
        return f"{100 * c['lambda2']:g}% of orig-ft's {summary['accuracy_kind']}"
    return f"{100 * c['lambda2']:g} pt"


def format_table(summary: dict) -> str:
    """The Table 2 / Table 4-like Markdown table of a study summary."""
    c = summary["config"]
    acc_name = "mAP" if summary["accuracy_kind"] == "mAP" else "Accuracy"
    err_name = {"cd": "Bias (cd)", "type1conf": "Confusion", "type2conf": "Confusion (type2)"}[summary["error_kind"]]
    lines = [f"{summary['dataset']}, targets {summary['target_names']} ({summary['error_kind']}, "
             f"{summary['eval_split']} split; rho selected on {summary['select_split']}; "
             f"fine-tuned methods: mean ± std over seeds {summary['seeds']})", "",
             f"| Method | {acc_name} | {err_name} | Acc Rank | Err Rank | Rank Sum | Acc W | Acc VD | Err W | "
             f"Err VD | Err change vs orig-ft | Acc change vs orig-ft | repaired |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        pm = lambda m, s: f"{m:.4f}" if r["deterministic"] else f"{m:.4f} ± {s:.4f}"
        aw, avd = _fmt_test(r, "acc")
        ew, evd = _fmt_test(r, "err")
        if "error_reduction_vs_orig_ft" in r:
            ch = f"{-100 * r['error_reduction_vs_orig_ft']:+.1f}%"
            ach = f"{100 * r['accuracy_change_vs_orig_ft']:+.2f} pt"
            rep = "yes" if r["repaired"] else "no"
        else:
            ch = ach = rep = ""
        lines.append(f"| {r['label']} | {pm(r['accuracy_mean'], r['accuracy_std'])} | "
                     f"{pm(r['error_mean'], r['error_std'])} | {r['acc_rank']} | {r['err_rank']} | "
                     f"{r['rank_sum']} | {aw} | {avd} | {ew} | {evd} | {ch} | {ach} | {rep} |")
    lines += ["", "W: Wilcoxon rank-sum p vs orig-ft (scipy.stats.ranksums); VD: Vargha-Delaney A12 = "
              "P(method > orig-ft) with n/s/m/l magnitude; tests in the order of 000 Sec. 4.3.2 "
              f"(blank = not applied). repaired: error -{100 * c['lambda1']:g}% or more, accuracy loss <= "
              f"{_loss_text(summary)}, error p < 0.05."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- plots

def plot_study(out: Path, runs: dict, grid: dict, targets: Targets, dataset: Dataset, summary: dict) -> None:
    """Confusion matrices before/after, Fig. 9 (target -> other classes) and Fig. 10 (w-os trade-off)."""
    import matplotlib.pyplot as plt

    from repair_jax.plots import plot_confusion_matrix, save_figure

    names = dataset.class_names
    first = {k: v[0] for k, v in runs.items()}
    if not dataset.multilabel:
        for (m, rho), rec in first.items():
            label = m if rho is None else f"{m}({rho:g})"
            plot_confusion_matrix(np.asarray(rec["confusion_matrix"]), names,
                                  out / f"confusion_{label}.png", title=f"{label} (seed 0, test)")
    # Fig. 9: error from each target class to every other class (test, seed 0)
    tcls = list(targets.classes)
    fig, axes = plt.subplots(1, len(tcls), figsize=(4.5 * len(tcls), 3.5), squeeze=False)
    keys = list(first)
    width = 0.8 / len(keys)
    for ax, t in zip(axes[0], tcls):
        others = [c for c in range(dataset.num_classes) if c != t]
        for i, key in enumerate(keys):
            cm = np.asarray(first[key]["confusion_matrix"], float)
            if dataset.multilabel:
                vals = [cm[t, c] for c in others]
            else:
                vals = [cm[t, c] / max(cm[t].sum(), 1) for c in others]
            label = key[0] if key[1] is None else f"{key[0]}({key[1]:g})"
            ax.bar(np.arange(len(others)) + i * width, vals, width, label=label)
        ax.set_xticks(np.arange(len(others)) + 0.4, [names[c] for c in others], rotation=60, fontsize=7)
        ax.set_title(f"from {names[t]}")
        ax.set_ylabel("type2conf" if dataset.multilabel else "P(pred = other | true)")
    axes[0][-1].legend(fontsize=6)
    save_figure(fig, out / "target_to_other_confusion.png")
    # Fig. 10: w-os accuracy vs error over rho
    if "w-os" in grid:
        rows = sorted(grid["w-os"], key=lambda r: r["rho"])
        fig, ax = plt.subplots(figsize=(4.5, 3.5))
        ax.plot([r["target_error"] for r in rows], [r["accuracy"] for r in rows], "o-")
        for r in rows:
            ax.annotate(f"{r['rho']:g}", (r["target_error"], r["accuracy"]), fontsize=7)
        o = first[("orig", None)]
        ax.plot([o["target_error"]], [o["accuracy"]], "k*", label="orig")
        ax.set_xlabel(summary["error_kind"])
        ax.set_ylabel(summary["accuracy_kind"])
        ax.set_title("w-os trade-off over rho (test)")
        ax.legend(fontsize=7)
        save_figure(fig, out / "w_os_tradeoff.png")


def parse_targets(pair: str | None, triplet: str | None, pairs: str | None, dataset: Dataset,
                  triplets: str | None = None) -> Targets:
    """``--pair A,B`` | ``--triplet A,B,C`` | ``--pairs A,B;C,D`` | ``--triplets A,B,C;D,E,F`` (index or name)."""
    given = [s for s in (pair, triplet, pairs, triplets) if s]
    if len(given) != 1:
        raise UserError("give exactly one of --pair, --triplet, --pairs, --triplets")
    spec = given[0]
    size = 2 if (pair or pairs) else 3
    groups = []
    for part in spec.split(";"):
        items = [s.strip() for s in part.split(",")]
        if len(items) != size:
            raise UserError(f"{part!r} must name {size} classes separated by commas")
        groups.append(tuple(dataset.class_index(s) for s in items))
    if (pair or triplet) and len(groups) != 1:
        raise UserError("--pair/--triplet take one group; use --pairs/--triplets for several (A,B;C,D)")
    return Targets(tuple(groups))
