"""What Pradhan et al.'s (2020) Table 1 analogue says: does a robustness method lower balanced accuracy or F1 on the
imbalanced levels, and do the tail classes carry the loss?

Pradhan et al. 2020, Sec. 3 "Result" reads Table 1 by eye. Here every (model, method, level) cell
is compared with plain training on the same seeds, which share the imbalanced subset and the
initialisation, so the tests are paired (:func:`repair_jax.stats.paired_t_test_p`):

* :func:`versus_plain` - mean difference (method - plain) of a metric and its paired t-test p-value;
  ``lower`` is a significant decrease at ``alpha``.
* :func:`head_tail_recall` - per-class recall change (method - plain) averaged over the head classes
  (the larger half by training count) and over the tail (the smaller half); ``tail_carries_loss`` is a
  negative tail change significantly below the head change (paired over seeds).
* :func:`plot_recall_vs_class_size` - per-class recall against the class's training count.

Input: the records of :func:`repair_jax.studies.robustness.run_robustness_study` (``results.jsonl``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from repair_jax.stats import paired_t_test_p
from repair_jax.tables import markdown_table

PLAIN = "plain"


def _pairs(records: list[dict]) -> dict[tuple, list[tuple[dict, dict]]]:
    """(model, method, level) -> [(method record, plain record) per seed both have], method != plain."""
    by = {(r["model"], r["method"], r["level"], r["seed"]): r for r in records}
    out: dict[tuple, list] = {}
    for (model, method, level, seed), r in sorted(by.items()):
        base = by.get((model, PLAIN, level, seed))
        if method != PLAIN and base is not None:
            out.setdefault((model, method, level), []).append((r, base))
    return out


def versus_plain(records: list[dict], metrics=("balanced_accuracy", "macro_f1"), alpha: float = 0.05) -> list[dict]:
    """One row per (model, method, level, metric): mean difference to plain and the paired p-value."""
    rows = []
    for (model, method, level), pairs in _pairs(records).items():
        for metric in metrics:
            a = [r[metric] for r, _ in pairs]
            b = [p[metric] for _, p in pairs]
            diff, p = float(np.mean(a) - np.mean(b)), paired_t_test_p(a, b)
            rows.append({"model": model, "method": method, "level": level, "metric": metric,
                         "seeds": len(pairs), "difference": diff, "p": p,
                         "lower": bool(diff < 0 and p < alpha)})
    return rows


def _head_tail_change(r: dict, base: dict) -> tuple[float, float]:
    counts = np.asarray(base["train_counts"])
    order = np.argsort(counts, kind="stable")  # smallest first
    tail, head = order[: len(counts) // 2], order[len(counts) // 2:]
    change = np.asarray(r["recall"]) - np.asarray(base["recall"])
    return float(change[head].mean()), float(change[tail].mean())


def head_tail_recall(records: list[dict], alpha: float = 0.05) -> list[dict]:
    """Per imbalanced (model, method, level): mean recall change on head and tail classes vs plain."""
    rows = []
    for (model, method, level), pairs in _pairs(records).items():
        if len(set(pairs[0][1]["train_counts"])) == 1:  # balanced: no head and no tail
            continue
        head, tail = np.array([_head_tail_change(r, b) for r, b in pairs]).T
        p = paired_t_test_p(tail, head)
        rows.append({"model": model, "method": method, "level": level, "seeds": len(pairs),
                     "head_change": float(head.mean()), "tail_change": float(tail.mean()), "p": p,
                     "tail_carries_loss": bool(tail.mean() < 0 and tail.mean() < head.mean() and p < alpha)})
    return rows


def _p(p: float) -> str:
    return "n/a" if p != p else f"{p:.3f}"


def report_markdown(sig: list[dict], ht: list[dict], alpha: float = 0.05) -> str:
    """The two analyses (``sig``: :func:`versus_plain`'s rows, ``ht``: :func:`head_tail_recall`'s, both
    at ``alpha``) as Markdown tables, with a footnote on what the tests are."""
    rows = [[r["model"], r["method"], r["level"], r["metric"], f"{r['difference']:+.4f}", _p(r["p"]),
             "yes" if r["lower"] else "no"] for r in sig]
    t1 = markdown_table(["model", "method", "level", "metric", "method - plain", "p (paired t)",
                         f"lower at {alpha}"], rows,
                        footnotes=[f"Paired over {sig[0]['seeds'] if sig else 0} seeds (each seed: the same "
                                   "imbalanced subset and initialisation for every method)."])
    rows = [[r["model"], r["method"], r["level"], f"{r['head_change']:+.4f}", f"{r['tail_change']:+.4f}",
             _p(r["p"]), "yes" if r["tail_carries_loss"] else "no"] for r in ht]
    t2 = markdown_table(["model", "method", "level", "head recall change", "tail recall change",
                         "p (tail vs head, paired t)", "tail carries the loss"], rows,
                        footnotes=["Head: the larger half of the classes by training count; tail: the smaller "
                                   "half. Changes are method - plain, per-class recall averaged over the half."])
    return ("## Robustness method vs plain training\n\n" + t1 + "\n\n## Head and tail classes\n\n" + t2 + "\n")


def plot_recall_vs_class_size(records: list[dict], path: str | Path) -> None:
    """Per-class recall (mean over seeds) against training count, a panel per (model, imbalanced level)."""
    from matplotlib.ticker import NullFormatter

    from repair_jax.plots import plt, save_figure

    cells: dict[tuple, list[dict]] = {}
    for r in records:
        if len(set(r["train_counts"])) > 1:
            cells.setdefault((r["model"], r["level"], r["method"]), []).append(r)
    panels = sorted({(m, lv) for m, lv, _ in cells})
    models = sorted({m for m, _ in panels})
    levels = sorted({lv for _, lv in panels})
    fig, axes = plt.subplots(len(models), len(levels), figsize=(4.2 * len(levels), 3.4 * len(models)),
                             squeeze=False, sharey=True, layout="constrained")
    for (model, level, method), rs in sorted(cells.items()):
        ax = axes[models.index(model)][levels.index(level)]
        counts = np.mean([r["train_counts"] for r in rs], axis=0)
        recall = np.mean([r["recall"] for r in rs], axis=0)
        order = np.argsort(counts)
        ax.plot(counts[order], recall[order], marker="o", ms=3, lw=1, label=method)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # log-scale minor labels overlap on a short range
        ax.set_title(f"{model}, {level}", fontsize=9)
        ax.set_xlabel("training examples of the class")
    for row in axes:
        row[0].set_ylabel("test recall (mean over seeds)")
    axes[0][-1].legend(fontsize=7)
    save_figure(fig, path)
