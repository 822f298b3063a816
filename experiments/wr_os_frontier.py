"""w-os's whole accuracy/error trade-off on the test split of a finished WR study (diagnostic).

w-os (000_92ecc981581ec3ed.txt Sec. 3.4) needs no training, so its curve over a fine rho grid costs one
forward pass. This answers "is there any rho at which w-os repairs the target?" against the study's
orig-ft baseline (mean over its seeds) with the study's lambda1 / lambda2. It is a diagnostic, not a
selection: choosing rho from the test-split curve would be tuning on the test split (the study selects
on the validation split, Sec. 4.4).

It also answers the legitimate version of the question: if the fine grid replaced the paper's grid and
rho were chosen by the rules of Sec. 4.4 on the study's selection split (``stats.select_rhos`` against
the original model, as the study does), which rho would be chosen and how would it do on test
(``selected_on_<split>``, with the Wilcoxon test of the deterministic w-os value against orig-ft's runs)?

    python experiments/wr_os_frontier.py --study experiments/results/wr_fashion_mnist_full/pair \
        --run experiments/results/fashion_mnist_cnn/run
    -> STUDY/w_os_frontier.json (one row per rho; the best error cut within the accuracy budget) and
       STUDY/w_os_frontier.png

``--all-pairs`` asks the same two questions for every class pair of a single-label study instead of its
target (orig-ft's error on each pair comes from the confusion matrices its runs stored): a map of which
confusions output smoothing can cut by lambda1 within the accuracy budget on this model.

    -> STUDY/w_os_all_pairs.json (one entry per pair), w_os_all_pairs.md (table, most confused pair
       first) and w_os_all_pairs.png (each confused pair's best cut within the accuracy budget against
       its orig-ft confusion)

``--compare LABEL=STUDY ...`` prints those results side by side (the README's table).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from repair_jax.errors import UserError, exits_on_user_error, require_at_least


def frontier(rows: list[dict], base_acc: float, base_err: float, lambda1: float, allowed_loss: float) -> dict:
    """Adds the changes vs orig-ft to each row; returns the rows and the best row within the budget."""
    for r in rows:
        r["error_reduction_vs_orig_ft"] = (base_err - r["target_error"]) / base_err if base_err > 0 else 0.0
        r["accuracy_change_vs_orig_ft"] = r["accuracy"] - base_acc
        r["within_thresholds"] = bool(r["error_reduction_vs_orig_ft"] >= lambda1
                                      and r["accuracy_change_vs_orig_ft"] >= -allowed_loss)
    inside = [r for r in rows if r["accuracy_change_vs_orig_ft"] >= -allowed_loss]
    best = max(inside, key=lambda r: (r["error_reduction_vs_orig_ft"], r["accuracy_change_vs_orig_ft"])) if inside else None
    return {"rows": rows, "best_within_accuracy_budget": best,
            "any_rho_within_thresholds": any(r["within_thresholds"] for r in rows)}


def analyse(test_rows: list[dict], select_rows: list[dict], orig_select: dict, base_accs: list[float],
            base_errs: list[float], lambda1: float, allowed_loss: float, select_split: str) -> dict:
    """Frontier on the reporting split plus the Sec. 4.4 choice on the selection split (vs the original
    model's ``orig_select`` accuracy / target_error), tested against orig-ft's runs."""
    res = frontier(test_rows, float(np.mean(base_accs)), float(np.mean(base_errs)), lambda1, allowed_loss)
    from repair_jax.repair import stats

    chosen = []
    for rho in stats.select_rhos(select_rows, orig_select["accuracy"], orig_select["target_error"], lambda1):
        r = dict(next(x for x in test_rows if x["rho"] == rho))
        r.update(stats.compare_to_baseline([r["accuracy"]] * len(base_accs), [r["target_error"]] * len(base_errs),
                                           base_accs, base_errs))
        r["repaired"] = bool(r["within_thresholds"] and r.get("err_p", 1.0) < 0.05)
        chosen.append(r)
    res[f"selected_on_{select_split}"] = chosen
    return res


def pct(r: dict | None) -> str:
    return (f"{-100 * r['error_reduction_vs_orig_ft']:+.1f}% at {100 * r['accuracy_change_vs_orig_ft']:+.2f} pt "
            f"(rho {r['rho']:.3g})") if r else "none"


def all_pairs(study: Path, summary: dict, ds, probs, base: list[dict], cfg, allowed: float, rhos) -> int:
    """``--all-pairs``: :func:`analyse` for every class pair; orig-ft's per-pair errors come from the
    confusion matrices its runs stored, the original model's selection-split numbers from rho = 1."""
    from tqdm.auto import tqdm

    from repair_jax import metrics
    from repair_jax.io import write_json, write_text
    from repair_jax.plots import plt, save_figure
    from repair_jax.repair import Targets
    from repair_jax.repair.study import target_error, w_os_tradeoff

    if ds.multilabel:
        raise UserError("--all-pairs needs a single-label study (type1conf pairs)")
    sel, ev = summary["select_split"], summary["eval_split"]
    p_sel, p_ev, y_sel, y_ev = probs(sel), probs(ev), ds.split(sel).y, ds.split(ev).y
    base_accs = [r["accuracy"] for r in base]
    base_mats = [np.asarray(metrics.type1conf_matrix(np.asarray(r["confusion_matrix"]))) for r in base]
    k, names = ds.num_classes, ds.class_names
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    entries = []
    for i, j in tqdm(pairs, desc="pairs", leave=False):
        t = Targets(((i, j),))
        base_errs = [target_error(m, t) for m in base_mats]
        sel_rows = w_os_tradeoff(p_sel, y_sel, t, rhos)  # its last row, rho = 1, is the original model
        res = analyse(w_os_tradeoff(p_ev, y_ev, t, rhos), sel_rows, sel_rows[-1], base_accs, base_errs,
                      cfg.lambda1, allowed, sel)
        entries.append({"pair": [i, j], "names": [names[i], names[j]],
                        "orig_ft_target_error": float(np.mean(base_errs)),
                        "best_within_accuracy_budget": res["best_within_accuracy_budget"],
                        "any_rho_within_thresholds": res["any_rho_within_thresholds"],
                        f"selected_on_{sel}": res[f"selected_on_{sel}"],
                        "repaired": any(r["repaired"] for r in res[f"selected_on_{sel}"])})
    entries.sort(key=lambda e: -e["orig_ft_target_error"])
    write_json(study / "w_os_all_pairs.json", {
        "study": str(study), "split": ev, "select_split": sel, "error_kind": "type1conf",
        "orig_ft": {"accuracy": float(np.mean(base_accs)), "seeds": len(base)}, "lambda1": cfg.lambda1,
        "accuracy_loss_allowed": allowed, "rhos": [float(r) for r in rhos], "pairs": entries,
        "note": "best_within_accuracy_budget / any_rho_within_thresholds read the reporting split (a "
                "diagnostic); selected_on_<select_split> is the Sec. 4.4 choice on the fine grid"})
    lines = [f"w-os on every pair of {summary['dataset']} ({ev} split, orig-ft mean over {len(base)} seeds; "
             f"thresholds: error -{100 * cfg.lambda1:.0f}%, accuracy loss <= {100 * allowed:.2f} pt; "
             f"{len(rhos)} log-spaced rhos in [1e-3, 1])", "",
             f"| pair | orig-ft type1conf | {ev} curve: best error cut within the budget | {ev} curve: any rho within "
             f"both thresholds | Sec. 4.4 on {sel}: rho -> {ev} | repaired |", "|---|---|---|---|---|---|"]
    for e in entries:
        chosen = e[f"selected_on_{sel}"]
        lines.append(f"| {e['names'][0]} / {e['names'][1]} | {e['orig_ft_target_error']:.4f} | "
                     f"{pct(e['best_within_accuracy_budget'])} | {'yes' if e['any_rho_within_thresholds'] else 'no'} | "
                     f"{pct(chosen[0]) if chosen else 'none'} | {'yes' if e['repaired'] else 'no'} |")
    write_text(study / "w_os_all_pairs.md", "\n".join(lines) + "\n")

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    shown = [e for e in entries if e["orig_ft_target_error"] > 0]
    for rep, style in ((False, dict(facecolors="none", edgecolors="tab:blue")), (True, dict(color="tab:red"))):
        pts = [e for e in shown if e["repaired"] == rep]
        ax.scatter([e["orig_ft_target_error"] for e in pts],
                   [100 * e["best_within_accuracy_budget"]["error_reduction_vs_orig_ft"] for e in pts], s=22,
                   label=f"repaired with rho chosen on {sel}" if rep else "not repaired", **style)
    for e in shown[:6]:
        ax.annotate(" / ".join(e["names"]), (e["orig_ft_target_error"],
                    100 * e["best_within_accuracy_budget"]["error_reduction_vs_orig_ft"]), fontsize=6,
                    xytext=(3, 3), textcoords="offset points")
    ax.axhline(100 * cfg.lambda1, color="grey", ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel(f"orig-ft type1conf of the pair ({ev})")
    ax.set_ylabel(f"best cut within {100 * allowed:.2f} pt ({ev} curve, %)")
    ax.set_title(f"w-os on every confused pair of {summary['dataset']}", fontsize=9)
    ax.legend(fontsize=7)
    save_figure(fig, study / "w_os_all_pairs.png")
    n_rep, n_any = sum(e["repaired"] for e in entries), sum(e["any_rho_within_thresholds"] for e in entries)
    print(f"{study}: {len(entries)} pairs; a rho within both thresholds on the {ev} curve for {n_any}; "
          f"repaired with rho chosen on {sel} (Sec. 4.4, fine grid): {n_rep} -> {study / 'w_os_all_pairs.md'}")
    return 0


def compare_table(specs: list[str], top: int = 5) -> str:
    """One row per pair in the union of each study's ``top`` most confused pairs; each cell: the pair's
    confusion rank and orig-ft type1conf in that study, and whether the Sec. 4.4 fine-grid choice repairs it."""
    from repair_jax.io import read_json

    studies = []
    for spec in specs:
        label, sep, path = spec.partition("=")
        if not sep or not label or not path:
            raise UserError(f"--compare takes LABEL=STUDY, got {spec!r}")
        res = read_json(Path(path) / "w_os_all_pairs.json", f"{path}: --all-pairs result")
        studies.append((label, {" / ".join(e["names"]): (i, e) for i, e in enumerate(res["pairs"])},
                        res["pairs"]))
    order: list[str] = []
    for _, _, pairs in studies:
        order += [n for n in (" / ".join(e["names"]) for e in pairs[:top]) if n not in order]
    lines = ["| pair | " + " | ".join(label for label, _, _ in studies) + " |",
             "|---|" + "---|" * len(studies)]
    for name in order:
        cells = []
        for _, by_name, _ in studies:
            i, e = by_name[name]
            cells.append(f"#{i + 1}, {e['orig_ft_target_error']:.3f}: " + ("**yes**" if e["repaired"] else "no"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| pairs repaired / pairs with any confusion | " + " | ".join(
        f"{sum(e['repaired'] for e in pairs)} / {sum(e['orig_ft_target_error'] > 0 for e in pairs)}"
        for _, _, pairs in studies) + " |")
    return "\n".join(lines)


@exits_on_user_error("wr_os_frontier")
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", help="a study directory (results.jsonl, summary.json)")
    p.add_argument("--run", help="the run the study repaired")
    p.add_argument("--num", type=int, default=61, help="rhos, log-spaced from 1e-3 to 1")
    p.add_argument("--all-pairs", action="store_true",
                   help="every class pair instead of the study's target (single-label studies)")
    p.add_argument("--compare", nargs="+", metavar="LABEL=STUDY",
                   help="print a Markdown table of finished --all-pairs results side by side (no model run): "
                        "the union of each study's 5 most confused pairs")
    a = p.parse_args(argv)
    if a.compare:
        print(compare_table(a.compare))
        return 0
    if not (a.study and a.run):
        raise UserError("--study and --run are required (or --compare LABEL=STUDY ...)")
    require_at_least("--num", a.num, 2)

    from repair_jax.io import read_json, read_jsonl, write_json
    from repair_jax.plots import plt, save_figure
    from repair_jax.repair import Targets
    from repair_jax.repair.study import RepairConfig, accuracy_loss_allowed, output_probabilities, w_os_tradeoff
    from repair_jax.runs import load_run
    from repair_jax.train import predict

    study = Path(a.study)
    summary = read_json(study / "summary.json", "study summary")
    records = read_jsonl(study / "results.jsonl")
    base = [r for r in records if r["method"] == "orig-ft"]
    if not base:
        raise UserError(f"{study}/results.jsonl has no orig-ft run")
    run = load_run(a.run)
    ds = run.dataset()
    if ds.name != summary["dataset"]:
        raise UserError(f"--run is on {ds.name}, the study on {summary['dataset']}")
    targets = Targets(tuple(tuple(g) for g in summary["targets"]["groups"]))
    c = summary["config"]
    cfg = RepairConfig(lambda1=c["lambda1"], lambda2=c["lambda2"], lambda2_relative=c.get("lambda2_relative", False))
    orig = [r for r in records if r["method"] == "orig"]
    if not orig:
        raise UserError(f"{study}/results.jsonl has no orig run")
    rhos = np.logspace(-3, 0, a.num)
    state = run.state()

    def probs(split_name):
        return output_probabilities(predict(state, ds.split(split_name).x)[0], ds.multilabel)

    base_accs = [r["accuracy"] for r in base]
    base_acc = float(np.mean(base_accs))
    allowed = accuracy_loss_allowed(cfg, base_acc)
    sel_split, eval_split = summary["select_split"], summary["eval_split"]
    if a.all_pairs:
        return all_pairs(study, summary, ds, probs, base, cfg, allowed, rhos)
    res = analyse(w_os_tradeoff(probs(eval_split), ds.split(eval_split).y, targets, rhos, ds.multilabel),
                  w_os_tradeoff(probs(sel_split), ds.split(sel_split).y, targets, rhos, ds.multilabel),
                  {"accuracy": orig[0]["select_accuracy"], "target_error": orig[0]["select_target_error"]},
                  base_accs, [r["target_error"] for r in base], cfg.lambda1, allowed, sel_split)
    base_err = float(np.mean([r["target_error"] for r in base]))
    rows, chosen = res["rows"], res[f"selected_on_{sel_split}"]
    res.update(study=str(study), run=str(a.run), split=summary["eval_split"], targets=summary["target_names"],
               error_kind=summary["error_kind"], orig_ft={"accuracy": base_acc, "target_error": base_err,
                                                          "seeds": len(base)},
               lambda1=cfg.lambda1, lambda2=cfg.lambda2, lambda2_relative=cfg.lambda2_relative,
               note="diagnostic on the reporting split: choosing rho from it is tuning on that split")
    write_json(study / "w_os_frontier.json", res)

    fig, ax = plt.subplots(figsize=(5.5, 4))
    red = [100 * r["error_reduction_vs_orig_ft"] for r in rows]
    loss = [-100 * r["accuracy_change_vs_orig_ft"] for r in rows]
    sc = ax.scatter(loss, red, c=np.log10(rhos), cmap="viridis", s=14)
    fig.colorbar(sc, ax=ax, label="log10 rho")
    ax.axhline(100 * cfg.lambda1, color="grey", ls="--", lw=0.8)
    ax.axvline(100 * accuracy_loss_allowed(cfg, base_acc), color="grey", ls="--", lw=0.8)
    ax.set_xlabel("accuracy loss vs orig-ft (points)")
    ax.set_ylabel(f"{summary['error_kind']} reduction vs orig-ft (%)")
    ax.set_title(f"w-os on {summary['target_names']} ({summary['eval_split']})", fontsize=9)
    save_figure(fig, study / "w_os_frontier.png")
    b = res["best_within_accuracy_budget"]
    print(f"{study}: orig-ft acc {base_acc:.4f} err {base_err:.4f}; best within the accuracy budget: "
          + (f"rho {b['rho']:.4g}: {-100 * b['error_reduction_vs_orig_ft']:+.1f}% error, "
             f"{100 * b['accuracy_change_vs_orig_ft']:+.2f} pt" if b else "none")
          + f"; any rho within both thresholds: {res['any_rho_within_thresholds']}")
    for r in chosen:
        print(f"  Sec. 4.4 on the fine grid ({sel_split}) selects rho {r['rho']:.4g}: on {summary['eval_split']} "
              f"{-100 * r['error_reduction_vs_orig_ft']:+.1f}% error, {100 * r['accuracy_change_vs_orig_ft']:+.2f} pt, "
              f"error p = {r.get('err_p', float('nan')):.3f}, repaired: {r['repaired']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
