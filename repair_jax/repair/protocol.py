"""The evaluation protocol of 001_67555029b287879f.txt Sec. 5, shared by the CLI and experiments/.

A *repair problem* is drawn from the repair-pool split of a trained run: a repair set R of
misclassified pool inputs of the chosen classes (``repair_size`` per class, all available when a
class has fewer, with a note) and a correct set C of ``correct_size`` correctly classified pool
inputs uniform over classes (Definition 2). Each method repairs the same problem for a seed, and
the accuracy before / after is measured on the held-out test split (never on C; Definitions 5-6).
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np
import optax

from repair_jax.errors import UserError
from repair_jax.repair.irepair import (
    IRepairConfig, correct_set, i_repair, is_repaired, random_locking_repair, repair_set, retrain,
)
from repair_jax.repair.mm import mm_repair

METHODS = ("irepair", "retrain", "random", "mm")


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
        return cls.from_model(run.model, run.variables, ds)

    @classmethod
    def from_model(cls, model, variables, ds) -> "RepairContext":
        pool_pred = predict_labels(model, variables, ds.pool.x)
        acc = float(np.mean(predict_labels(model, variables, ds.test.x) == ds.test.y))
        return cls(model, variables, ds, pool_pred, acc)


def predict_labels(model, variables, x) -> np.ndarray:
    from repair_jax.train import create_train_state, predict
    logits, _ = predict(create_train_state(model, variables, optax.identity()), x)
    return logits.argmax(-1)


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


def solve_problem(ctx: RepairContext, r_idx, c_idx, method: str, config: IRepairConfig,
                  seed: int = 0, lock_p: float = 0.5, mm_epsilon: float | None = None,
                  mm_margin: float = 1e-3) -> dict:
    """Runs ``method`` on one problem; returns the record of ``irepair.json`` (one run)."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; choose {', '.join(METHODS)}")
    ds = ctx.dataset
    xr, yr = ds.pool.x[r_idx], ds.pool.y[r_idx]
    xc, yc = ds.pool.x[c_idx], ds.pool.y[c_idx]
    args = (ctx.model, ctx.variables, xr, yr, xc, yc)
    t0 = time.perf_counter()
    extra: dict = {}
    if method == "mm":
        res = mm_repair(ctx.model, ctx.variables, xr, yr, margin=mm_margin, epsilon=mm_epsilon)
        variables, iterations, unlocked = res.variables, 0, None
        extra = {"status": res.status, "max_change": res.max_change, "mm_epsilon": mm_epsilon}
    else:
        if method == "irepair":
            res = i_repair(*args, config=config)
        elif method == "retrain":
            res = retrain(*args, config=config)
        else:
            res = random_locking_repair(*args, p=lock_p, seed=seed, config=config)
            extra = {"lock_p": lock_p}
        jax.block_until_ready(res.variables["params"])
        variables, iterations, unlocked = res.variables, res.iterations, res.unlocked_fraction
    wall = time.perf_counter() - t0
    repaired = _repaired(ctx.model, variables, xr, yr, config.margin)
    test_pred = predict_labels(ctx.model, variables, ds.test.x)
    acc_after = float(np.mean(test_pred == ds.test.y))
    c_after = float(np.mean(predict_labels(ctx.model, variables, xc) == yc))
    return {"method": method, "seed": seed, "classes": sorted(set(int(c) for c in yr)),
            "repair_size": int(len(r_idx)), "correct_size": int(len(c_idx)),
            "gamma": config.gamma if method == "irepair" else None, "margin": config.margin,
            "lr": config.lr, "ub": config.ub, "correct_loss": config.correct_loss,
            "influence": config.influence,
            "repaired": int(repaired.sum()), "unrepaired": int((~repaired).sum()),
            "accuracy_before": ctx.accuracy_before, "accuracy_after": acc_after,
            "accuracy_drop": ctx.accuracy_before - acc_after, "correct_set_accuracy_after": c_after,
            "iterations": iterations, "unlocked_fraction": unlocked, "wall_time": wall, **extra}


def _repaired(model, variables, x, y, margin) -> np.ndarray:
    from repair_jax.train import create_train_state, predict
    logits, _ = predict(create_train_state(model, variables, optax.identity()), x)
    return np.asarray(is_repaired(logits, y, margin))


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its Student-t confidence interval (0 for fewer than 2 values)."""
    import scipy.stats
    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return float(v.mean()) if len(v) else float("nan"), 0.0
    half = scipy.stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean()), float(half)


def t_test_p(a, b) -> float:
    """Independent two-sample t-test p-value (001 Sec. 5 RQ i); NaN with fewer than 2 values."""
    import scipy.stats
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    if np.allclose(a, a[0]) and np.allclose(b, b[0]):
        return 1.0 if np.isclose(a[0], b[0]) else 0.0
    import warnings
    with warnings.catch_warnings():  # nearly constant samples: scipy warns, the p-value stands
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(scipy.stats.ttest_ind(a, b).pvalue)


def summary_table(runs: list[dict], baseline: str | None = "retrain") -> str:
    """Markdown: per method label (and |R|), runs, all-repaired fraction, mean accuracy drop (in
    percentage points) with 95% CI and standard deviation (001 Table 1's d and s), mean iterations,
    unlocked fraction, independent two-sample t-test p-value against ``baseline``."""
    def label(r):
        if r["method"] == "irepair":
            return f"irepair (gamma={r['gamma']:g})"
        if r["method"] == "random":
            return f"random (p={r['lock_p']:g})"
        if r["method"] == "mm":
            return f"mm (eps={r['mm_epsilon']})"
        return r["method"]
    groups: dict = {}
    for r in runs:
        groups.setdefault((r.get("group", r["repair_size"]), label(r)), []).append(r)
    lines = ["| R | method | runs | all repaired | drop (pp) mean ± 95% CI | sd | iterations | unlocked | p vs "
             f"{baseline or '-'} |", "|---|---|---|---|---|---|---|---|---|"]
    import re
    natural = lambda g: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(g))]
    for (k, lab), rs in sorted(groups.items(), key=lambda kv: (natural(kv[0][0]), kv[0][1])):
        drops = [100 * r["accuracy_drop"] for r in rs]
        m, h = mean_ci(drops)
        allrep = np.mean([r["unrepaired"] == 0 for r in rs])
        its = np.mean([r["iterations"] for r in rs])
        unl = [r["unlocked_fraction"] for r in rs if r["unlocked_fraction"] is not None]
        base = next((g for (k2, _), g in groups.items() if k2 == k and g[0]["method"] == baseline), None)
        is_base = rs[0]["method"] == baseline
        p = t_test_p(drops, [100 * r["accuracy_drop"] for r in base]) if base and not is_base else float("nan")
        sd = float(np.std(drops, ddof=1)) if len(drops) > 1 else 0.0
        lines.append(f"| {k} | {lab} | {len(rs)} | {allrep:.2f} | {m:.2f} ± {h:.2f} | {sd:.2f} | {its:.1f} | "
                     f"{(np.mean(unl) if unl else float('nan')):.3f} | {p:.3g} |")
    return "\n".join(lines)


def run_jobs(ctx: RepairContext, jobs: list[dict], out_jsonl, progress: bool = True) -> list[dict]:
    """Runs repair jobs, appending each record to ``out_jsonl`` (resumable: jobs whose ``key`` is
    already there are skipped). A job: ``key`` (unique str), ``classes``, ``repair_size``,
    ``correct_size``, ``seed``, ``method``, ``config`` (IRepairConfig) and optionally ``lock_p``,
    ``mm_epsilon``, ``group`` and any extra keys to copy into the record. Returns all records."""
    from tqdm.auto import tqdm

    from repair_jax.io import append_jsonl, read_jsonl
    from pathlib import Path

    done = {r["key"]: r for r in read_jsonl(out_jsonl)} if Path(out_jsonl).exists() else {}
    problems: dict = {}
    for job in tqdm(jobs, desc="repair jobs", disable=None if progress else True):
        if job["key"] in done:
            continue
        pkey = (tuple(job["classes"]), job["repair_size"], job["correct_size"], job["seed"])
        if pkey not in problems:
            problems[pkey] = draw_problem(ctx, job["classes"], job["repair_size"], job["correct_size"], job["seed"])
        r_idx, c_idx, notes = problems[pkey]
        rec = solve_problem(ctx, r_idx, c_idx, job["method"], job["config"], seed=job["seed"],
                            lock_p=job.get("lock_p", 0.5), mm_epsilon=job.get("mm_epsilon"))
        extra = {k: v for k, v in job.items() if k not in ("config", "classes", "repair_size")}
        rec.update(extra, notes=notes, requested_size=job["repair_size"])
        append_jsonl(out_jsonl, rec)
        done[job["key"]] = rec
    return [done[j["key"]] for j in jobs]
