"""The evaluation protocol of Henriksen et al. 2022, Sec. 5, shared by the CLI and experiments/.

A *repair problem* is drawn from the repair-pool split of a trained run: a repair set R of
misclassified pool inputs of the chosen classes (``repair_size`` per class, all available when a
class has fewer, with a note) and a correct set C of ``correct_size`` correctly classified pool
inputs uniform over classes (Definition 2). Each method repairs the same problem for a seed, and
the accuracy before / after is measured on the held-out test split (never on C; Definitions 5-6).
"""

from __future__ import annotations

import dataclasses
import re
import time

import jax
import numpy as np
import optax

from repair_jax.classifier import as_classifier
from repair_jax.errors import UserError
from repair_jax.io import ResumableJsonl, first_difference, to_jsonable
from repair_jax.progress import track
from repair_jax.repair.identity import dataset_identity, model_identity
from repair_jax.stats import mean_ci, t_test_p
from repair_jax.tables import MISSING, markdown_table
from repair_jax.train import create_train_state, predict, predict_labels
from repair_jax.repair.irepair import (
    IRepairConfig, correct_set, i_repair, is_repaired, random_locking_repair, repair_set, retrain,
)
from repair_jax.repair.mm import mm_repair

@dataclasses.dataclass
class RepairContext:
    """A trained model with its data set and its predictions on the pool and test splits (computed
    once, shared by every repair problem drawn from it)."""

    model: object
    variables: dict
    dataset: object
    pool_predictions: np.ndarray
    accuracy_before: float

    @classmethod
    def from_run(cls, run, dataset=None) -> "RepairContext":
        ds = dataset if dataset is not None else run.dataset()
        if ds.multilabel:
            raise UserError("I-REPAIR needs a single-label data set")
        if len(ds.pool) == 0:
            raise UserError("the run's data set has an empty repair pool")
        return cls.from_model(run.classifier(), run.variables, ds)

    @classmethod
    def from_model(cls, model, variables, ds) -> "RepairContext":
        pool_pred = _predict_labels(model, variables, ds.pool.x)
        acc = float(np.mean(_predict_labels(model, variables, ds.test.x) == ds.test.y))
        return cls(model, variables, ds, pool_pred, acc)


def _predict_labels(model, variables, x) -> np.ndarray:
    return predict_labels(create_train_state(model, variables, optax.identity()), x)


def draw_problem(ctx: RepairContext, classes, repair_size: int, correct_size: int, seed: int):
    """(repair indices, correct indices, notes) into the pool split for ``seed``."""
    ds = ctx.dataset
    for c in classes:
        if not 0 <= c < ds.num_classes:
            raise UserError(f"class index {c} out of range [0, {ds.num_classes - 1}]")
    rng = np.random.default_rng(seed)
    r_idx, notes = repair_set(ds.pool.y, ctx.pool_predictions, classes, repair_size, rng)
    c_idx = correct_set(ds.pool.y, ctx.pool_predictions, correct_size, ds.num_classes, rng)
    return r_idx, c_idx, notes


def _loop_result(res, extra: dict) -> tuple:
    jax.block_until_ready(res.variables["params"])
    return res.variables, res.iterations, res.unlocked_fraction, extra


def _solve_irepair(ctx, sets, config, seed, opts):
    return _loop_result(i_repair(ctx.model, ctx.variables, *sets, config=config), {"gamma": config.gamma})


def _solve_retrain(ctx, sets, config, seed, opts):
    return _loop_result(retrain(ctx.model, ctx.variables, *sets, config=config), {})


def _solve_random(ctx, sets, config, seed, opts):
    res = random_locking_repair(ctx.model, ctx.variables, *sets, p=opts["lock_p"], seed=seed, config=config)
    return _loop_result(res, {"lock_p": opts["lock_p"]})


def _solve_mm(ctx, sets, config, seed, opts):
    res = mm_repair(ctx.model, ctx.variables, sets[0], sets[1], margin=opts["mm_margin"], epsilon=opts["mm_epsilon"])
    return res.variables, 0, None, {"status": res.status, "max_change": res.max_change,
                                    "mm_epsilon": opts["mm_epsilon"]}


# method name -> solver(ctx, (xr, yr, xc, yc), config, seed, options) -> (variables, iterations,
# unlocked fraction or None, extra record fields); a new method of the protocol is one solver + one entry
SOLVERS = {"irepair": _solve_irepair, "retrain": _solve_retrain, "random": _solve_random, "mm": _solve_mm}
METHODS = tuple(SOLVERS)


def solve_problem(ctx: RepairContext, r_idx, c_idx, method: str, config: IRepairConfig,
                  seed: int = 0, lock_p: float = 0.5, mm_epsilon: float | None = None,
                  mm_margin: float = 1e-3) -> dict:
    """Runs ``method`` on one problem; returns the record of ``irepair.json`` (one run)."""
    if method not in SOLVERS:
        raise UserError(f"unknown method {method!r}; choose {', '.join(METHODS)}")
    ds = ctx.dataset
    xr, yr = ds.pool.x[r_idx], ds.pool.y[r_idx]
    xc, yc = ds.pool.x[c_idx], ds.pool.y[c_idx]
    t0 = time.perf_counter()
    opts = {"lock_p": lock_p, "mm_epsilon": mm_epsilon, "mm_margin": mm_margin}
    variables, iterations, unlocked, extra = SOLVERS[method](ctx, (xr, yr, xc, yc), config, seed, opts)
    wall = time.perf_counter() - t0
    repaired = _repaired(ctx.model, variables, xr, yr, config.margin)
    test_pred = _predict_labels(ctx.model, variables, ds.test.x)
    acc_after = float(np.mean(test_pred == ds.test.y))
    c_after = float(np.mean(_predict_labels(ctx.model, variables, xc) == yc))
    return {"method": method, "seed": seed, "classes": sorted(set(int(c) for c in yr)),
            "repair_size": int(len(r_idx)), "correct_size": int(len(c_idx)),
            "gamma": None, "margin": config.margin,
            "lr": config.lr, "ub": config.ub, "correct_loss": config.correct_loss,
            "influence": config.influence,
            "repaired": int(repaired.sum()), "unrepaired": int((~repaired).sum()),
            "accuracy_before": ctx.accuracy_before, "accuracy_after": acc_after,
            "accuracy_drop": ctx.accuracy_before - acc_after, "correct_set_accuracy_after": c_after,
            "iterations": iterations, "unlocked_fraction": unlocked, "wall_time": wall, **extra}


def _repaired(model, variables, x, y, margin) -> np.ndarray:
    logits, _ = predict(create_train_state(model, variables, optax.identity()), x)
    return np.asarray(is_repaired(logits, y, margin))


def _label(r: dict) -> str:
    if r["method"] == "irepair":
        return f"irepair (gamma={r['gamma']:g})"
    if r["method"] == "random":
        return f"random (p={r['lock_p']:g})"
    if r["method"] == "mm":
        return f"mm (eps={r['mm_epsilon']})"
    return r["method"]


def _size_text(sizes) -> str:
    lo, hi = min(sizes), max(sizes)
    return str(lo) if lo == hi else f"{lo}–{hi}"


def _table_row(group, label: str, rs: list[dict], base: list[dict] | None, is_base: bool) -> list:
    drops = [100 * r["accuracy_drop"] for r in rs]
    m, h = mean_ci(drops)
    unl = [r["unlocked_fraction"] for r in rs if r["unlocked_fraction"] is not None]
    p = t_test_p(drops, [100 * r["accuracy_drop"] for r in base]) if base and not is_base else None
    sd = float(np.std(drops, ddof=1)) if len(drops) > 1 else 0.0
    return [group, label, len(rs), _size_text([r["repair_size"] for r in rs]),
            f"{np.mean([r['unrepaired'] == 0 for r in rs]):.2f}", f"{m:.2f} ± {h:.2f}", f"{sd:.2f}",
            f"{np.mean([r['iterations'] for r in rs]):.1f}", f"{np.mean(unl):.3f}" if unl else None,
            None if p is None or p != p else f"{p:.3g}"]


def summary_table(runs: list[dict], baseline: str | None = "retrain") -> str:
    """Markdown: per group (requested |R|, or the job's ``group``) and method label, runs, the
    repair-set size actually used, all-repaired fraction, mean accuracy drop (in percentage points)
    with 95% CI and standard deviation (d and s of Henriksen et al. 2022, Table 1), mean iterations, unlocked fraction,
    independent two-sample t-test p-value against ``baseline``. Cells that do not apply are '—'."""
    groups: dict = {}
    for r in runs:
        groups.setdefault((r.get("group", r["repair_size"]), _label(r)), []).append(r)
    natural = lambda g: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(g))]
    rows = []
    for (k, lab), rs in sorted(groups.items(), key=lambda kv: (natural(kv[0][0]), kv[0][1])):
        base = next((g for (k2, _), g in groups.items() if k2 == k and g[0]["method"] == baseline), None)
        rows.append(_table_row(k, lab, rs, base, rs[0]["method"] == baseline))
    headers = ["R", "method", "runs", "R used", "all repaired", "drop (pp) mean ± 95% CI", "sd", "iterations",
               "unlocked", f"p vs {baseline or '-'}"]
    notes = ["R: the group of the runs (the requested repair-set size per class unless the job names another); "
             "R used: |R| actually drawn (all classes; a range when it varies, e.g. a class with fewer "
             f"misclassified inputs than requested). {MISSING}: not applicable (the baseline itself, no "
             "baseline, an unlocked fraction for MM) or too few runs for the t-test."]
    return markdown_table(headers, rows, notes)


def _job_spec(job: dict) -> dict:
    """A job as plain JSON (its IRepairConfig as a dict), the part of the log a resumed job must match."""
    spec = {k: v for k, v in job.items() if k != "config"}
    spec["config"] = dataclasses.asdict(job["config"])
    return to_jsonable(spec)


def run_jobs(ctx: RepairContext, jobs: list[dict], out_jsonl, progress: bool = True, force: bool = False) -> list[dict]:
    """Runs repair jobs, appending each record to ``out_jsonl``; returns all records.

    A job: ``key`` (unique str), ``classes``, ``repair_size``, ``correct_size``, ``seed``, ``method``,
    ``config`` (IRepairConfig) and optionally ``lock_p``, ``mm_epsilon``, ``group`` and any extra keys
    to copy into the record. Resumable: the log is a :class:`repair_jax.io.ResumableJsonl` bound to
    the model's weights and the data set, and a job whose ``key`` is already there is skipped if
    everything else in it is the same (else a :class:`UserError` names the differing field);
    ``force=True`` restarts the log.
    """
    header = {"model": model_identity(as_classifier(ctx.model, ctx.variables)), "dataset": dataset_identity(ctx.dataset)}
    log = ResumableJsonl(out_jsonl, header, key=lambda r: r["key"], force=force)
    problems: dict = {}
    for job in track(jobs, "repair jobs", progress):
        spec = _job_spec(job)
        if job["key"] in log:
            field = first_difference(log[job["key"]].get("job"), spec)
            if field is not None:
                raise UserError(f"{out_jsonl}: job {job['key']!r} was run with another {field}; choose another "
                                "output or pass force to restart it")
            continue
        pkey = (tuple(job["classes"]), job["repair_size"], job["correct_size"], job["seed"])
        if pkey not in problems:
            problems[pkey] = draw_problem(ctx, job["classes"], job["repair_size"], job["correct_size"], job["seed"])
        r_idx, c_idx, notes = problems[pkey]
        rec = solve_problem(ctx, r_idx, c_idx, job["method"], job["config"], seed=job["seed"],
                            lock_p=job.get("lock_p", 0.5), mm_epsilon=job.get("mm_epsilon"))
        extra = {k: v for k, v in job.items() if k not in ("config", "classes", "repair_size")}
        rec.update(extra, notes=notes, requested_size=job["repair_size"], job=spec)
        log.append(rec)
    return [log[j["key"]] for j in jobs]


def write_irepair_result(out, runs: list[dict], *, run_path, classes, notes=(), baseline: str | None = None,
                         force: bool = False) -> str:
    """Writes ``out/irepair.json`` (``{"run", "classes", "notes", "runs"}``) and ``out/summary.md`` (the
    :func:`summary_table` of ``runs`` against ``baseline``) atomically (an existing non-empty ``out`` is replaced
    only with ``force``); returns the table."""
    from repair_jax.io import atomic_dir, write_json, write_text

    table = summary_table(runs, baseline=baseline)
    with atomic_dir(out, overwrite=force) as tmp:
        write_json(tmp / "irepair.json", {"run": str(run_path), "classes": list(classes),
                                          "notes": sorted(notes), "runs": runs})
        write_text(tmp / "summary.md", table + "\n")
    return table
