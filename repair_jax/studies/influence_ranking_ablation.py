"""Which setting flips the order of IF-Calib and the training-loss ranking (Adebayo 2022, Sec. 6.5, Fig. 6-3)?

At the committed setting (``experiments/results/influence_ranking``) the training loss finds the flipped labels
of digits at least as well as IF-Calib (top 50: 0.996 vs 0.960), the reverse of the thesis's Fig. 6-3. An
:class:`InfluenceRankingAblation` runs named :class:`~repair_jax.studies.influence.InfluenceRankingStudy`
settings (each one change from a reference) seed by seed through :func:`repair_jax.experiment.run_cells`
(``OUT/rows.jsonl``, resumable) and reports, per setting, the mean top-``top`` flipped fraction of the four
rankings, the AUROC of each ranking for the flipped points (the whole ranking, no ceiling at ``top``), and the
paired t-test over seeds (:func:`repair_jax.stats.paired_t_test_p`; both rankings score the same fitted model of
each seed) of IF-Calib against the training loss: ``OUT/ablation.json`` and ``OUT/ablation.md``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from repair_jax.errors import UserError
from repair_jax.experiment import config_record, run_cells, runner
from repair_jax.io import write_json, write_text
from repair_jax.stats import paired_t_test_p
from repair_jax.studies.influence import InfluenceRankingStudy, ranking_seed

METHODS = ("IF-Calib", "abs(IF-Calib)", "IF-Calib-Label", "Loss", "IF-Norm", "abs(IF-Norm)")
CALIB = ("IF-Calib", "abs(IF-Calib)")  # compared with the training loss, each against it
ALPHA = 0.05


@dataclasses.dataclass(frozen=True)
class RankingSetting:
    """One named setting of the ablation: what it changes (``axis``, e.g. ``"l2 1e-5"``) and its study."""

    name: str
    axis: str
    study: InfluenceRankingStudy


@dataclasses.dataclass(frozen=True)
class InfluenceRankingAblation:
    """Named ranking settings run seed by seed (module docstring)."""

    settings: tuple[RankingSetting, ...]

    def validate(self) -> None:
        names = [s.name for s in self.settings]
        if not names or len(set(names)) != len(names) or not all(names):
            raise UserError(f"the ablation needs unique, non-empty setting names, got {names}")
        if len({s.study.top for s in self.settings}) != 1:
            raise UserError("every setting of the ablation must rank the same top (one column of the table)")

    def cells(self) -> list[tuple[str, int]]:
        return [(s.name, seed) for s in self.settings for seed in s.study.seeds]


def compare(rows: list[dict], field: str, a: str = "IF-Calib", b: str = "Loss") -> dict:
    """Mean of ``a - b`` over the seeds' ``field`` (top_flipped_fraction | auroc), the paired t-test's p and the
    order it reads: ``a > b`` / ``a < b`` where p < :data:`ALPHA`, else ``tie``."""
    x = np.array([r[field][a] for r in rows])
    y = np.array([r[field][b] for r in rows])
    d, p = float(np.mean(x - y)), paired_t_test_p(x, y)
    order = "tie" if not p < ALPHA else (f"{a} > {b}" if d > 0 else f"{a} < {b}")
    return {"a": a, "b": b, "mean_diff": d, "p": p, "order": order}


def summarize(setting: RankingSetting, rows: list[dict]) -> dict:
    """One setting's row: sizes, per-method means and std of both measures, IF-Calib (signed and abs) against the
    loss and against IF-Norm (the same sign convention)."""
    stat = lambda field: {m: {"mean": float(np.mean([r[field][m] for r in rows])),
                              "std": float(np.std([r[field][m] for r in rows]))} for m in METHODS}
    fields = {"top": "top_flipped_fraction", "auroc": "auroc"}
    return {"setting": setting.name, "axis": setting.axis, "seeds": [r["seed"] for r in rows],
            "n_train": rows[0]["n_train"], "flipped": rows[0]["flipped"], "group": rows[0]["group"],
            "cg_converged": sum(bool(r["cg"]["converged"]) for r in rows),
            "fit_grad_norm_max": max(r["fit_grad_norm"] for r in rows),
            "top": stat("top_flipped_fraction"), "auroc": stat("auroc"),
            "vs_loss": {a: {k: compare(rows, f, a) for k, f in fields.items()} for a in CALIB},
            "vs_norm": {a: {k: compare(rows, f, a, a.replace("Calib", "Norm")) for k, f in fields.items()}
                        for a in CALIB}}


def _cmp(c: dict) -> str:
    return f"{c['mean_diff']:+.3f} (p {c['p']:.2g}) {c['order'].replace('IF-Calib', 'C').replace('Loss', 'L')}"


def ablation_table(config: InfluenceRankingAblation, summaries: list[dict]) -> str:
    """Two tables, top-``top`` fraction and AUROC: per setting the six rankings' means and IF-Calib - Loss."""
    top = config.settings[0].study.top
    head = (" | n train | flipped | " + " | ".join(METHODS) + " | IF-Calib - Loss | abs(IF-Calib) - Loss |",
            "|---" * (4 + len(METHODS) + 2) + "|")
    lines = [f"Flipped labels found by each ranking (mean over seeds). IF-Calib - Loss: the mean paired difference "
             f"(paired t-test p over seeds) and the order at p < {ALPHA} (C: IF-Calib, L: Loss; tie: p >= {ALPHA})."]
    for key, title in (("top", f"Fraction flipped among the top {top} (the thesis's measure)"),
                       ("auroc", "AUROC of each whole ranking for the flipped points")):
        lines += ["", f"{title}:", "", "| setting | change" + head[0], head[1]]
        for s in summaries:
            lines.append(f"| {s['setting']} | {s['axis']} | {s['n_train']} | {s['flipped']} | "
                         + " | ".join(f"{s[key][m]['mean']:.3f}" for m in METHODS) + " | "
                         + " | ".join(_cmp(s["vs_loss"][a][key]) for a in CALIB) + " |")
    cg = ", ".join(f"{s['setting']} {s['cg_converged']}/{len(s['seeds'])}" for s in summaries)
    return "\n".join(lines) + f"\n\nIF-Calib's CG solve converged (seeds): {cg}.\n"


@runner(InfluenceRankingAblation)
def run_influence_ranking_ablation(config: InfluenceRankingAblation, out: Path, *, force: bool = False,
                                   progress: bool = True) -> dict:
    """Every (setting, seed) into ``OUT/rows.jsonl`` (resumable), then ``OUT/ablation.json`` and ``.md``."""
    out = Path(out)
    config.validate()
    by_name = {s.name: s for s in config.settings}
    records = run_cells(out / "rows.jsonl", config_record(config), config.cells(),
                        lambda cell: {"setting": cell[0], **ranking_seed(by_name[cell[0]].study, cell[1])},
                        key=lambda r: (r["setting"], r["seed"]), force=force, progress=progress,
                        label="InfluenceRankingAblation")
    summaries = [summarize(s, [r for r in records if r["setting"] == s.name]) for s in config.settings]
    text = ablation_table(config, summaries)
    write_json(out / "ablation.json", {"settings": summaries})
    write_text(out / "ablation.md", text)
    return {"settings": summaries, "tables": text, "report": text}
