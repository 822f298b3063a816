"""The repair study of Zhong et al. 2022, Sec. 4.3-4.4 over one trained model and one target.

Phases (every run is one line of ``results.jsonl``, keyed by (method, rho, seed); re-running skips
finished keys, so a kill loses at most the run in progress):

1. ``orig`` and ``orig-ft`` (seed 0);
2. grid: every method with a rho at each rho of the grid (seed 0); a method with ``extra_rhos``
   (w-os) then tries those in turn while no value has reduced the error by lambda1 relative to orig-ft;
3. selection of rho per method by the rules of Sec. 4.4 on the *validation* split
   (:func:`repair_jax.repair.selection.select_rhos`);
4. the selected settings and orig-ft with seeds 0..S-1 (the seed sets the fine-tuning data order);
   deterministic methods (orig, w-os) run once: one value, tested as such (see :mod:`repair_jax.repair.report`).

``results.jsonl`` is a :class:`repair_jax.io.ResumableJsonl` bound to the model's weights, the data
set, the targets and the fields of the configuration that determine a run
(:data:`repair_jax.repair.config.RUN_FIELDS`): resuming with any of them changed is a one-line
:class:`UserError` naming the field (``force=True`` restarts the log). Seeds, methods, the rho grid
and the thresholds may change between resumes: finished runs are reused, the summary is recomputed.

Reported numbers are on the *test* split; :func:`run_study` writes ``summary.json``, ``table.md``
and the plots, and returns the summary (it prints nothing).
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from repair_jax.classifier import Classifier, check_classifier, takes_model
from repair_jax.data import Dataset
from repair_jax.errors import UserError
from repair_jax.io import RESUMABLE_HEADER, ResumableJsonl, read_jsonl, write_json, write_text
from repair_jax.progress import progress as progress_reporter
from repair_jax.repair.config import RepairConfig
from repair_jax.repair.evaluation import evaluate_outputs, output_probabilities
from repair_jax.repair.identity import dataset_identity, model_identity
from repair_jax.repair.methods import BASELINES, RepairMethod, lookup, make_method
from repair_jax.repair.report import format_table, plot_study, summarize_study
from repair_jax.repair.selection import select_rhos
from repair_jax.repair.weighted import Targets
from repair_jax.train import create_train_state, fit, make_optimizer, predict


def _check_batch_norm(name: str, needs_batch_norm: bool, model: Classifier) -> None:
    if needs_batch_norm and not model.has_batch_norm:
        raise UserError(f"{name} needs a model with BatchNorm layers (Zhong et al. 2022, Sec. 3.3.3); this model has "
                        f"none - drop {name} from methods or use a BatchNorm model (e.g. cnn)")


def fine_tune(method: RepairMethod, seed: int, model: Classifier, dataset: Dataset, cfg: RepairConfig,
              progress: bool = False):
    """Fine-tunes the base ``variables`` with ``method`` (its objective and batches); returns the state."""
    if not method.fine_tunes:
        raise UserError(f"{method.name} does not fine-tune")
    _check_batch_norm(method.name, method.needs_batch_norm, model)
    if method.needs_features and not model.has_features:
        raise UserError(f"{method.name} needs the model's penultimate features and this model exposes none: "
                        "build it with features= naming the layer before the logits")
    tc = cfg.train_config(seed)
    train = dataset.train
    bs = min(cfg.batch_size, len(train))
    n_batches = max(1, len(train) // bs)
    tx = make_optimizer(tc, cfg.epochs * n_batches)
    # a copy: the jitted step donates its input state, and the base weights serve every run
    state = create_train_state(model.replace(params=jax.tree_util.tree_map(jnp.array, model.params),
                                             state=jax.tree_util.tree_map(jnp.array, model.state)), tx)
    ml, k = dataset.multilabel, dataset.num_classes
    batch_indices, make_batch = method.batches(train, bs, n_batches, k, ml)
    state, _ = fit(state, dataset, tc, objective=method.objective(ml, k, cfg.l2), progress=progress,
                   epochs=cfg.epochs, batch_indices=batch_indices, make_batch=make_batch)
    return state


def _record(method: RepairMethod, seed, evals: dict, wall: float, targets: Targets) -> dict:
    test, sel = evals["eval"], evals["select"]
    return {"method": method.name, "rho": method.rho, "seed": seed, "accuracy": test["accuracy"],
            "target_error": test["target_error"], "error_kind": test["error_kind"],
            "confusion_matrix": test["confusion_matrix"], "select_accuracy": sel["accuracy"],
            "select_target_error": sel["target_error"], "wall_time": wall, "targets": targets.to_json()}


def run_one(method: RepairMethod, seed: int, model: Classifier, dataset: Dataset, targets: Targets,
            cfg: RepairConfig, base_logits: dict | None = None) -> dict:
    """One run -> its results.jsonl record (test numbers, plus ``select_*`` on the selection split).

    ``base_logits`` (``{"eval", "select"}``) are the unchanged model's, reused by methods that do not fine-tune.
    """
    t0 = time.perf_counter()
    ml = dataset.multilabel
    splits = {"eval": dataset.split(cfg.eval_split), "select": dataset.split(cfg.select_split)}
    if method.fine_tunes:
        state = fine_tune(method, seed, model, dataset, cfg)
    else:
        state = create_train_state(model, optax.identity())
    evals = {}
    for name, sp in splits.items():
        if base_logits is not None and not method.fine_tunes:
            logits = base_logits[name]
        else:
            logits, _ = predict(state, sp.x)
        probs = method.transform_outputs(output_probabilities(logits, ml), ml)
        evals[name] = evaluate_outputs(probs, sp.y, targets, ml)
    return _record(method, seed, evals, time.perf_counter() - t0, targets)


# ----------------------------------------------------------------------------- the sweep

def _key(record: dict) -> tuple:
    rho = record["rho"]
    return record["method"], None if rho is None else round(float(rho), 6), int(record["seed"])


def log_config(model: Classifier, dataset: Dataset, targets: Targets, cfg: RepairConfig) -> dict:
    """The configuration a study's ``results.jsonl`` is bound to (see the module docstring)."""
    return {"model": model_identity(model), "dataset": dataset_identity(dataset),
            "targets": targets.to_json(), "repair": cfg.run_fields()}


def read_study_records(out: str | Path) -> list[dict]:
    """The run records of a study directory's ``results.jsonl`` (without its configuration line)."""
    return [r for r in read_jsonl(Path(out) / "results.jsonl") if RESUMABLE_HEADER not in r]


class _Runner:
    """Runs (or takes from the log) one (method, rho, seed) and counts it on the progress reporter, once:
    the final phase asks again for the seed-0 runs of the grid, which are not counted twice."""

    def __init__(self, log: ResumableJsonl, bar, model, dataset, targets, cfg, base_logits):
        self.log, self.bar, self.counted = log, bar, set()
        self.args = (model, dataset, targets, cfg, base_logits)

    def __call__(self, method: RepairMethod, seed: int) -> dict:
        key = _key({"method": method.name, "rho": method.rho, "seed": seed})
        if key not in self.log:
            self.log.append(run_one(method, seed, *self.args))
        rec = self.log[key]
        if key not in self.counted:
            self.counted.add(key)
            self.bar.update(1, note=f"{method.label} seed {seed}: acc {rec['accuracy']:.4f} "
                                    f"err {rec['target_error']:.4f}")
        return rec


def _grid(get: _Runner, bar, names: list[str], make, cfg: RepairConfig, ft0: dict) -> dict:
    """Phase 2: every tuned method (``make(name, rho)``) over the rho grid, then its ``extra_rhos`` while none
    reaches lambda1."""
    grid: dict[str, list[dict]] = {}
    goal = (1 - cfg.lambda1) * ft0["select_target_error"]
    for name in names:
        grid[name] = [get(make(name, rho), 0) for rho in cfg.rhos]
        for rho in lookup(name).extra_rhos:
            if any(r["select_target_error"] <= goal for r in grid[name]):
                break
            bar.add_total(1)
            grid[name].append(get(make(name, rho), 0))
    return grid


def _harm(model: Classifier, dataset: Dataset, targets: Targets, cfg: RepairConfig, out: Path):
    """The training points' influence on the targets (:func:`repair_jax.repair.data_centric.target_influence`)
    when a method of the study needs it, else None; the scores and the solve go to ``influence.json``."""
    if not any(lookup(m).needs_harm for m in cfg.methods):
        return None
    from repair_jax.repair.data_centric import target_influence

    state = create_train_state(model, optax.identity())
    scores, solver = target_influence(state, dataset.train, dataset.split(cfg.select_split), targets, l2=cfg.l2)
    write_json(out / "influence.json", {"quantity": f"soft {targets.kind} error of {targets.label()} on the "
                                        f"{cfg.select_split} split", "solver": solver,
                                        "harmful_order": np.argsort(-scores, kind="stable")[:int(np.sum(scores > 0))].tolist(),
                                        "scores": scores.tolist()})
    return scores


def _select(grid: dict, orig: dict, lambda1: float) -> dict[str, list[float]]:
    """Phase 3: the rhos of each method by the rules of Sec. 4.4 on the selection split."""
    selected = {}
    for m, rows in grid.items():
        sel_rows = [{"rho": r["rho"], "accuracy": r["select_accuracy"],
                     "target_error": r["select_target_error"]} for r in rows]
        selected[m] = select_rhos(sel_rows, orig["select_accuracy"], orig["select_target_error"], lambda1)
    return selected


@takes_model
def run_study(model: Classifier, dataset: Dataset, targets: Targets, out: str | Path,
              cfg: RepairConfig | None = None, progress: bool = True, plots: bool = True,
              force: bool = False) -> dict:
    """Runs (or resumes) the whole study of ``model`` (a :class:`~repair_jax.classifier.Classifier`, or
    the pair ``module, variables``) into ``out``; returns the summary (also ``summary.json``).

    ``force=True`` discards a ``results.jsonl`` already in ``out`` instead of resuming it.
    """
    cfg = cfg or RepairConfig()
    cfg.validate()
    targets.validate(dataset.num_classes)
    model = check_classifier(model, dataset.input_shape, dataset.num_classes)
    for name in cfg.methods:
        entry = lookup(name)
        _check_batch_norm(name, entry.needs_batch_norm, model)
        if entry.needs_features and not model.has_features:
            raise UserError(f"{name} needs the model's penultimate features and this model exposes none: "
                            "build it with features= naming the layer before the logits, or drop it from the methods")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"output path exists and is not a directory: {out}")
    out.mkdir(parents=True, exist_ok=True)
    log = ResumableJsonl(out / "results.jsonl", log_config(model, dataset, targets, cfg), key=_key,
                         force=force)
    base_state = create_train_state(model, optax.identity())
    base_logits = {n: predict(base_state, dataset.split(s).x)[0]
                   for n, s in (("eval", cfg.eval_split), ("select", cfg.select_split))}
    harm = _harm(model, dataset, targets, cfg, out)
    make = lambda name, rho: make_method(name, targets, rho, harm=harm)
    tuned = [m for m in cfg.methods if m not in BASELINES]  # fine-tuned ones first, as in Zhong et al.'s (2022) tables
    tuned.sort(key=lambda m: not lookup(m).fine_tunes)
    bar = progress_reporter(2 + len(tuned) * len(cfg.rhos), "repair runs", progress)
    get = _Runner(log, bar, model, dataset, targets, cfg, base_logits)
    orig, ft0 = get(make_method("orig"), 0), get(make_method("orig-ft"), 0)
    grid = _grid(get, bar, tuned, make, cfg, ft0)
    selected = _select(grid, orig, cfg.lambda1)
    final = [make_method("orig"), make_method("orig-ft")]
    final += [make(m, rho) for m in grid for rho in selected[m]]
    bar.add_total((cfg.seeds - 1) * sum(not m.deterministic for m in final))
    runs = {(m.name, m.rho): [get(m, s) for s in (range(1) if m.deterministic else range(cfg.seeds))]
            for m in final}
    bar.close()
    summary = summarize_study(runs, grid, selected, targets, dataset, cfg)
    write_json(out / "summary.json", summary)
    write_text(out / "table.md", format_table(summary))
    if plots:
        plot_study(out, runs, grid, targets, dataset, summary)
    return summary
