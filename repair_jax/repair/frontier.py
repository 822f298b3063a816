"""w-os's whole accuracy/error trade-off against a finished WR study (a diagnostic; Zhong et al. 2022,
Sec. 3.4 and 4.4).

w-os needs no training, so its curve over a fine rho grid costs one forward pass. :func:`frontier`
answers "is there any rho at which w-os repairs the target?" on the reporting split against the study's
orig-ft baseline (mean over its seeds) with the study's lambda1 / lambda2 - a diagnostic, not a
selection: choosing rho from the reporting split's curve is tuning on that split.
:func:`select_on_fine_grid` answers the legitimate version: which rho the rules of Sec. 4.4
(``stats.select_rhos``, against the original model, on the study's selection split) choose on the fine
grid, and whether it is repaired on the reporting split (the one verdict of
:mod:`repair_jax.repair.verdict`).

:func:`study_frontier` writes ``STUDY/w_os_frontier.{json,png}``; :func:`all_pairs_frontier` asks the
same questions for every class pair of a single-label study (``STUDY/w_os_all_pairs.{json,md,png}``);
:func:`compare_table` puts finished all-pairs results side by side.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from repair_jax import metrics
from repair_jax.errors import UserError
from repair_jax.io import read_json, write_json, write_text
from repair_jax.repair.selection import compare_to_baseline, select_rhos
from repair_jax.repair.verdict import accuracy_loss_allowed, verdict, within_thresholds


def frontier_rhos(num: int) -> np.ndarray:
    """``num`` log-spaced rhos from 1e-3 to 1 (the last one, rho = 1, is the original model)."""
    if num < 2:
        raise UserError(f"the frontier needs at least 2 rhos, got {num}")
    return np.logspace(-3, 0, num)


def frontier(rows: list[dict], base_acc: float, base_err: float, lambda1: float, allowed_loss: float) -> dict:
    """Adds the changes vs orig-ft (``base_acc``, ``base_err``: its means) and the thresholds verdict
    (Zhong et al. 2022, Sec. 2.2.3) to each ``{rho, accuracy, target_error}`` row; returns the rows, the best row within
    the accuracy budget (largest error cut, then accuracy) and whether any row meets both thresholds."""
    for r in rows:
        r["error_reduction_vs_orig_ft"] = (base_err - r["target_error"]) / base_err if base_err > 0 else 0.0
        r["accuracy_change_vs_orig_ft"] = r["accuracy"] - base_acc
        r["within_thresholds"] = within_thresholds(r["error_reduction_vs_orig_ft"],
                                                   r["accuracy_change_vs_orig_ft"], lambda1, allowed_loss)
    inside = [r for r in rows if r["accuracy_change_vs_orig_ft"] >= -allowed_loss]
    best = max(inside, key=lambda r: (r["error_reduction_vs_orig_ft"], r["accuracy_change_vs_orig_ft"]),
               default=None)
    return {"rows": rows, "best_within_accuracy_budget": best,
            "any_rho_within_thresholds": any(r["within_thresholds"] for r in rows)}


def select_on_fine_grid(test_rows: list[dict], select_rows: list[dict], orig_select: dict,
                        base_accs: list[float], base_errs: list[float], lambda1: float,
                        allowed_loss: float) -> list[dict]:
    """The Sec. 4.4 choice on the selection split's ``select_rows`` (against the original model's
    ``orig_select`` accuracy / target_error), each chosen rho's reporting-split row (``test_rows``, after
    :func:`frontier`) with the tests against orig-ft's runs and the ``repaired`` verdict."""
    chosen = []
    for rho in select_rhos(select_rows, orig_select["accuracy"], orig_select["target_error"], lambda1):
        r = dict(next(x for x in test_rows if x["rho"] == rho))
        # w-os is deterministic: its one value against orig-ft's seed runs (one-sample test, as the study)
        r.update(compare_to_baseline([r["accuracy"]], [r["target_error"]], base_accs, base_errs,
                                     deterministic=True))
        r["verdict"] = verdict(r["error_reduction_vs_orig_ft"], r["accuracy_change_vs_orig_ft"],
                               r.get("err_p", 1.0), lambda1=lambda1, allowed_loss=allowed_loss)
        r["repaired"] = r["verdict"] == "yes"
        chosen.append(r)
    return chosen


def analyse(test_rows: list[dict], select_rows: list[dict], orig_select: dict, base_accs: list[float],
            base_errs: list[float], lambda1: float, allowed_loss: float, select_split: str) -> dict:
    """:func:`frontier` on the reporting split plus :func:`select_on_fine_grid` (``selected_on_<split>``)."""
    res = frontier(test_rows, float(np.mean(base_accs)), float(np.mean(base_errs)), lambda1, allowed_loss)
    res[f"selected_on_{select_split}"] = select_on_fine_grid(res["rows"], select_rows, orig_select, base_accs,
                                                             base_errs, lambda1, allowed_loss)
    return res


class StudyOutputs:
    """A finished study (``summary.json``, ``results.jsonl``) and the run it repaired, with the
    original model's output probabilities per split (one forward pass each, cached)."""

    def __init__(self, study: str | Path, run):
        from repair_jax.repair import Targets
        from repair_jax.repair.config import RepairConfig
        from repair_jax.repair.sweep import read_study_records

        self.path = Path(study)
        self.summary = read_json(self.path / "summary.json", "study summary")
        records = read_study_records(self.path)
        self.base = [r for r in records if r["method"] == "orig-ft"]
        self.orig = [r for r in records if r["method"] == "orig"]
        for name, rs in (("orig-ft", self.base), ("orig", self.orig)):
            if not rs:
                raise UserError(f"{self.path}/results.jsonl has no {name} run")
        self.run, self.dataset = run, run.dataset()
        if self.dataset.name != self.summary["dataset"]:
            raise UserError(f"the run is on {self.dataset.name}, the study on {self.summary['dataset']}")
        self.targets = Targets(tuple(tuple(g) for g in self.summary["targets"]["groups"]))
        c = self.summary["config"]
        self.cfg = RepairConfig(lambda1=c["lambda1"], lambda2=c["lambda2"],
                                lambda2_relative=c.get("lambda2_relative", False))
        self.base_accs = [r["accuracy"] for r in self.base]
        self.allowed = accuracy_loss_allowed(self.cfg.lambda2, float(np.mean(self.base_accs)),
                                             self.cfg.lambda2_relative)
        self.select_split, self.eval_split = self.summary["select_split"], self.summary["eval_split"]
        self._probs: dict = {}

    def probs(self, split: str) -> np.ndarray:
        if split not in self._probs:
            from repair_jax.repair.evaluation import output_probabilities
            from repair_jax.train import predict

            logits = predict(self.run.state(), self.dataset.split(split).x)[0]
            self._probs[split] = output_probabilities(logits, self.dataset.multilabel)
        return self._probs[split]

    def tradeoff(self, split: str, targets, rhos) -> list[dict]:
        from repair_jax.repair import w_os_tradeoff

        return w_os_tradeoff(self.probs(split), self.dataset.split(split).y, targets, rhos,
                             self.dataset.multilabel)


def study_frontier(study: StudyOutputs, rhos) -> dict:
    """The study's target: :func:`analyse` on its splits; writes ``w_os_frontier.{json,png}``."""
    s, base_errs = study, [r["target_error"] for r in study.base]
    res = analyse(s.tradeoff(s.eval_split, s.targets, rhos), s.tradeoff(s.select_split, s.targets, rhos),
                  {"accuracy": s.orig[0]["select_accuracy"], "target_error": s.orig[0]["select_target_error"]},
                  s.base_accs, base_errs, s.cfg.lambda1, s.allowed, s.select_split)
    base_acc, base_err = float(np.mean(s.base_accs)), float(np.mean(base_errs))
    res.update(study=str(s.path), run=str(s.run.path), split=s.eval_split, targets=s.summary["target_names"],
               error_kind=s.summary["error_kind"],
               orig_ft={"accuracy": base_acc, "target_error": base_err, "seeds": len(s.base)},
               lambda1=s.cfg.lambda1, lambda2=s.cfg.lambda2, lambda2_relative=s.cfg.lambda2_relative,
               note="diagnostic on the reporting split: choosing rho from it is tuning on that split")
    write_json(s.path / "w_os_frontier.json", res)
    _plot_frontier(s, res, rhos)
    return res


def _plot_frontier(s: StudyOutputs, res: dict, rhos) -> None:
    from repair_jax.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(5.5, 4))
    red = [100 * r["error_reduction_vs_orig_ft"] for r in res["rows"]]
    loss = [-100 * r["accuracy_change_vs_orig_ft"] for r in res["rows"]]
    sc = ax.scatter(loss, red, c=np.log10(rhos), cmap="viridis", s=14)
    fig.colorbar(sc, ax=ax, label="log10 rho")
    ax.axhline(100 * s.cfg.lambda1, color="grey", ls="--", lw=0.8)
    ax.axvline(100 * s.allowed, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("accuracy loss vs orig-ft (points)")
    ax.set_ylabel(f"{s.summary['error_kind']} reduction vs orig-ft (%)")
    ax.set_title(f"w-os on {s.summary['target_names']} ({s.eval_split})", fontsize=9)
    save_figure(fig, s.path / "w_os_frontier.png")


def pair_entry(s: StudyOutputs, pair: tuple[int, int], base_mats: list, rhos) -> dict:
    """:func:`analyse` for one class pair: orig-ft's errors from its runs' confusion matrices
    (``base_mats``: type1conf matrices), the original model's selection numbers from rho = 1."""
    from repair_jax.repair import Targets
    from repair_jax.repair.evaluation import target_error

    t, sel = Targets((pair,)), s.select_split
    base_errs = [target_error(m, t) for m in base_mats]
    sel_rows = s.tradeoff(sel, t, rhos)  # its last row, rho = 1, is the original model
    res = analyse(s.tradeoff(s.eval_split, t, rhos), sel_rows, sel_rows[-1], s.base_accs, base_errs,
                  s.cfg.lambda1, s.allowed, sel)
    i, j = pair
    names = s.dataset.class_names
    return {"pair": [i, j], "names": [names[i], names[j]], "orig_ft_target_error": float(np.mean(base_errs)),
            "best_within_accuracy_budget": res["best_within_accuracy_budget"],
            "any_rho_within_thresholds": res["any_rho_within_thresholds"],
            f"selected_on_{sel}": res[f"selected_on_{sel}"],
            "repaired": any(r["repaired"] for r in res[f"selected_on_{sel}"])}


def all_pairs_frontier(s: StudyOutputs, rhos, progress: bool = True) -> dict:
    """:func:`pair_entry` for every class pair of a single-label study, most confused first; writes
    ``w_os_all_pairs.{json,md,png}`` into the study."""
    from repair_jax.progress import track

    if s.dataset.multilabel:
        raise UserError("the all-pairs frontier needs a single-label study (type1conf pairs)")
    base_mats = [np.asarray(metrics.type1conf_matrix(np.asarray(r["confusion_matrix"]))) for r in s.base]
    k = s.dataset.num_classes
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    entries = [pair_entry(s, p, base_mats, rhos) for p in track(pairs, "pairs", enabled=progress, leave=False)]
    entries.sort(key=lambda e: -e["orig_ft_target_error"])
    res = {"study": str(s.path), "split": s.eval_split, "select_split": s.select_split, "error_kind": "type1conf",
           "orig_ft": {"accuracy": float(np.mean(s.base_accs)), "seeds": len(s.base)}, "lambda1": s.cfg.lambda1,
           "accuracy_loss_allowed": s.allowed, "rhos": [float(r) for r in rhos], "pairs": entries,
           "note": "best_within_accuracy_budget / any_rho_within_thresholds read the reporting split (a "
                   "diagnostic); selected_on_<select_split> is the Sec. 4.4 choice on the fine grid"}
    write_json(s.path / "w_os_all_pairs.json", res)
    write_text(s.path / "w_os_all_pairs.md", all_pairs_markdown(s, entries, len(rhos)))
    _plot_all_pairs(s, entries)
    return res


def _pct(r: dict | None) -> str:
    return (f"{-100 * r['error_reduction_vs_orig_ft']:+.1f}% at {100 * r['accuracy_change_vs_orig_ft']:+.2f} pt "
            f"(rho {r['rho']:.3g})") if r else "none"


def all_pairs_markdown(s: StudyOutputs, entries: list[dict], num: int) -> str:
    ev, sel = s.eval_split, s.select_split
    lines = [f"w-os on every pair of {s.summary['dataset']} ({ev} split, orig-ft mean over {len(s.base)} seeds; "
             f"thresholds: error -{100 * s.cfg.lambda1:.0f}%, accuracy loss <= {100 * s.allowed:.2f} pt; "
             f"{num} log-spaced rhos in [1e-3, 1])", "",
             f"| pair | orig-ft type1conf | {ev} curve: best error cut within the budget | {ev} curve: any rho within "
             f"both thresholds | Sec. 4.4 on {sel}: rho -> {ev} | repaired |", "|---|---|---|---|---|---|"]
    for e in entries:
        chosen = e[f"selected_on_{sel}"]
        lines.append(f"| {e['names'][0]} / {e['names'][1]} | {e['orig_ft_target_error']:.4f} | "
                     f"{_pct(e['best_within_accuracy_budget'])} | {'yes' if e['any_rho_within_thresholds'] else 'no'} | "
                     f"{_pct(chosen[0]) if chosen else 'none'} | {'yes' if e['repaired'] else 'no'} |")
    return "\n".join(lines) + "\n"


def _plot_all_pairs(s: StudyOutputs, entries: list[dict]) -> None:
    from repair_jax.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    shown = [e for e in entries if e["orig_ft_target_error"] > 0 and e["best_within_accuracy_budget"]]
    cut = lambda e: 100 * e["best_within_accuracy_budget"]["error_reduction_vs_orig_ft"]
    for rep, style in ((False, dict(facecolors="none", edgecolors="tab:blue")), (True, dict(color="tab:red"))):
        pts = [e for e in shown if e["repaired"] == rep]
        ax.scatter([e["orig_ft_target_error"] for e in pts], [cut(e) for e in pts], s=22,
                   label=f"repaired with rho chosen on {s.select_split}" if rep else "not repaired", **style)
    for e in shown[:6]:
        ax.annotate(" / ".join(e["names"]), (e["orig_ft_target_error"], cut(e)), fontsize=6,
                    xytext=(3, 3), textcoords="offset points")
    ax.axhline(100 * s.cfg.lambda1, color="grey", ls="--", lw=0.8)
    if shown:  # a log axis needs a positive value
        ax.set_xscale("log")
    ax.set_xlabel(f"orig-ft type1conf of the pair ({s.eval_split})")
    ax.set_ylabel(f"best cut within {100 * s.allowed:.2f} pt ({s.eval_split} curve, %)")
    ax.set_title(f"w-os on every confused pair of {s.summary['dataset']}", fontsize=9)
    ax.legend(fontsize=7)
    save_figure(fig, s.path / "w_os_all_pairs.png")


def compare_table(studies: list[tuple[str, str | Path]], top: int = 5) -> str:
    """Markdown: one row per pair in the union of each study's ``top`` most confused pairs; each cell the
    pair's confusion rank and orig-ft type1conf in that (label, study directory) and whether the Sec. 4.4
    fine-grid choice repairs it (reads each study's ``w_os_all_pairs.json``)."""
    loaded = []
    for label, path in studies:
        res = read_json(Path(path) / "w_os_all_pairs.json", f"{path}: all-pairs frontier result")
        loaded.append((label, {" / ".join(e["names"]): (i, e) for i, e in enumerate(res["pairs"])}, res["pairs"]))
    order: list[str] = []
    for _, _, pairs in loaded:
        order += [n for n in (" / ".join(e["names"]) for e in pairs[:top]) if n not in order]
    lines = ["| pair | " + " | ".join(label for label, _, _ in loaded) + " |", "|---|" + "---|" * len(loaded)]
    for name in order:
        cells = []
        for _, by_name, _ in loaded:
            i, e = by_name[name]
            cells.append(f"#{i + 1}, {e['orig_ft_target_error']:.3f}: " + ("**yes**" if e["repaired"] else "no"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| pairs repaired / pairs with any confusion | " + " | ".join(
        f"{sum(e['repaired'] for e in pairs)} / {sum(e['orig_ft_target_error'] > 0 for e in pairs)}"
        for _, _, pairs in loaded) + " |")
    return "\n".join(lines)
