"""Thesis Tables 4.2-4.4 analogues as configs (Adebayo 2022, Sec. 4.2.3, 4.2.4 and 4.5).

The spurious-signal studies (Tables 4.2 and 4.3) reuse Table 4.1's set-up by composition: their ``models``
field is a :class:`~repair_jax.studies.explain_spurious.SpuriousAttributionStudy` that says how the normal and
spurious models are trained (data set, model, recipe, signals, aligned class, seeds; its attribution
``methods`` are not used) and how many test inputs are explained (``explain_examples``). Per
(seed, signal) one record goes to ``results.jsonl`` (resumable, as Table 4.1's); ``results.json`` and
``results.md`` (the thesis's layout: per measure, ✗ = the KS test rejects "same distribution" at
``alpha``, ✓ = it does not) are written from the log.

Each measure of Sec. 4.2.1 becomes a two-sample KS test (:func:`~repair_jax.explain.spurious.distributions_differ`)
between the two explanation distributions it compares; the thesis gives no more detail, so the pairs are:

* Table 4.2 (TCAV, Sec. 4.2.3), for the aligned class at ``layer`` on ``explain_examples`` test inputs of
  that class. K-SSD: the spurious model's TCAV scores of the *signal concept* (training images of the
  other classes with the signal) on spurious inputs vs its scores of random CAVs (the ground truth of a
  concept that is not used); CCM: the TCAV scores of the *known concepts* (the clean training images of
  the classes in ``concepts``) on normal inputs, spurious vs normal model; FAM: as K-SSD for the normal
  model (a rejection is a false alarm). The thesis (Tag): K-SSD ✗, CCM ✓, FAM ✓.
* Table 4.3 (training-point ranking, Sec. 4.2.4): each model ranks its own training set for each of
  ``explain_examples`` test inputs by influence (Adebayo 2022, Eq. 3.1, through the last dense layer, on the model's
  predicted label: the most helpful points first) and the identical class metric (ICM, top ``top``) is
  the distribution compared. K-SSD: spurious model, spurious vs normal inputs; CCM: normal inputs,
  spurious vs normal model; FAM: normal model, spurious vs normal inputs. Also recorded: the fraction of
  the top points from the aligned class (for the spurious model, exactly the points carrying the
  signal: the thesis's "fraction of top ranked training spurious signal inputs"). Thesis: ✗, ✓, ✓.
* Table 4.4 (out-of-distribution inputs, Sec. 4.5): one model trained on ``dataset`` and one on
  ``ood_dataset`` (digits, resized bilinearly to the first's input shape: a synthetic variant of the
  real digits, named so in the results); ``explain_examples`` test inputs of ``dataset`` are explained by
  both (each model's predicted class) and compared per method by SSIM of the heat maps and Spearman's
  rank correlation of the absolute attributions (mean and SEM), as
  :func:`~repair_jax.studies.explain_sanity.similarity_curves` does for the randomisation figure.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np

from repair_jax.data import Dataset, Split, flip_labels
from repair_jax.errors import UserError
from repair_jax.experiment import nested_train, runner
from repair_jax.explain.concepts import tcav
from repair_jax.explain.pipeline import method_options
from repair_jax.explain.registry import attribute, parse_methods
from repair_jax.studies.explain_sanity import plot_maps, similarity_curves
from repair_jax.explain.spurious import add_signal, distributions_differ, identical_class_metric
from repair_jax.studies.explain_spurious import (
    SpuriousAttributionStudy, StudyModel, condition_fields, left_out_line, run_spurious_conditions, study_dataset,
    table_records, train_spurious_model, train_study_model,
)
from repair_jax.io import write_json, write_text
from repair_jax.progress import progress as progress_bar
from repair_jax.train import TrainConfig
from repair_jax.influence.gradients import last_layer_loss  # re-exported: the last-layer model of Table 4.3

TRAIN_FIELDS = ("dataset", "model", "model_kwargs", "epochs", "lr", "train_limit", "seed")  # flat before issue 28
KS_MEASURES = ("k_ssd", "ccm", "fam")
KS_NAMES = {"k_ssd": "K-SSD", "ccm": "CCM", "fam": "FAM"}
THESIS_REJECTS = {"k_ssd": True, "ccm": False, "fam": False}  # Adebayo 2022, Tables 4.2 and 4.3 (Tag): ✗, ✓, ✓


def _spurious_models() -> SpuriousAttributionStudy:
    return SpuriousAttributionStudy(train=_cpu_recipe(), methods=(), explain_examples=50, seeds=(0,))


def _cpu_recipe() -> TrainConfig:
    """The CPU-sized recipe of Tables 4.2-4.4 and Sec. 4.3: a CNN of width 8, 3 epochs on 6k Fashion-MNIST images."""
    return TrainConfig(dataset="fashion_mnist", model="cnn", model_kwargs={"width": 8}, epochs=3, lr=1e-3,
                       train_limit=6000)


def _upgrade_models(fields: dict) -> dict:
    """A record of a study composed of ``models`` (a SpuriousAttributionStudy) written before issue 28."""
    if not isinstance(fields, dict) or "models" not in fields:
        return fields
    return {**fields, "models": SpuriousAttributionStudy.upgrade_fields(fields["models"])}


def _check_models(models: SpuriousAttributionStudy) -> None:
    models.train.validate()
    models.validate_signals()
    if models.explain_examples < 2:
        raise UserError(f"explain_examples must be at least 2 (a KS test needs samples), got {models.explain_examples}")
    if not models.signals or not models.seeds:
        raise UserError("the study needs at least one signal and one seed")


@dataclasses.dataclass(frozen=True)
class SpuriousConceptStudy:
    """Table 4.2 analogue: KS tests of TCAV concept scores (see the module docstring)."""
    models: SpuriousAttributionStudy = dataclasses.field(default_factory=_spurious_models)
    layer: str = "Conv_3"
    concepts: tuple = (1, 2, 3)  # known concepts: the training images of these classes
    concept_examples: int = 50
    random_sets: int = 10
    alpha: float = 0.05
    upgrade_fields = classmethod(lambda cls, fields: _upgrade_models(fields))

    def validate(self) -> None:
        _check_models(self.models)
        if self.models.aligned_class in self.concepts or not self.concepts:
            raise UserError(f"concepts {self.concepts} must be non-empty and leave out the aligned class "
                            f"{self.models.aligned_class}")
        if self.random_sets < 3 or self.concept_examples < 2:
            raise UserError(f"random_sets must be >= 3 and concept_examples >= 2, got {self.random_sets}, "
                            f"{self.concept_examples}")


@dataclasses.dataclass(frozen=True)
class SpuriousTrainingRankingStudy:
    """Table 4.3 analogue: KS tests of the identical class metric of influence rankings (module docstring)."""
    models: SpuriousAttributionStudy = dataclasses.field(default_factory=_spurious_models)
    top: int = 10
    damping: float = 0.01
    alpha: float = 0.05
    upgrade_fields = classmethod(lambda cls, fields: _upgrade_models(fields))

    def validate(self) -> None:
        _check_models(self.models)
        if self.top < 1 or self.damping <= 0:
            raise UserError(f"top must be >= 1 and damping > 0, got {self.top}, {self.damping}")


def ks_result(a, b, alpha: float) -> dict:
    """The KS test of two samples as a record: ``{"statistic", "p", "rejected"}``."""
    statistic, p, rejected = distributions_differ(a, b, alpha)
    return {"statistic": statistic, "p": p, "rejected": rejected}


def concept_sets(config: SpuriousConceptStudy, train: Split, signal: str, seed: int):
    """``(signal concept, {class: known concept}, random sets)``, each (concept_examples, H, W, C) from
    the training split: the signal on images of the other classes, clean class images, random images."""
    rng = np.random.default_rng(seed)
    n, aligned = config.concept_examples, config.models.aligned_class
    pick = lambda idx: train.x[np.sort(rng.choice(idx, n, replace=False))]
    signal_x = add_signal(signal, pick(np.flatnonzero(train.y != aligned)))[0]
    known = {c: pick(np.flatnonzero(train.y == c)) for c in config.concepts}
    return signal_x, known, [pick(np.arange(len(train))) for _ in range(config.random_sets)]


def concept_tests(config: SpuriousConceptStudy, spurious: StudyModel, normal: StudyModel, sets,
                  x_norm, x_spu) -> dict:
    """Table 4.2's three KS tests and the TCAV results behind them (see the module docstring)."""
    signal_x, known, randoms = sets
    run = lambda model, x, concept: tcav(model.apply_fn, model.params, x, config.models.aligned_class,
                                         config.layer, concept, randoms, alpha=config.alpha)
    k, f = run(spurious, x_spu, signal_x), run(normal, x_spu, signal_x)
    spu = {c: run(spurious, x_norm, cx) for c, cx in known.items()}
    norm = {c: run(normal, x_norm, cx) for c, cx in known.items()}
    pooled = lambda results: np.concatenate([r.scores for r in results.values()])
    tests = {"k_ssd": ks_result(k.scores, k.random_scores, config.alpha),
             "ccm": ks_result(pooled(spu), pooled(norm), config.alpha),
             "fam": ks_result(f.scores, f.random_scores, config.alpha)}
    scores = lambda r: {"scores": r.scores.tolist(), "random_scores": r.random_scores.tolist(),
                        "t_test_p": r.p_value, "cav_accuracy": r.cav_accuracy}
    return {"tests": tests, "tcav": {"spurious_signal": scores(k), "normal_signal": scores(f),
                                     "spurious_concepts": {str(c): scores(r) for c, r in spu.items()},
                                     "normal_concepts": {str(c): scores(r) for c, r in norm.items()}}}


def _concept_record(config: SpuriousConceptStudy, ds: Dataset, seed, signal, normal, normal_scores) -> dict:
    spurious, _, score = train_spurious_model(config.models, ds, signal, seed)
    x_norm = ds.test.x[ds.test.y == config.models.aligned_class][:config.models.explain_examples]
    x_spu = add_signal(signal, x_norm)[0]
    sets = concept_sets(config, ds.train, signal, seed)
    return {**condition_fields(seed, signal, score, normal_scores),
            **concept_tests(config, spurious, normal, sets, x_norm, x_spu)}


def training_point_ranking(model: StudyModel, train: Split, x, damping: float) -> np.ndarray:
    """Training indices (M, N), most helpful first, for the M inputs ``x``: influence ``I_up,loss``
    (Adebayo 2022, Eq. 3.1, :func:`repair_jax.influence.fit_influence`) of each training point on the loss of the
    model's predicted label, through the last dense layer (penultimate features fixed: the convex
    last-layer model of Koh & Liang 2017), with ``damping`` added to the Hessian. The most negative
    ``I_up,loss`` (up-weighting lowers the test loss most) ranks first."""
    from repair_jax.influence import fit_influence
    from repair_jax.repair.mm import last_dense_layer

    if model.features is None:
        raise UserError("the training-point ranking needs the model's penultimate features (StudyModel.features)")
    feats = np.asarray(model.features(train.x))
    logits = np.asarray(jax.jit(model.apply_fn)(model.params, train.x[:256]))
    last = last_dense_layer(model.params, feats[:256], logits)
    fit = fit_influence(last_layer_loss, last, {"x": feats, "y": train.y}, damping=damping)
    scores, _ = fit.scores({"x": np.asarray(model.features(x)), "y": np.asarray(model.predict(x))})
    return np.argsort(np.asarray(scores), axis=1, kind="stable")


def ranking_metrics(ranking: np.ndarray, train_y, test_y, aligned_class: int, top: int) -> dict:
    """Per input: ICM (the top-``top`` fraction with the input's true class, Adebayo 2022, Sec. 4.2.1) and the
    top-``top`` fraction from the aligned class; lists of floats."""
    return {"icm": [identical_class_metric(r, train_y, int(t), top) for r, t in zip(ranking, test_y)],
            "aligned": [identical_class_metric(r, train_y, aligned_class, top) for r in ranking]}


def _ranking_record(config: SpuriousTrainingRankingStudy, ds: Dataset, seed, signal, normal,
                    normal_scores) -> dict:
    spurious, contaminated, score = train_spurious_model(config.models, ds, signal, seed)
    n = config.models.explain_examples
    x_norm, y = ds.test.x[:n], ds.test.y[:n]
    x_spu = add_signal(signal, x_norm)[0]
    cells = {}
    for name, model, train in (("spurious", spurious, contaminated.train), ("normal", normal, ds.train)):
        ranking = training_point_ranking(model, train, np.concatenate([x_spu, x_norm]), config.damping)  # one fit
        for inputs, r in (("spu", ranking[:n]), ("norm", ranking[n:])):
            cells[f"{name}_{inputs}"] = ranking_metrics(r, train.y, y, config.models.aligned_class, config.top)
    icm = lambda cell: cells[cell]["icm"]
    tests = {"k_ssd": ks_result(icm("spurious_spu"), icm("spurious_norm"), config.alpha),
             "ccm": ks_result(icm("spurious_norm"), icm("normal_norm"), config.alpha),
             "fam": ks_result(icm("normal_spu"), icm("normal_norm"), config.alpha)}
    return {**condition_fields(seed, signal, score, normal_scores), "tests": tests, "rankings": cells}


def summarize_tests(records: list[dict]) -> dict:
    """signal -> measure -> rejections over seeds, mean KS statistic and median p."""
    out: dict = {}
    for rec in records:
        for measure, t in rec["tests"].items():
            out.setdefault(rec["signal"], {}).setdefault(measure, []).append(t)
    return {s: {m: {"rejected": sum(t["rejected"] for t in ts), "seeds": len(ts),
                    "statistic": float(np.mean([t["statistic"] for t in ts])),
                    "p_median": float(np.median([t["p"] for t in ts]))} for m, ts in ms.items()}
            for s, ms in out.items()}


def concept_details(records: list[dict]) -> list[str]:
    """Markdown rows of the mean TCAV scores behind Table 4.2 (per seed and signal)."""
    mean = lambda r, k="scores": f"{np.mean(r[k]):.2f}"
    known = lambda cs: ", ".join(f"{c}: {mean(r)}" for c, r in cs.items())
    lines = ["| seed | signal | spurious model: signal concept (random CAVs) | normal model: signal concept "
             "(random CAVs) | spurious model: known concepts | normal model: known concepts |", "|---" * 6 + "|"]
    for rec in records:
        t = rec["tcav"]
        lines.append(f"| {rec['seed']} | {rec['signal']} | {mean(t['spurious_signal'])} "
                     f"({mean(t['spurious_signal'], 'random_scores')}) | {mean(t['normal_signal'])} "
                     f"({mean(t['normal_signal'], 'random_scores')}) | {known(t['spurious_concepts'])} | "
                     f"{known(t['normal_concepts'])} |")
    return ["Mean TCAV scores of the aligned class (random-CAV scores in brackets; known concepts by class):",
            ""] + lines


def ranking_details(records: list[dict]) -> list[str]:
    """Markdown rows of the mean ICM and aligned-class fraction behind Table 4.3 (per seed and signal)."""
    cells = ("spurious_spu", "spurious_norm", "normal_spu", "normal_norm")
    lines = ["| seed | signal | spurious model, spurious inputs | spurious model, normal inputs | normal model, "
             "spurious inputs | normal model, normal inputs |", "|---" * 6 + "|"]
    for rec in records:
        r = rec["rankings"]
        lines.append(f"| {rec['seed']} | {rec['signal']} | " + " | ".join(
            f"{np.mean(r[c]['icm']):.2f} / {np.mean(r[c]['aligned']):.2f}" for c in cells) + " |")
    return ["Mean ICM / mean fraction of the top training points from the aligned class (for the spurious "
            "model: the points carrying the signal):", ""] + lines


def ks_markdown(title: str, table: dict, records: list[dict], details: list[str]) -> str:
    """The thesis's Table 4.2/4.3 layout (metric rows, ✗ = rejected, ✓ = not), one column per signal and
    the thesis's Tag column; then the model conditions and ``details`` (markdown lines)."""
    signals = list(table)
    mark = lambda c: ("✗" if 2 * c["rejected"] > c["seeds"] else "✓") + (
        f" {c['rejected']}/{c['seeds']} rejected" if c["seeds"] > 1 else "")
    lines = [f"# {title}", "", "✗: the KS test rejects identical distributions; ✓: it does not "
             "(KS statistic D, p; median over seeds).", "",
             "| metric | " + " | ".join(signals) + " | thesis (Tag) |", "|---" * (len(signals) + 2) + "|"]
    for m in KS_MEASURES:
        cells = [f"{mark(table[s][m])} (D={table[s][m]['statistic']:.2f}, p={table[s][m]['p_median']:.2g})"
                 for s in signals]
        lines.append(f"| {KS_NAMES[m]} | " + " | ".join(cells) + f" | {'✗' if THESIS_REJECTS[m] else '✓'} |")
    lines += ["", "| seed | signal | spurious score (> 0.85?) | normal model's largest score (< 0.1?) |",
              "|---|---|---|---|"]
    lines += [f"| {r['seed']} | {r['signal']} | {r['spurious_score']:.3f} ({'yes' if r['spurious_ok'] else 'no'}) | "
              f"{r['normal_max_score']:.3f} ({'yes' if r['normal_ok'] else 'no'}) |" for r in records]
    return "\n".join(lines + [""] + details) + "\n"


def _run_ks_study(config, record, details, title: str, out: Path, force: bool, progress: bool) -> dict:
    config.validate()
    models = config.models
    ds = study_dataset(models.train)
    records = run_spurious_conditions(models, ds, Path(out) / "results.jsonl", dataclasses.asdict(config),
                                      lambda seed, s, normal, scores: record(config, ds, seed, s, normal, scores),
                                      title, force=force, progress=progress, config_type=type(config))
    kept, left_out = table_records(models, records)
    summary = {"table": summarize_tests(kept), "records": len(records),
               "spurious_ok": all(r["spurious_ok"] for r in records), "normal_ok": all(r["normal_ok"] for r in records)}
    if models.spurious_models_only:
        summary["left_out"] = [[r["seed"], r["signal"]] for r in left_out]
    write_json(Path(out) / "results.json", summary)
    write_text(Path(out) / "results.md", ks_markdown(title, summary["table"], records,
                                                      left_out_line(left_out) + [""] * bool(left_out) + details(kept)))
    return summary


@runner(SpuriousConceptStudy)
def run_spurious_concept_study(config: SpuriousConceptStudy, out: Path, *, force: bool, progress: bool) -> dict:
    return _run_ks_study(config, _concept_record, concept_details, "Table 4.2 analogue: TCAV concept rankings, KS tests",
                         out, force, progress)


@runner(SpuriousTrainingRankingStudy)
def run_training_ranking_study(config: SpuriousTrainingRankingStudy, out: Path, *, force: bool,
                               progress: bool) -> dict:
    return _run_ks_study(config, _ranking_record, ranking_details, "Table 4.3 analogue: training-point ranking (ICM), KS tests",
                         out, force, progress)


@dataclasses.dataclass(frozen=True)
class OODExplanationStudy:
    """Table 4.4 analogue: explanations of ``train.dataset`` test inputs from a model of the recipe ``train``
    vs from an ``ood_dataset`` model (the same recipe, trained ``ood_epochs``), SSIM and rank correlation per
    method (module docstring). Both data sets are split with ``train``'s split seed (0 when unset)."""
    train: TrainConfig = dataclasses.field(default_factory=lambda: _cpu_recipe())
    ood_dataset: str = "digits"
    ood_epochs: int = 20
    methods: tuple = ("grad", "smoothgrad", "smoothgrad_mean_sq", "vargrad", "input_x_grad", "ig", "expected_grad",
                      "guided_backprop", "deconvnet", "lrp_epsilon")
    explain_examples: int = 190  # Table 4.4's 190 examples
    steps: int = 32
    samples: int = 16
    upgrade_fields = classmethod(lambda cls, fields: _upgrade_flat_record(fields))

    def validate(self) -> None:
        self.train.validate()
        parse_methods(",".join(self.methods))
        if self.explain_examples < 2:
            raise UserError(f"explain_examples must be at least 2, got {self.explain_examples}")
        if self.train.dataset == self.ood_dataset:
            raise UserError(f"ood_dataset must differ from train.dataset ({self.train.dataset!r})")


def _upgrade_flat_record(fields: dict) -> dict:
    """A record of Table 4.4's or Sec. 4.3's study written before issue 28 (the recipe's fields flat, nested into
    ``train`` now). Those records also predate issue 29's renaming of the thesis's SGradSQ, the square of the
    SmoothGrad mean (Adebayo 2022, Sec. 3.2), from ``smoothgrad_sq`` to ``smoothgrad_mean_sq`` (``smoothgrad_sq``
    is now Hooker et al. 2019's mean of squares): their ``smoothgrad_sq`` is today's ``smoothgrad_mean_sq``."""
    if isinstance(fields, dict) and "train" not in fields and isinstance(fields.get("methods"), list):
        fields = {**fields, "methods": ["smoothgrad_mean_sq" if m == "smoothgrad_sq" else m for m in fields["methods"]]}
    return nested_train(fields, TRAIN_FIELDS)


def resized_dataset(ds: Dataset, input_shape: tuple) -> Dataset:
    """``ds`` with every image resized bilinearly to ``input_shape`` (H, W, C), C equal to ``ds``'s:
    a synthetic variant of real data, named ``"<name> resized to HxW"``."""
    if input_shape[-1] != ds.input_shape[-1]:
        raise UserError(f"{ds.name} has {ds.input_shape[-1]} channels, the inputs to explain {input_shape[-1]}")
    resize = lambda s: Split(np.asarray(jax.image.resize(s.x, (len(s), *input_shape), "bilinear")), s.y)
    return dataclasses.replace(ds, name=f"{ds.name} resized to {input_shape[0]}x{input_shape[1]}",
                               train=resize(ds.train), val=resize(ds.val), pool=resize(ds.pool), test=resize(ds.test))


def similarity_rows(curves: dict, pair: str) -> list[str]:
    """Markdown rows of the thesis's Tables 4.4 layout: a column per method, rows SSIM, SEM, RK, SEM
    (``curves`` of :func:`~repair_jax.studies.explain_sanity.similarity_curves`, step 1 against step 0)."""
    methods = list(curves)
    row = lambda name, measure, k: f"| {name} | " + " | ".join(f"{curves[m][measure][1][k]:.3g}" for m in methods) + " |"
    return ["| metric | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|",
            row(f"SSIM ({pair})", "ssim", 0), row("SEM", "ssim", 1), row(f"RK ({pair})", "rank", 0),
            row("SEM", "rank", 1)]


def ood_markdown(config: OODExplanationStudy, curves: dict, accuracies: dict) -> str:
    """The thesis's Table 4.4 layout: metric rows (SSIM, SEM, RK, SEM), a column per method."""
    dataset = config.train.dataset
    pair = f"{dataset} → {config.ood_dataset} model"
    return "\n".join([
        f"# Table 4.4 analogue: {config.explain_examples} {dataset} test inputs explained by a "
        f"{dataset} model and by a {accuracies['ood_dataset_name']} model", "",
        f"Test accuracy: {dataset} model {accuracies['model']:.3f} on {dataset}, "
        f"{config.ood_dataset} model {accuracies['ood_model']:.3f} on its own test split.", "",
        *similarity_rows(curves, pair), ""])


def _accuracy(model: StudyModel, split: Split) -> float:
    return float(np.mean(np.asarray(model.predict(split.x)) == split.y))


@runner(OODExplanationStudy)
def run_ood_explanation_study(config: OODExplanationStudy, out: Path, *, force: bool, progress: bool) -> dict:
    config.validate()
    ds = study_dataset(config.train)
    ood = resized_dataset(study_dataset(dataclasses.replace(config.train, dataset=config.ood_dataset)), ds.input_shape)
    model = train_study_model(config.train, ds)
    ood_model = train_study_model(dataclasses.replace(config.train, epochs=config.ood_epochs), ood)
    x = ds.test.x[:config.explain_examples]
    maps = _two_model_maps(config, [model, ood_model], x, [None, None], ds.train.x, progress)
    curves = similarity_curves(maps)
    accuracies = {"model": _accuracy(model, ds.test), "ood_model": _accuracy(ood_model, ood.test),
                  "ood_dataset_name": ood.name}
    out = Path(out)
    table = {m: {k: {"mean": v[1][0], "sem": v[1][1]} for k, v in cm.items()} for m, cm in curves.items()}
    write_json(out / "results.json", {"accuracies": accuracies, "table": table})
    write_text(out / "results.md", ood_markdown(config, curves, accuracies))
    plot_maps(x[0], {m: v for m, v in maps.items()}, [f"{config.train.dataset} model", f"{config.ood_dataset} model"],
              out / "maps.png")
    return {"accuracies": accuracies}


@dataclasses.dataclass(frozen=True)
class MislabelledExplanationStudy:
    """Sec. 4.3 analogue (Adebayo 2022, Sec. 4.3 "Challenges with Debugging Noisy Training
    Labels", App. A.2.1): a model of the recipe ``train`` and the same recipe and seed trained with
    ``flip_fraction`` of the training labels flipped to another class (a synthetic variant of the real
    data, named so in the results; the thesis flips 10 %). ``explain_examples`` flipped training inputs are
    explained by both models, each for the label it was trained with (the true label, the flipped one),
    and compared per method by SSIM and Spearman rank correlation of |attributions| (mean and SEM).
    The thesis: SSIM 0.73-0.99 for every method, so attributions would not reveal the mislabelling."""
    train: TrainConfig = dataclasses.field(default_factory=lambda: _cpu_recipe())
    flip_fraction: float = 0.1
    methods: tuple = OODExplanationStudy.methods
    explain_examples: int = 190
    steps: int = 32
    samples: int = 16
    upgrade_fields = classmethod(lambda cls, fields: _upgrade_flat_record(fields))

    def validate(self) -> None:
        self.train.validate()
        parse_methods(",".join(self.methods))
        if not 0 < self.flip_fraction < 1:
            raise UserError(f"flip_fraction must be in (0, 1), got {self.flip_fraction}")
        if self.explain_examples < 2:
            raise UserError(f"explain_examples must be at least 2, got {self.explain_examples}")


def _two_model_maps(config, models: list, x, targets: list, refs, progress: bool) -> dict:
    """method -> [attributions of ``x`` by each model for its target], as similarity_curves takes them."""
    maps = {m: [] for m in config.methods}
    with progress_bar(len(models) * len(config.methods), "explanations", enabled=progress) as bar:
        for i, (model, target) in enumerate(zip(models, targets)):
            for method in config.methods:
                opts = method_options(method, refs, None, config.steps, config.samples)
                maps[method].append(np.asarray(attribute(method, model.apply_fn, model.params, x, target, **opts)))
                bar.update(note=f"model {i}: {method}")
    return maps


@runner(MislabelledExplanationStudy)
def run_mislabelled_explanation_study(config: MislabelledExplanationStudy, out: Path, *, force: bool,
                                      progress: bool) -> dict:
    config.validate()
    ds = study_dataset(config.train)
    y_noisy, flipped = flip_labels(ds.train.y, config.flip_fraction, ds.num_classes, config.train.seed)
    noisy_ds = dataclasses.replace(ds, name=f"{ds.name} with {config.flip_fraction:.0%} of training labels "
                                   "flipped (synthetic)", train=Split(ds.train.x, y_noisy))
    clean, noisy = train_study_model(config.train, ds), train_study_model(config.train, noisy_ds)
    idx = np.flatnonzero(flipped)[:config.explain_examples]
    x = ds.train.x[idx]
    maps = _two_model_maps(config, [clean, noisy], x, [ds.train.y[idx], y_noisy[idx]], ds.train.x, progress)
    curves = similarity_curves(maps)
    numbers = {"clean_test_accuracy": _accuracy(clean, ds.test), "noisy_test_accuracy": _accuracy(noisy, ds.test),
               "noisy_fits_flipped_labels": _accuracy(noisy, Split(x, y_noisy[idx])),
               "noisy_fits_all_flipped_labels": _accuracy(noisy, Split(ds.train.x[flipped], y_noisy[flipped])),
               "flipped": int(flipped.sum()),  # Adebayo 2022, Sec. 4.3 precondition (studies.preconditions)
               "noisy_dataset_name": noisy_ds.name, "explained": int(len(idx))}
    table = {m: {k: {"mean": v[1][0], "sem": v[1][1]} for k, v in cm.items()} for m, cm in curves.items()}
    write_json(Path(out) / "results.json", {"numbers": numbers, "table": table})
    write_text(Path(out) / "results.md", "\n".join([
        f"# Sec. 4.3 analogue: {len(idx)} mislabelled training inputs explained by the clean model (true label) "
        f"and by the model trained on {noisy_ds.name} (flipped label)", "",
        f"Test accuracy: clean {numbers['clean_test_accuracy']:.3f}, noisy {numbers['noisy_test_accuracy']:.3f}; "
        f"the noisy model predicts the flipped label on {numbers['noisy_fits_flipped_labels']:.3f} of the "
        "explained inputs. Thesis: SSIM 0.73-0.99 for every method.", "",
        *similarity_rows(curves, "clean → noisy model"), ""]))
    plot_maps(x[0], maps, ["clean model", "noisy model"], Path(out) / "maps.png")
    return {"numbers": numbers}
