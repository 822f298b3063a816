"""The Que-2 analogue of Sharma (n.d.) as a config and its runner: a backbone alone, with
augmentation, with PAdaIN + augmentation and with multi-task heads + augmentation, several seeds;
the average-metrics table (mean and std over seeds), the per-head accuracies, the class-wise tables
and a Welch t-test of each variant's DOB against the plain model's.

WR rows (Zhong et al. 2022, Sec. 3; variants ``wr_<method>``, e.g. ``wr_w-os``, ``wr_w-loss``)
put the WR repairs on the same scale: each takes the *plain* model of the same seed (trained once per
seed and run; a resumed run that still lacks a WR row retrains it, same seed, same model), diagnoses
its most confused pair on the validation split (top pair by type1conf, as :mod:`repair_jax.diagnosis`
ranks them), applies the method through the WR library (:func:`repair_jax.repair.make_method`,
:func:`repair_jax.repair.fine_tune` with Adam, constant ``wr_lr``, ``wr_epochs`` epochs) at the one
rho of ``wr_rhos``, and scores the repaired test predictions with :func:`evaluate_predictions`.
There is no per-rho selection sweep (Zhong et al. 2022, Sec. 4.4) here: rho is fixed by the config. w-os is
deterministic given the plain model, but the plain model differs per seed, so the seeds are the
samples of the DOB t-test for WR rows too. w-os scales probabilities; they enter
:func:`evaluate_predictions` as log-probabilities (its softmax renormalises them; the argmax, hence
the confusion matrix and DOB, is w-os's own).

Config files: ``experiments/configs/bias_que2_*.py`` (``get_config(smoke=False)``); run with the
project's experiment driver (:func:`repair_jax.experiment.run_experiment`).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from repair_jax.bias.compare import AVERAGE_COLUMNS, evaluate_predictions
from repair_jax.errors import UserError
from repair_jax.experiment import nested_train, run_cells, runner
from repair_jax.io import write_json, write_text
from repair_jax.train import TrainConfig

VARIANTS = ("plain", "augment", "padain_augment", "mtl_augment")
WR_PREFIX = "wr_"  # a variant "wr_<method>": WR method <method> applied to the plain model
WR_VARIANTS = ("wr_w-os", "wr_w-loss")


@dataclasses.dataclass(frozen=True)
class BiasMitigationStudy:
    """One table of Sharma n.d., Que-2: ``variants`` (of :data:`VARIANTS`, or ``wr_<method>`` of a WR method
    with a rho) x ``seeds``, each trained with the recipe ``train`` (its data set, backbone, epochs, optimizer, ...;
    each seed replaces its ``seed``, which also splits the data); ``wr_rhos`` gives each WR method its rho in (0, 1),
    ``wr_epochs`` / ``wr_lr`` the fine-tuning of the methods that fine-tune (batch size ``train.batch_size``)."""

    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(
        dataset="fashion_mnist", model="pyramidnet", model_kwargs={"depth": 20, "alpha": 48}, epochs=15,
        batch_size=128, optimizer="sgd", lr=0.05))
    variants: tuple = VARIANTS + WR_VARIANTS
    seeds: tuple = (0, 1, 2)
    padain_p: float = 0.01
    head_losses: tuple = ("ce", "kl", "l2")
    head_widths: tuple = (0, 128, 64)
    head_alphas: tuple = (1.0, 1.0, 1.0)
    max_degrees: float = 10.0
    wr_rhos: tuple = (("w-os", 0.1), ("w-loss", 0.5))
    wr_epochs: int = 5  # the WR study's fine-tuning defaults (repair_jax.repair.RepairConfig)
    wr_lr: float = 1e-4

    def validate(self) -> None:
        """Every option checked before anything is trained or written: PAdaIN p in [0, 1], one head loss,
        alpha >= 0 and width >= 0 per head, the variants and WR rhos (see :func:`wr_rhos`)."""
        from repair_jax.bias.mtl import check_heads
        from repair_jax.padain import check_padain_p

        self.train.validate()
        check_padain_p(self.padain_p)
        check_heads(self.head_losses, self.head_alphas, self.head_widths)
        wr_rhos(self)

    @classmethod
    def upgrade_fields(cls, fields: dict) -> dict:
        """A record written before the recipe became ``train`` (:func:`repair_jax.experiment.upgraded_record`):
        ``model_kwargs`` was a tuple of (name, value) pairs."""
        if isinstance(fields, dict) and "train" not in fields and "model_kwargs" in fields:
            fields = {**fields, "model_kwargs": dict(fields["model_kwargs"])}
        return nested_train(fields, ("dataset", "train_limit", "model", "model_kwargs", "epochs", "batch_size",
                                     "optimizer", "lr"))


def _build(config: BiasMitigationStudy, variant: str, num_classes: int):
    """(model, objective or None) of one variant."""
    from repair_jax.bias.augment import augmented_objective
    from repair_jax.bias.mtl import mtl_objective, multi_head_model
    from repair_jax.models import create_model
    from repair_jax.objectives import erm_objective

    kw = dict(config.train.model_kwargs)
    if variant == "padain_augment":
        kw["padain_p"] = config.padain_p
    if variant == "mtl_augment":
        model = multi_head_model(config.train.model, num_classes, config.head_widths, **kw)
        objective = mtl_objective(config.head_losses, config.head_alphas)
    else:
        model = create_model(config.train.model, num_classes, **kw)
        objective = erm_objective
    if variant != "plain":
        objective = augmented_objective(objective, seed=0, max_degrees=config.max_degrees)
    return model, objective


def trained_variant(config: BiasMitigationStudy, variant: str, seed: int, dataset, progress: bool = False):
    """Trains one variant with one seed -> (state, test logits, row): :func:`evaluate_predictions` on
    the test split, plus ``head_accuracies`` for the multi-head variant."""
    from repair_jax.bias.mtl import head_accuracies, predict_heads
    from repair_jax.models import init_variables
    from repair_jax.train import create_train_state, fit, make_optimizer, predict, steps_per_epoch

    cfg = dataclasses.replace(config.train, seed=seed)
    model, objective = _build(config, variant, dataset.num_classes)
    variables = jax.jit(lambda k: init_variables(model, k, dataset.input_shape))(jax.random.PRNGKey(cfg.seed_for("init")))
    tx = make_optimizer(cfg, cfg.epochs * steps_per_epoch(cfg, len(dataset.train)))
    state, history = fit(create_train_state(model, variables, tx), dataset, cfg, objective=objective,
                         progress=progress)
    logits, _ = predict(state, dataset.test.x)
    row = evaluate_predictions(variant, dataset.test.y, logits, dataset.num_classes, curves=False)
    row.update(variant=variant, seed=seed, final_train_loss=history[-1]["train_loss"] if history else None)
    if variant == "mtl_augment":
        row["head_accuracies"] = head_accuracies(predict_heads(state, {"x": dataset.test.x}), dataset.test.y)
    return state, logits, row


def wr_rhos(config: BiasMitigationStudy) -> dict[str, float]:
    """Checks ``config.variants`` before anything is trained and returns ``{WR method: rho}`` of its WR
    rows; an unknown variant, a WR method that is unknown or has no rho, a WR method without a rho in
    ``wr_rhos`` or a rho outside (0, 1) is a :class:`UserError`."""
    from repair_jax.errors import require_at_least
    from repair_jax.repair import METHODS

    tuned = [m for m, e in METHODS.items() if e.takes_rho and not e.needs_harm]  # i-drop needs the sweep's influence
    rhos, given = {}, dict(config.wr_rhos)
    for v in config.variants:
        method = v[len(WR_PREFIX):] if v.startswith(WR_PREFIX) else None
        if v not in VARIANTS and method not in tuned:
            raise UserError(f"unknown study variant {v!r}; choose from {', '.join(VARIANTS)} or "
                            f"{', '.join(WR_PREFIX + m for m in tuned)}")
        if method is None:
            continue
        if method not in given:
            raise UserError(f"variant {v} needs a rho: add ({method!r}, rho) to wr_rhos")
        if not 0 < float(given[method]) < 1:
            raise UserError(f"the rho of {method} must lie in (0, 1), got {given[method]}")
        rhos[method] = float(given[method])
    if rhos:
        require_at_least("wr_epochs", config.wr_epochs, 1)
    return rhos


def run_wr_variant(config: BiasMitigationStudy, variant: str, seed: int, dataset, plain) -> dict:
    """The row of WR variant ``wr_<method>`` on ``plain`` = (state, test logits, row) of the plain model
    of ``seed``: :func:`evaluate_predictions` of the repaired test predictions, the repaired pair (most
    confused on the validation split by type1conf, ranked as :func:`repair_jax.diagnosis.diagnose` ranks
    pairs), the WR method and rho, and the pair's type1conf on the test
    split before (``pair_confusion_plain``) and after (``pair_confusion``) the repair."""
    from repair_jax import metrics
    from repair_jax.classifier import as_classifier
    from repair_jax.repair import (RepairConfig, Targets, evaluate_outputs, fine_tune, make_method,
                                   output_probabilities)
    from repair_jax.train import predict, predict_labels

    state, logits, _ = plain
    name = variant[len(WR_PREFIX):]
    cm = metrics.confusion_matrix(dataset.val.y, predict_labels(state, dataset.val.x), dataset.num_classes)
    pair = tuple(metrics.top_pairs(metrics.type1conf_matrix(cm), 1)[0]["classes"])  # diagnosis' ranking
    targets = Targets((pair,))
    method = make_method(name, targets, wr_rhos(config)[name])
    if method.fine_tunes:
        model = _build(config, "plain", dataset.num_classes)[0]
        cfg = RepairConfig(epochs=config.wr_epochs, lr=config.wr_lr, batch_size=config.train.batch_size)
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        logits, _ = predict(fine_tune(method, seed, as_classifier(model, variables), dataset, cfg), dataset.test.x)
    y = dataset.test.y
    probs = method.transform_outputs(output_probabilities(logits, False), False)
    row = evaluate_predictions(variant, y, jnp.log(probs), dataset.num_classes, curves=False)
    before = evaluate_outputs(output_probabilities(plain[1], False), y, targets, False)
    row.update(variant=variant, seed=seed, wr_method=name, rho=method.rho, repaired_pair=list(pair),
               repaired_pair_names=[dataset.class_names[c] for c in pair],
               pair_confusion=evaluate_outputs(probs, y, targets, False)["target_error"],
               pair_confusion_plain=before["target_error"])
    return row


def baseline_of(variant: str, variants) -> str | None:
    """The variant whose DOB ``variant``'s is tested against: ``plain`` where the study has it (Que-2),
    else the same backbone without its ``+...`` suffix (Que-1: ``resnet18+mtl`` against ``resnet18``);
    None for a baseline itself."""
    if "plain" in variants:
        return None if variant == "plain" else "plain"
    base = variant.split("+")[0]
    return base if base != variant and base in variants else None


def dob_test(rows: list[dict], variant: str, baseline: str = "plain") -> dict:
    """Welch's t-test of ``variant``'s DOB against ``baseline``'s over seeds: mean difference, p-value
    (None with fewer than 2 seeds each) and whether the variant lowers DOB (lower mean, p < 0.05)."""
    a = [r["dob"] for r in rows if r["variant"] == variant]
    b = [r["dob"] for r in rows if r["variant"] == baseline]
    from scipy import stats  # here: its import takes about a second of every command that imports repair_jax.bias

    p = float(stats.ttest_ind(a, b, equal_var=False).pvalue) if len(a) > 1 and len(b) > 1 else None
    diff = float(np.mean(a) - np.mean(b)) if a and b else None
    lowers = bool(diff is not None and diff < 0 and p is not None and p < 0.05)
    return {"baseline": baseline, "dob_minus_baseline": diff, "p_value": p, "lowers_dob": lowers}


def summarize_study(rows: list[dict], variants) -> list[dict]:
    """Mean and std over seeds of the average columns per variant, DOB test against its baseline
    (:func:`baseline_of`), mean
    class-wise metrics, head accuracies and, for WR rows, the method, rho, repaired pair per seed and
    the mean pair confusion before and after the repair."""
    table = []
    for v in variants:
        rs = [r for r in rows if r["variant"] == v]
        entry = {"name": v, "seeds": len(rs)}
        for c in AVERAGE_COLUMNS:
            entry[c], entry[f"{c}_std"] = float(np.mean([r[c] for r in rs])), float(np.std([r[c] for r in rs]))
        entry["per_class"] = {m: np.mean([r["per_class"][m] for r in rs], axis=0).tolist()
                              for m in rs[0]["per_class"]}
        if "head_accuracies" in rs[0]:
            entry["head_accuracies"] = {k: float(np.mean([r["head_accuracies"][k] for r in rs]))
                                        for k in rs[0]["head_accuracies"]}
        if "wr_method" in rs[0]:
            entry.update(wr_method=rs[0]["wr_method"], rho=rs[0]["rho"],
                         repaired_pairs={str(r["seed"]): r["repaired_pair_names"] for r in rs},
                         **{k: float(np.mean([r[k] for r in rs])) for k in ("pair_confusion_plain", "pair_confusion")})
        if baseline_of(v, variants) is not None:
            entry["dob_test"] = dob_test(rows, v, baseline_of(v, variants))
        table.append(entry)
    return table


def format_study(table: list[dict], class_names, title: str = "Bias mitigation study (Sharma n.d., Que-2 analogue)") -> str:
    """Markdown: mean +- std table with the DOB test, the per-head table, the WR rows' footnote and
    class-wise tables."""
    from repair_jax.bias.compare import format_comparison

    head = "| variant | " + " | ".join(AVERAGE_COLUMNS) + " | baseline | DOB - baseline | p | lowers DOB |"
    lines = [f"# {title}", "", head, "|" + "---|" * (len(AVERAGE_COLUMNS) + 5)]
    for e in table:
        t = e.get("dob_test", {})
        fmt = lambda x: "-" if x is None else f"{x:.4f}"
        cells = [f"{e[c]:.3f} +- {e[c + '_std']:.3f}" for c in AVERAGE_COLUMNS]
        lines.append(f"| {e['name']} | " + " | ".join(cells) + f" | {t.get('baseline', '-')} | {fmt(t.get('dob_minus_baseline'))} | "
                     f"{fmt(t.get('p_value'))} | {t.get('lowers_dob', '-')} |")
    for e in table:
        if "head_accuracies" in e:
            accs = e["head_accuracies"]
            lines += ["", f"Accuracy of multiple heads ({e['name']}): "
                      + ", ".join(f"{k} {v:.3f}" for k, v in accs.items())]
    lines += _wr_notes(table)
    rec = {"split": "test", "class_names": list(class_names), "rows": table}
    return "\n".join(lines) + "\n\n" + format_comparison(rec).split("\n", 2)[2]


def _wr_notes(table: list[dict]) -> list[str]:
    """The footnote of the WR rows: method, rho, repaired pair per seed, pair confusion before/after."""
    wr = [e for e in table if "wr_method" in e]
    if not wr:
        return []
    lines = ["", "WR rows: the WR method at a fixed rho (no per-rho selection sweep, unlike Zhong et al. 2022, Sec. 4.4) "
             "applied to the plain model of each seed, on the pair it confuses most on the validation split; "
             "w-os is deterministic given the plain model, but the plain model differs per seed, so the seeds "
             "are the t-test's samples. Pair type1conf on the test split, plain -> repaired (mean over seeds):", ""]
    for e in wr:
        pairs = "; ".join(f"seed {s}: {' <-> '.join(p)}" for s, p in e["repaired_pairs"].items())
        lines.append(f"* {e['name']} ({e['wr_method']}, rho {e['rho']:g}): {pairs}; "
                     f"{e['pair_confusion_plain']:.4f} -> {e['pair_confusion']:.4f}")
    return lines


@runner(BiasMitigationStudy)
def run_bias_study(config: BiasMitigationStudy, out: Path, *, force: bool, progress: bool) -> dict:
    """Runs every (variant, seed) not yet in OUT/runs.jsonl; writes results.json, results.md, comparison.png.
    The plain model of a seed is trained once and serves its row and the WR rows of that seed."""
    config.validate()
    load = functools.lru_cache(None)(lambda s: dataclasses.replace(config.train, seed=s).load_dataset())
    plain = functools.lru_cache(None)(lambda s: trained_variant(config, "plain", s, load(s)))

    def run_one(variant: str, seed: int) -> dict:
        if variant.startswith(WR_PREFIX):
            return run_wr_variant(config, variant, seed, load(seed), plain(seed))
        return (plain(seed) if variant == "plain" else trained_variant(config, variant, seed, load(seed)))[2]

    return sweep(config, out, run_one, lambda: load(config.seeds[0]).class_names, force=force,
                 progress=progress, title="Bias mitigation study (Sharma n.d., Que-2 analogue)")


def sweep(config, out: Path, run_one, class_names, *, force: bool, progress: bool, title: str) -> dict:
    """Every (variant, seed) of ``config`` not yet in OUT/runs.jsonl via ``run_one(variant, seed) -> row``;
    then results.json, results.md (``title``) and comparison.png from :func:`summarize_study`."""
    from repair_jax.bias.plots import plot_comparison

    rows = run_cells(Path(out) / "runs.jsonl", dataclasses.asdict(config),
                     [(v, s) for v in config.variants for s in config.seeds], lambda cell: run_one(*cell),
                     key=lambda r: (r["variant"], r["seed"]), force=force, progress=progress, label=title,
                     config_type=type(config))
    table = summarize_study(rows, config.variants)
    names = list(class_names())
    write_json(Path(out) / "results.json", {"class_names": names, "table": table})
    write_text(Path(out) / "results.md", format_study(table, names, title))
    plot_comparison(table, AVERAGE_COLUMNS, "recall", names, Path(out) / "comparison.png")
    return {"table": table}
