"""Attributions per second: ``repair_jax.explain.attribute`` (jitted, vmapped) vs Captum on the same
architecture, weights and batch in PyTorch (when the ``bench`` extra is installed).

Models: the SmallCNN (``cnn``, width 32) on 32 (``quick``: 8) 28x28x1 Fashion-MNIST test images
and ResNet-18 (``resnet18``; width: :func:`resnet_width`) on the same images padded to 32x32 with the grey channel
repeated three times (a synthetic RGB variant of real data). Random initial weights with random
BatchNorm running statistics (eval mode); the speed does not depend on training. Methods and their
Captum counterparts, each on the whole batch with the labels as targets:

* ``grad`` - ``Saliency(abs=False)``;
* ``ig`` (50 Gauss-Legendre nodes, black baseline) - ``IntegratedGradients(n_steps=50, method="gausslegendre")``;
* ``smoothgrad`` (50 samples, sigma 0.15) - ``NoiseTunnel(Saliency)`` (``nt_type="smoothgrad"``, ``nt_samples=50``, ``stdevs=0.15``);
* ``gradcam`` (last convolution, upsampled bilinearly) - ``LayerGradCam(relu_attributions=True)`` then
  ``LayerAttribution.interpolate(..., "bilinear")``.

The torch models are :mod:`benchmarks.torch_mirror` copies holding the flax weights; before timing
Captum, the benchmark asserts that both give the same gradient, IG and GradCAM maps (relative errors within
``TOLERANCE``), which is what makes the ratios meaningful. Timing: best of ``reps`` (15 for
the one-gradient methods, 3 for IG and SmoothGrad, 2 with ``quick``) after a warm-up (compile), on whatever device JAX and torch use (torch on CUDA when available).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import best_time
from repair_jax.data import load_dataset
from repair_jax.explain import attribute, conv_layers
from repair_jax.models import create_model, init_variables

# agreement checks: method -> (error measure, bound); "max" = max|a - b| / max|b|, "l2" = ||a - b|| / ||b||
# over the batch. IG sums 50 gradients along a path; at the rare path point within float32 rounding
# of a ReLU or max-pool kink the two frameworks may take different branches, so IG is bounded in l2.
TOLERANCE = {"grad": ("max", 1e-3), "ig": ("l2", 1e-2), "gradcam": ("max", 1e-3)}
SAMPLES = 50  # IG nodes and SmoothGrad samples
STDEV = 0.15
OUR_OPTIONS = {"grad": {}, "ig": {"steps": SAMPLES, "rule": "gauss_legendre"},
               "smoothgrad": {"samples": SAMPLES, "stdev": STDEV}, "gradcam": {}}


def benchmark_models(images: np.ndarray, resnet_width: int) -> dict:
    """name -> (model name, options, images): the SmallCNN on (N, 28, 28, 1), ResNet-18 on the
    images padded to 32x32 with 3 channels."""
    rgb = np.repeat(np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0))), 3, axis=-1)
    return {"cnn": ("cnn", {}, images), "resnet18": ("resnet18", {"width": resnet_width}, rgb)}


def flax_model(name: str, options: dict, x: np.ndarray, seed: int = 0):
    """``(apply_fn, params, variables)`` of a model in eval mode with random running statistics
    (mean ~ N(0, 0.1^2), var ~ U(0.5, 1.5)), so BatchNorm is not the identity in the comparison."""
    model = create_model(name, 10, **options)
    variables = init_variables(model, jax.random.PRNGKey(seed), x.shape[1:])
    rng = np.random.default_rng(seed)
    stats = jax.tree_util.tree_map_with_path(
        lambda path, a: (rng.uniform(0.5, 1.5, a.shape) if path[-1].key == "var" else 0.1 * rng.standard_normal(a.shape)
                         ).astype(np.float32), variables["batch_stats"])
    variables = {"params": variables["params"], "batch_stats": stats}

    def apply_fn(p, z):
        return model.apply({"params": p, "batch_stats": stats}, z, train=False)[0]

    return apply_fn, variables["params"], variables


def torch_model(name: str, variables, x: np.ndarray):
    from benchmarks import torch_mirror

    if name == "cnn":
        return torch_mirror.SmallCNN(variables)
    return torch_mirror.ResNet(variables, (2, 2, 2, 2), x.shape[1])


def captum_methods(model) -> dict:
    """Method name -> f(inputs NCHW, targets) -> attributions NCHW, Captum's counterparts of ours."""
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Saliency

    saliency, ig = Saliency(model), IntegratedGradients(model)
    tunnel, cam = NoiseTunnel(Saliency(model)), LayerGradCam(model, model.last_conv)

    def gradcam(x, t):
        maps = cam.attribute(x, target=t, relu_attributions=True)
        return LayerAttribution.interpolate(maps, tuple(x.shape[2:]), "bilinear").expand_as(x)

    return {"grad": lambda x, t: saliency.attribute(x, target=t, abs=False),
            "ig": lambda x, t: ig.attribute(x, target=t, n_steps=SAMPLES, method="gausslegendre"),
            "smoothgrad": lambda x, t: tunnel.attribute(x, target=t, nt_type="smoothgrad", nt_samples=SAMPLES,
                                                        stdevs=STDEV, abs=False),
            "gradcam": gradcam}


def ours(method: str, apply_fn, params, x, target, layer: str):
    options = dict(OUR_OPTIONS[method], **({"layer": layer} if method == "gradcam" else {}))
    return attribute(method, apply_fn, params, x, target, **options)


def relative_errors(a, b) -> dict:
    """``{"max": max |a - b| / max |b|, "l2": ||a - b|| / ||b||}`` of two arrays."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return {"max": float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12)),
            "l2": float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))}


def disagreements(errors: dict) -> dict:
    """The methods of ``agreement``'s result whose error exceeds its ``TOLERANCE`` bound."""
    return {m: e for m, e in errors.items() if not e[TOLERANCE[m][0]] < TOLERANCE[m][1]}


def agreement(name: str, apply_fn, params, variables, x: np.ndarray, y: np.ndarray,
              methods=tuple(TOLERANCE)) -> dict:
    """Relative errors (:func:`relative_errors`) of ours vs Captum (the torch copy of ``flax_model``'s
    model ``name``) for each of ``methods`` (keys of ``TOLERANCE``) on images ``x`` (N, H, W, C) and targets ``y`` (N,)."""
    import torch

    tm = torch_model(name, variables, x)
    layer = conv_layers(apply_fn, params, x.shape[1:])[-1]
    xt = torch.as_tensor(x).permute(0, 3, 1, 2).contiguous().requires_grad_()
    yt = torch.as_tensor(y, dtype=torch.long)
    captum = captum_methods(tm)
    return {m: relative_errors(ours(m, apply_fn, params, x, y, layer),
                               captum[m](xt, yt).detach().permute(0, 2, 3, 1).numpy()) for m in methods}


def _torch_best_time(fn, reps: int) -> float:
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def _captum_row(name, variables, x, y, reps: dict) -> dict:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tm = torch_model(name, variables, x).to(device)
    xt = torch.as_tensor(x).permute(0, 3, 1, 2).contiguous().to(device).requires_grad_()
    yt = torch.as_tensor(y, dtype=torch.long).to(device)
    return {m: _torch_best_time(lambda f=f: f(xt, yt), reps[m]) for m, f in captum_methods(tm).items()}


def _baseline() -> tuple[bool, str]:
    """(whether torch and captum import, their versions and device, or why the Captum side is skipped)."""
    try:
        import captum
        import torch
    except ImportError:
        return False, "baseline not installed (pip install .[bench]); Captum comparison skipped"
    device = "cuda" if torch.cuda.is_available() else f"{torch.get_num_threads()} threads"
    return True, f"captum {captum.__version__}, torch {torch.__version__}, {device}"


def resnet_width(quick: bool) -> int:
    """ResNet-18's width: 64 (the standard one) on an accelerator; 16 on a CPU, where one IG or
    SmoothGrad call of the full width on 32 images takes over a minute per framework; 8 with ``quick``."""
    if quick:
        return 8
    return 64 if jax.default_backend() != "cpu" else 16


def run(quick: bool = False) -> dict:
    n = 8 if quick else 32
    reps = {m: 2 if quick else (3 if m in ("ig", "smoothgrad") else 15) for m in OUR_OPTIONS}
    test = load_dataset("fashion_mnist").test
    images, labels = test.x[:n].astype(np.float32), test.y[:n].astype(np.int32)
    with_captum, note = _baseline()
    out: dict = {"batch": n, "reps": reps, "timing": "best of reps after warm-up", "samples": SAMPLES,
                 "smoothgrad_stdev": STDEV, "captum": note}
    for key, (name, options, x) in benchmark_models(images, resnet_width(quick)).items():
        apply_fn, params, variables = flax_model(name, options, x)
        layer = conv_layers(apply_fn, params, x.shape[1:])[-1]
        xj, yj = jnp.asarray(x), jnp.asarray(labels)
        row: dict = {"model": name, **options, "input": list(x.shape[1:]), "gradcam_layer": layer}
        for m in OUR_OPTIONS:
            t = best_time(lambda m=m: ours(m, apply_fn, params, xj, yj, layer), reps[m])
            row[m] = {"ours_s": t, "ours_per_s": n / t}
        if with_captum:
            errors = agreement(name, apply_fn, params, variables, x, labels)
            bad = disagreements(errors)
            assert not bad, f"{key}: ours and Captum disagree ({bad}, bounds {TOLERANCE}); the ratios would be meaningless"
            row["agreement_relative_error"] = errors
            for m, t in _captum_row(name, variables, x, labels, reps).items():
                row[m].update(captum_s=t, captum_per_s=n / t, ours_over_captum_speed=row[m]["ours_per_s"] * t / n)
        out[key] = row
    return out
