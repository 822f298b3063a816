"""``explain_run``: attributions of one example of a trained run, written as arrays, JSON and a figure."""

from __future__ import annotations

import io as _io
import time
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from repair_jax.data import SPLITS
from repair_jax.errors import UserError
from repair_jax.explain.cam import conv_layers, resolve_layer
from repair_jax.explain.model_fn import eval_apply_fn
from repair_jax.explain.patterns import fit_patterns
from repair_jax.explain.plots import plot_attributions
from repair_jax.explain.registry import attribute, parse_methods
from repair_jax.explain.surrogate import SEGMENTATIONS
from repair_jax.io import atomic_dir, write_bytes_atomic, write_json
from repair_jax.progress import progress as progress_bar

CAM_METHODS = ("gradcam", "gradcam_pp")
SURROGATE_METHODS = ("lime", "kernel_shap")
REFERENCES = 64  # training images drawn (seed 0) as Expected Gradients' references
PATTERN_METHODS = ("patternnet", "pattern_attribution")
PATTERN_EXAMPLES = 4096  # training images PatternNet's patterns are fitted on (explain_run)


def method_options(name: str, train_x: np.ndarray, layer: str | None, steps: int, samples: int,
                   segments: str = "patches", patterns=None) -> dict:
    """The options ``explain_run`` and the studies give method ``name`` (EG: 64 training references;
    LIME / KernelSHAP: ``segments`` and their own sample counts, 1000 and 2048; PatternNet /
    PatternAttribution: ``patterns``, :func:`~repair_jax.explain.patterns.fit_patterns` of the model)."""
    if name in PATTERN_METHODS:
        return {"patterns": patterns}
    if name == "ig":
        return {"steps": steps}
    if name in ("smoothgrad", "smoothgrad_sq", "smoothgrad_mean_sq", "vargrad"):
        return {"samples": samples}
    if name == "expected_grad":
        idx = np.random.default_rng(0).choice(len(train_x), min(REFERENCES, len(train_x)), replace=False)
        return {"samples": samples, "references": train_x[np.sort(idx)]}
    if name in CAM_METHODS:
        return {"layer": layer}
    if name in SURROGATE_METHODS:
        return {"segments": segments}
    return {}


def _check_request(methods: str | Sequence[str], split: str, steps: int, samples: int, segments: str) -> list[str]:
    names = parse_methods(methods if isinstance(methods, str) else ",".join(methods))
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if segments not in SEGMENTATIONS:
        raise UserError(f"unknown segmentation {segments!r}; choose one of {', '.join(SEGMENTATIONS)}")
    if steps < 1 or samples < 1:
        raise UserError(f"steps and samples must be >= 1, got {steps} and {samples}")
    return names


def _select_methods(names, methods, apply_fn, params, shape, layer):
    """Drops the CAM methods from ``all`` for a model without convolutions; checks ``layer``."""
    skipped = []
    if any(n in CAM_METHODS for n in names):
        if methods == "all" and layer is None and not conv_layers(apply_fn, params, shape):
            skipped = [n for n in names if n in CAM_METHODS]
            names = [n for n in names if n not in CAM_METHODS]
        else:
            layer = resolve_layer(apply_fn, params, shape, layer)
    return names, skipped, layer


def explain_run(run_path, index: int, out, *, split: str = "test", methods: str | Sequence[str] = "all",
                target: int | None = None, layer: str | None = None, steps: int = 50, samples: int = 50,
                segments: str = "patches", force: bool = False, progress: bool = True) -> dict:
    """Attributions of example ``index`` of ``split`` for a trained run; writes ``OUT/attributions.npz``
    (one (H, W, C) array per method, plus ``input``), ``OUT/summary.json`` and ``OUT/attributions.png``.

    ``target``: the explained class (default: the predicted class); ``layer``: GradCAM's layer
    (default: the last convolution); ``steps``: IG nodes; ``samples``: noise / EG draws; ``segments``:
    LIME / KernelSHAP's segments (``patches``: 16, ``slic``: about 16 superpixels).
    With ``methods='all'`` a model without convolutions skips GradCAM (listed in ``skipped``).
    """
    from repair_jax.runs import load_run

    names = _check_request(methods, split, steps, samples, segments)
    with atomic_dir(out, overwrite=force) as tmp:  # a non-empty OUT without force fails before any work
        summary, image, maps = _explain(load_run(run_path), names, methods, index, split, target, layer,
                                        steps, samples, segments, progress)
        summary["run"] = str(run_path)
        buf = _io.BytesIO()
        np.savez_compressed(buf, input=image, **maps)
        write_bytes_atomic(Path(tmp) / "attributions.npz", buf.getvalue())
        write_json(Path(tmp) / "summary.json", summary)
        if maps:
            plot_attributions(image, maps, Path(tmp) / "attributions.png",
                              title=f"{split} #{index}: explaining {summary['target_name']!r}")
    return summary


def _explain(run, names, methods, index, split, target, layer, steps, samples, segments, progress):
    """(summary, image (H, W, C), {method: attribution}) of one example of a loaded run."""
    ds = run.dataset()
    data = getattr(ds, split)
    if not 0 <= index < len(data):
        raise UserError(f"index {index} is out of range: the {split} split has {len(data)} examples")
    apply_fn, params = eval_apply_fn(run)
    x = jnp.asarray(data.x[index:index + 1])
    logits = np.asarray(apply_fn(params, x))[0]
    target = int(np.argmax(logits)) if target is None else target
    if not 0 <= target < len(logits):
        raise UserError(f"target {target} is out of range: the model has {len(logits)} classes")
    names, skipped, layer = _select_methods(names, methods, apply_fn, params, x.shape[1:], layer)
    maps, stats = {}, {}
    patterns = (fit_patterns(apply_fn, params, ds.train.x[:PATTERN_EXAMPLES])
                if any(n in PATTERN_METHODS for n in names) else None)
    with progress_bar(len(names), "explain", enabled=progress) as bar:
        for name in names:
            t0 = time.perf_counter()
            opts = method_options(name, ds.train.x, layer, steps, samples, segments, patterns)
            a = np.asarray(jax.block_until_ready(attribute(name, apply_fn, params, x, np.array([target]), **opts)))[0]
            maps[name] = a
            stats[name] = {"sum": float(a.sum()), "abs_sum": float(np.abs(a).sum()),
                           "max_abs": float(np.abs(a).max()), "seconds": round(time.perf_counter() - t0, 3),
                           "options": {k: v for k, v in opts.items() if k not in ("references", "patterns")}}
            bar.update(note=name)
    if "ig" in maps:  # completeness (Sundararajan et al. 2017): sum IG = f(x) - f(0)
        base = float(np.asarray(apply_fn(params, jnp.zeros_like(x)))[0, target])
        stats["ig"]["completeness_gap"] = stats["ig"]["sum"] - (float(logits[target]) - base)
    label = data.y[index]
    summary = {"split": split, "index": index,
               "label": label.tolist() if np.ndim(label) else int(label),
               "predicted": int(np.argmax(logits)), "target": target, "target_name": run.class_names[target],
               "logits": logits.tolist(), "layer": layer, "methods": stats, "skipped": skipped}
    return summary, np.asarray(x[0]), maps
