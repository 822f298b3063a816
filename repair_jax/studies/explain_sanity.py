"""Thesis Sec. 4.4 as a config: cascading parameter randomisation, top layer down (Adebayo 2022,
Sec. 4.4, Fig. 4-7, after Adebayo et al. 2018b "Sanity checks for saliency maps").

One model is trained; ``explain_examples`` test inputs are explained with each method, first with the
trained parameters (step 0) and then after each step of :func:`cascading_randomization`, which
re-initialises the top k parameterised layers (a fresh ``init`` of the same model, seed ``random_seed``).
Every step explains the trained model's predicted class, so each step's maps answer the same question.
PatternNet / PatternAttribution use patterns fitted once, on the training data with the trained model.
Per method and step: mean and SEM over the inputs of the SSIM between heat maps (|attribution| summed
over channels, scaled to [0, 1], as :func:`explanation_ssim` does, Adebayo 2022, Sec. 4.2.1) and of Spearman's rank
correlation of the absolute attributions (Adebayo 2022, Table 4.4 "RK"; absolute values, as Adebayo et al.'s
Fig. 2 ranks), each against step 0. The thesis's finding: gradient-family maps lose their similarity as
layers are re-initialised, modified back-propagation (Guided Backprop) stays similar.
Writes ``results.json``, ``results.md``, ``cascading.png`` (similarity vs randomised layer, one line per
method) and ``maps.png`` (one input's heat maps, method x step).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np

from repair_jax.errors import UserError
from repair_jax.experiment import nested_train, runner
from repair_jax.explain.patterns import fit_patterns
from repair_jax.explain.pipeline import PATTERN_METHODS, method_options
from repair_jax.explain.plots import heat_map
from repair_jax.explain.randomization import cascading_randomization, rank_correlation
from repair_jax.explain.registry import attribute, parse_methods
from repair_jax.explain.spurious import explanation_ssim
from repair_jax.studies.explain_spurious import study_dataset, train_study_model
from repair_jax.io import write_json, write_text
from repair_jax.models import create_model, init_variables
from repair_jax.plots import plt, save_figure
from repair_jax.progress import progress as progress_bar
from repair_jax.train import TrainConfig

MEASURES = ("ssim", "rank")


@dataclasses.dataclass(frozen=True)
class CascadingRandomizationStudy:
    """``train``: the recipe of the one model (its seed the training seed) and its data set (split with its
    split seed, 0 when unset); ``random_seed`` the re-initialisation's."""
    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(
        dataset="fashion_mnist", model="cnn", model_kwargs={"width": 8}, epochs=3, lr=1e-3, train_limit=6000))
    methods: tuple = ("grad", "input_x_grad", "ig", "smoothgrad", "guided_backprop", "gradcam", "patternnet",
                      "pattern_attribution", "deep_taylor")
    explain_examples: int = 50
    steps: int = 32
    samples: int = 16
    random_seed: int = 1

    @classmethod
    def upgrade_fields(cls, fields: dict) -> dict:
        """A record written before the recipe became ``train`` (:func:`repair_jax.experiment.upgraded_record`)."""
        return nested_train(fields, ("dataset", "model", "model_kwargs", "epochs", "lr", "train_limit", "seed"))

    def validate(self) -> None:
        self.train.validate()
        parse_methods(",".join(self.methods))
        if self.explain_examples < 1:
            raise UserError(f"explain_examples must be at least 1, got {self.explain_examples}")
        if self.steps < 1 or self.samples < 1:
            raise UserError(f"steps and samples must be at least 1, got {self.steps} and {self.samples}")


def randomization_steps(params, random_params) -> list[tuple[str, object]]:
    """``[("none", trained), (top layer, ...), ..., (first layer, fully re-initialised)]``: the trained
    model, then the steps of :func:`~repair_jax.explain.randomization.cascading_randomization`."""
    steps = cascading_randomization(params, random_params)
    return [("none", {name: params[name] for name in random_params})] + steps


def similarity_curves(maps: dict) -> dict:
    """``maps``: method -> list over steps of (N, H, W, C) attributions, step 0 the trained model's.
    Returns method -> measure -> list over steps of (mean, SEM) against step 0."""
    out = {}
    for method, per_step in maps.items():
        ref = per_step[0]
        out[method] = {"ssim": [explanation_ssim(ref, m) for m in per_step],
                       "rank": [rank_correlation(np.abs(ref), np.abs(m)) for m in per_step]}
    return out


def _explain_steps(config, apply_fn, steps, x, target, refs, bar, patterns=None) -> dict:
    maps = {m: [] for m in config.methods}
    for name, params in steps:
        for m in config.methods:
            opts = method_options(m, refs, None, config.steps, config.samples, patterns=patterns)
            maps[m].append(np.asarray(attribute(m, apply_fn, params, x, target, **opts)))
        bar.update(note=f"randomised: {name}")
    return maps


def plot_curves(curves: dict, layers: list[str], path: Path) -> None:
    """Similarity vs randomised layer, one line per method, one panel per measure (thesis Fig. 4-7 right)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, measure, title in zip(axes, MEASURES, ("SSIM (heat maps)", "Spearman rank correlation (|attr.|)")):
        for method, cm in curves.items():
            mean, sem = np.array(cm[measure]).T
            ax.errorbar(range(len(layers)), mean, yerr=sem, marker="o", ms=3, capsize=2, label=method)
        ax.set_xticks(range(len(layers)), layers, rotation=45, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("re-initialised down to layer", fontsize=8)
        ax.axhline(0, color="gray", lw=0.5)
    axes[0].set_ylabel("similarity to the trained model's map", fontsize=8)
    axes[1].legend(fontsize=7)
    save_figure(fig, path)


def plot_maps(image: np.ndarray, maps: dict, layers: list[str], path: Path) -> None:
    """One input's heat maps: a row per method, a column per randomisation step (Fig. 4-7 left)."""
    rows, cols = len(maps), len(layers) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for r, (method, per_step) in enumerate(maps.items()):
        axes[r, 0].imshow(np.asarray(image)[..., 0], cmap="gray")
        axes[r, 0].set_title(method, fontsize=7)
        for c, m in enumerate(per_step, start=1):
            axes[r, c].imshow(heat_map(m[0]), cmap="jet", vmin=0, vmax=1)
            if r == 0:
                axes[r, c].set_title(layers[c - 1], fontsize=6)
    save_figure(fig, path)


def results_markdown(curves: dict, layers: list[str], config) -> str:
    """One table per measure: method rows, randomisation-step columns, ``mean ± SEM``."""
    lines = [f"# Cascading randomisation (Adebayo 2022, Sec. 4.4): {config.train.dataset}, {config.train.model} "
             f"{config.train.model_kwargs}, {config.explain_examples} test inputs", ""]
    for measure in MEASURES:
        lines += [f"## {measure} vs the trained model's maps (columns: re-initialised down to)", "",
                  "| method | " + " | ".join(layers) + " |", "|---" * (len(layers) + 1) + "|"]
        lines += [f"| {m} | " + " | ".join(f"{a:.3f} ± {s:.3f}" for a, s in cm[measure]) + " |"
                  for m, cm in curves.items()]
        lines.append("")
    return "\n".join(lines)


def _finite(value: float) -> float | None:
    """JSON has no NaN: an undefined similarity (every map constant) is written as null."""
    return None if np.isnan(value) else value


@runner(CascadingRandomizationStudy)
def run_cascading_randomization(config: CascadingRandomizationStudy, out: Path, *, force: bool,
                                progress: bool) -> dict:
    config.validate()
    ds = study_dataset(config.train)
    model = train_study_model(config.train, ds)
    fresh = init_variables(create_model(config.train.model, ds.num_classes, **config.train.model_kwargs),
                           jax.random.PRNGKey(config.random_seed), ds.input_shape)["params"]
    steps = randomization_steps(model.params, fresh)
    x = ds.test.x[:config.explain_examples]
    target = np.asarray(model.predict(x))
    patterns = (fit_patterns(model.apply_fn, model.params, ds.train.x)  # the trained model's, kept for every step
                if set(config.methods) & set(PATTERN_METHODS) else None)
    with progress_bar(len(steps), "cascading randomisation", enabled=progress) as bar:
        maps = _explain_steps(config, model.apply_fn, steps, x, target, ds.train.x, bar, patterns)
    layers = [name for name, _ in steps]
    curves = similarity_curves(maps)
    out = Path(out)
    summary = {"layers": layers, "test_accuracy": float(np.mean(np.asarray(model.predict(ds.test.x)) == ds.test.y)),
               "curves": {m: {k: [{"mean": _finite(a), "sem": _finite(s)} for a, s in v] for k, v in cm.items()}
                          for m, cm in curves.items()}}
    write_json(out / "results.json", summary)
    write_text(out / "results.md", results_markdown(curves, layers, config))
    plot_curves(curves, layers, out / "cascading.png")
    plot_maps(x[0], maps, layers, out / "maps.png")
    return {"layers": len(layers), "test_accuracy": summary["test_accuracy"]}
