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
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from repair_jax.errors import UserError, exits_on_user_error


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


@exits_on_user_error("wr_os_frontier")
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", required=True, help="a study directory (results.jsonl, summary.json)")
    p.add_argument("--run", required=True, help="the run the study repaired")
    p.add_argument("--num", type=int, default=61, help="rhos, log-spaced from 1e-3 to 1")
    a = p.parse_args(argv)
    if a.num < 2:
        raise UserError(f"--num must be >= 2, got {a.num}")

    from repair_jax.io import read_json, read_jsonl, write_json
    from repair_jax.plots import plt, save_figure
    from repair_jax.repair import Targets, stats
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

    def curve(split_name):
        sp = ds.split(split_name)
        return w_os_tradeoff(output_probabilities(predict(state, sp.x)[0], ds.multilabel), sp.y, targets, rhos,
                             ds.multilabel)

    rows = curve(summary["eval_split"])
    base_acc = float(np.mean([r["accuracy"] for r in base]))
    base_err = float(np.mean([r["target_error"] for r in base]))
    allowed = accuracy_loss_allowed(cfg, base_acc)
    res = frontier(rows, base_acc, base_err, cfg.lambda1, allowed)
    # Sec. 4.4 on the fine grid, on the selection split, against the original model (as the study selects)
    sel_split = summary["select_split"]
    picked = stats.select_rhos(curve(sel_split), orig[0]["select_accuracy"], orig[0]["select_target_error"],
                               cfg.lambda1)
    base_accs, base_errs = [r["accuracy"] for r in base], [r["target_error"] for r in base]
    chosen = []
    for rho in picked:
        r = dict(next(x for x in rows if x["rho"] == rho))
        r.update(stats.compare_to_baseline([r["accuracy"]] * len(base), [r["target_error"]] * len(base),
                                           base_accs, base_errs))
        r["repaired"] = bool(r["within_thresholds"] and r.get("err_p", 1.0) < 0.05)
        chosen.append(r)
    res[f"selected_on_{sel_split}"] = chosen
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
