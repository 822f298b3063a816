"""The WR study's summary (Zhong et al. 2022, Sec. 4.3), its Table 2-like table and its plots.

Statistics are honest about deterministic methods and small seed counts:

* orig and w-os run once; their one value is compared with orig-ft's seed runs by a one-sample
  t-test (:func:`repair_jax.stats.one_sample_p`), never counted as several samples;
* with S seeds the rank-sum test of a fine-tuned method against orig-ft cannot go below
  :func:`repair_jax.stats.min_rank_sum_p` (S, S) (2 seeds: 0.121). When that is not below alpha = 0.05,
  :func:`summarize_study` warns (:class:`repair_jax.stats.InsufficientSeedsWarning`), records it in
  ``summary["significance"]``, and no fine-tuned method is called repaired: rows within the
  thresholds get the verdict ``untested``. The same holds for a deterministic method when orig-ft's
  runs allow no t-test (fewer than 2, or all equal).
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np

from repair_jax import stats
from repair_jax.data import Dataset
from repair_jax.repair.config import RepairConfig
from repair_jax.repair.evaluation import error_kind
from repair_jax.repair.methods import BASELINES, lookup
from repair_jax.repair.selection import ONE_SAMPLE_TEST, RANK_SUM_TEST, compare_to_baseline
from repair_jax.repair.verdict import verdict
from repair_jax.repair.weighted import Targets
from repair_jax.tables import markdown_table

ALPHA = 0.05


def significance(seeds: int, alpha: float = ALPHA) -> dict:
    """What the seed count allows: the smallest rank-sum p for S vs S runs and whether it is below alpha."""
    min_p = stats.min_rank_sum_p(seeds, seeds)
    return {"alpha": alpha, "seeds": seeds, "rank_sum_min_p": min_p, "rank_sum_attainable": min_p < alpha,
            "rank_sum_test": RANK_SUM_TEST, "deterministic_test": ONE_SAMPLE_TEST}


def _verdict(row: dict, lambda1: float, allowed_loss: float, sig: dict) -> str:
    """:func:`repair_jax.repair.verdict.verdict` of one row (``untested`` where no test was possible)."""
    if "err_test" not in row:  # error not lower than orig-ft's: nothing to test, not a repair
        return "no"
    testable = row["err_p"] is not None and (row["deterministic"] or sig["rank_sum_attainable"])
    return verdict(row["error_reduction_vs_orig_ft"], row["accuracy_change_vs_orig_ft"],
                   row["err_p"] if testable else None, lambda1=lambda1, allowed_loss=allowed_loss,
                   alpha=sig["alpha"])


def _row(name, rho, recs, deterministic: bool, base: list[dict], cfg: RepairConfig, sig: dict) -> dict:
    acc = [r["accuracy"] for r in recs]
    err = [r["target_error"] for r in recs]
    row = {"method": name, "rho": rho, "label": name if rho is None else f"{name}({rho:g})",
           "runs": len(recs), "accuracy_mean": float(np.mean(acc)), "accuracy_std": float(np.std(acc)),
           "error_mean": float(np.mean(err)), "error_std": float(np.std(err)), "deterministic": deterministic}
    if name in BASELINES:
        return row
    base_acc = [r["accuracy"] for r in base]
    base_err = [r["target_error"] for r in base]
    row.update(compare_to_baseline(acc, err, base_acc, base_err, deterministic=deterministic))
    e0, a0 = float(np.mean(base_err)), float(np.mean(base_acc))
    row["error_reduction_vs_orig_ft"] = (e0 - row["error_mean"]) / e0 if e0 > 0 else 0.0
    row["accuracy_change_vs_orig_ft"] = row["accuracy_mean"] - a0
    row["verdict"] = _verdict(row, cfg.lambda1, cfg.accuracy_loss_allowed(a0), sig)
    row["repaired"] = row["verdict"] == "yes"
    return row


def summarize_study(runs: dict, grid: dict, selected: dict, targets: Targets, dataset: Dataset,
                    cfg: RepairConfig) -> dict:
    """Means/stds, ranks and rank sums (Sec. 4.3.1), tests vs orig-ft (Sec. 4.3.2), repaired verdicts.

    ``runs``: ``{(method, rho): [record per seed]}`` (one record for a deterministic method).
    """
    sig = significance(cfg.seeds)
    if not sig["rank_sum_attainable"]:
        warnings.warn(f"with {cfg.seeds} seed(s) the rank-sum test against orig-ft cannot reach p < "
                      f"{sig['alpha']} (smallest possible p {sig['rank_sum_min_p']:.3f}): no fine-tuned method "
                      "can be called repaired; use more seeds", stats.InsufficientSeedsWarning, stacklevel=2)
    base = runs[("orig-ft", None)]
    rows = [_row(m, rho, recs, lookup(m).deterministic, base, cfg, sig)
            for (m, rho), recs in runs.items()]
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
            "rows": rows, "stats_test": RANK_SUM_TEST, "significance": sig,
            "a12_thresholds": list(stats.A12_THRESHOLDS)}


def _fmt_test(row, key):
    p = row.get(f"{key}_p", "absent")
    if p == "absent":
        return "", ""
    mark = " (t)" if row["deterministic"] else ""
    mag = row[f"{key}_a12_magnitude"][0]
    return ("—" if p is None else f"{p:.3f}{mark}"), f"{row[f'{key}_a12']:.2f}({mag})"


def _loss_text(summary: dict) -> str:
    c = summary["config"]
    if c.get("lambda2_relative"):
        return f"{100 * c['lambda2']:g}% of orig-ft's {summary['accuracy_kind']}"
    return f"{100 * c['lambda2']:g} pt"


def _table_row(r: dict) -> list:
    pm = lambda m, s: f"{m:.4f}" if r["deterministic"] else f"{m:.4f} ± {s:.4f}"
    aw, avd = _fmt_test(r, "acc")
    ew, evd = _fmt_test(r, "err")
    if "error_reduction_vs_orig_ft" in r:
        ch = f"{-100 * r['error_reduction_vs_orig_ft']:+.1f}%"
        ach = f"{100 * r['accuracy_change_vs_orig_ft']:+.2f} pt"
        rep = r.get("verdict", "yes" if r["repaired"] else "no")
    else:
        ch = ach = rep = ""
    return [r["label"], pm(r["accuracy_mean"], r["accuracy_std"]), pm(r["error_mean"], r["error_std"]),
            r["acc_rank"], r["err_rank"], r["rank_sum"], aw, avd, ew, evd, ch, ach, rep]


def _footnotes(summary: dict) -> list[str]:
    c, sig = summary["config"], summary.get("significance")
    notes = ["W: Wilcoxon rank-sum p vs orig-ft (scipy.stats.ranksums); for a deterministic method (one run, "
             "marked (t)) the p of a one-sample t-test of orig-ft's runs against its value (scipy.stats."
             "ttest_1samp; — = orig-ft's runs allow no test); VD: Vargha-Delaney A12 = P(method > orig-ft) "
             "with n/s/m/l magnitude; tests in the order of Zhong et al. 2022, Sec. 4.3.2 (blank = not applied). repaired: "
             f"error -{100 * c['lambda1']:g}% or more, accuracy loss <= {_loss_text(summary)}, error p < 0.05."]
    if sig and not sig["rank_sum_attainable"]:
        notes.append(f"With {sig['seeds']} seed(s) the rank-sum test cannot reach p < {sig['alpha']} (smallest "
                     f"possible p {sig['rank_sum_min_p']:.3f}): 'untested' = within the thresholds, significance "
                     "not testable; run more seeds.")
    return notes


def format_table(summary: dict) -> str:
    """The Table 2 / Table 4-like Markdown table of a study summary."""
    acc_name = "mAP" if summary["accuracy_kind"] == "mAP" else "Accuracy"
    err_name = {"cd": "Bias (cd)", "type1conf": "Confusion", "type2conf": "Confusion (type2)"}[summary["error_kind"]]
    title = (f"{summary['dataset']}, targets {summary['target_names']} ({summary['error_kind']}, "
             f"{summary['eval_split']} split; rho selected on {summary['select_split']}; "
             f"fine-tuned methods: mean ± std over seeds {summary['seeds']})")
    headers = ["Method", acc_name, err_name, "Acc Rank", "Err Rank", "Rank Sum", "Acc W", "Acc VD", "Err W",
               "Err VD", "Err change vs orig-ft", "Acc change vs orig-ft", "repaired"]
    table = markdown_table(headers, [_table_row(r) for r in summary["rows"]], _footnotes(summary))
    return f"{title}\n\n{table}\n"


# ----------------------------------------------------------------------------- plots

def plot_study(out: Path, runs: dict, grid: dict, targets: Targets, dataset: Dataset, summary: dict) -> None:
    """Confusion matrices before/after, Fig. 9 (target -> other classes) and Fig. 10 (w-os trade-off)."""
    from repair_jax.io import safe_filename
    from repair_jax.plots import plot_confusion_matrix, plt, save_figure

    names = dataset.class_names
    first = {k: v[0] for k, v in runs.items()}
    if not dataset.multilabel:
        for (m, rho), rec in first.items():
            label = m if rho is None else f"{m}({rho:g})"
            plot_confusion_matrix(np.asarray(rec["confusion_matrix"]), names,
                                  out / f"confusion_{safe_filename(label)}.png", title=f"{label} (seed 0, test)")
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

