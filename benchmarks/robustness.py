"""Pradhan et al.'s (2020) robustness methods on this machine, ratios taken in one run: the training step time of each
method over plain training, and the time of a universal adversarial perturbation per 1,000 images.

* ``step_time_ratio_to_plain``: one training step of each :data:`repair_jax.studies.robustness.METHODS`
  entry (its own ``init`` and ``make_step``, the code path of the Table 1 study: standard augmentation,
  Adam) on the small CNN and one batch of 128 real Fashion-MNIST images (digits if it is not
  installed), jitted, compiled before timing, each step from the same initial state; each step time is
  the fastest of 6 rounds of 4 steps, the methods interleaved within each round
  (:func:`benchmarks.interleaved_times`), so that a shared machine's load reaches them alike.
* ``uap_*``: :func:`~repair_jax.robustness.uap_sgd` (2 epochs, as the study runs it) and
  :func:`~repair_jax.robustness.uap_deepfool` (one pass, ``target_fooling=1``) against the CNN trained
  plainly for 2 epochs on the 512 training images, called as a user calls them (each call compiles its
  own jitted step, which is included). ``uap_*_s``: the seconds of a call on 100 and on 300 test images;
  ``*_s_per_1000``: the 300-image call scaled to 1,000 images. DeepFool's cost per image varies with the
  iterations each image needs, so the two sizes are not an intercept and a slope.
* ``load_average_1min``: the machine's load before and after the UAP calls (they are not interleaved
  with anything, so other jobs' load reaches them directly).

On an accelerator (``jax.default_backend() != "cpu"``) the step ratios are also taken for Pradhan et al.'s (2020) ResNet-50
(CIFAR stem), as ``resnet50_step_time_*``; on a CPU only the CNN is timed (the committed figures).
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import optax

from benchmarks import interleaved_times
from repair_jax.data import find_fashion_mnist_dir, load_dataset
from repair_jax.models import create_model, init_variables
from repair_jax.robustness.methods import METHODS
from repair_jax.studies.robustness import RobustnessStudy
from repair_jax.robustness.uap import eval_logits_fn, uap_deepfool, uap_sgd
from repair_jax.train import TrainConfig, create_train_state


def _stepper(method, state, ds, config: RobustnessStudy, batch: dict):
    """One jitted training step of ``method`` from its initial state on ``batch`` (compiled here)."""
    state = method.init(state, ds, 0)
    step = jax.jit(method.make_step(config, 0))

    def once():  # always from the initial state, so every repetition does the same work
        _, m = step(state, batch)
        jax.block_until_ready(m["loss"])
    once()
    return once


def _call_times(call, sizes) -> dict:
    """Seconds of ``call(n)`` for each n of ``sizes`` (each call compiles its own step, as a user's does)."""
    times = {}
    for n in sizes:
        t0 = time.perf_counter()
        call(n)
        times[n] = time.perf_counter() - t0
    return times


def _uap_times(state, ds, eps: float, sizes) -> dict:
    f = eval_logits_fn(state)
    x, y = ds.test.x, ds.test.y
    out = {"uap_images": list(sizes)}
    for name, call in (("sgd", lambda n: uap_sgd(f, x[:n], y[:n], eps, "linf", epochs=2)),
                       ("deepfool", lambda n: uap_deepfool(f, x[:n], eps, "linf", target_fooling=1.0, max_passes=1))):
        t = _call_times(call, sizes)
        out[f"uap_{name}_s"] = {str(n): s for n, s in t.items()}
        out[f"uap_{name}_s_per_1000"] = 1000 * t[sizes[-1]] / sizes[-1]
    return out


def _step_times(model_name: str, kwargs: dict, ds, config: RobustnessStudy, rounds: int, n: int):
    """(seconds per step of each method, a fresh-state factory) for ``create_model(model_name, **kwargs)``."""
    model = create_model(model_name, ds.num_classes, **kwargs)
    variables = init_variables(model, jax.random.PRNGKey(0), ds.input_shape)
    fresh = lambda: create_train_state(model, variables, optax.adam(1e-3))
    n_batch = config.train.batch_size
    batch = {"x": jnp.asarray(ds.train.x[:n_batch]), "y": jnp.asarray(ds.train.y[:n_batch])}
    return interleaved_times({m: _stepper(METHODS[m], fresh(), ds, config, batch) for m in config.methods},
                             rounds, n), fresh


def run(quick: bool = False) -> dict:
    name = "fashion_mnist" if find_fashion_mnist_dir() else "digits"
    kwargs, rounds, n, sizes = ({"width": 8}, 2, 2, (32, 96)) if quick else ({}, 6, 4, (100, 300))
    ds = load_dataset(name, seed=0, train_limit=512)
    config = RobustnessStudy(train=TrainConfig(dataset=name, batch_size=128))
    t, fresh = _step_times("cnn", kwargs, ds, config, rounds, n)
    out = {}
    if jax.default_backend() != "cpu" and not quick:  # Pradhan et al.'s (2020) ResNet-50 (CIFAR stem) where an accelerator is
        r50, _ = _step_times("resnet50", {}, ds, config, rounds, n)
        out = {"resnet50_step_time_ms": {m: 1e3 * s for m, s in r50.items()},
               "resnet50_step_time_ratio_to_plain": {m: s / r50["plain"] for m, s in r50.items()}}
    two_epochs = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=2))
    trained, _ = METHODS["plain"].train(fresh(), ds, two_epochs, 0)
    load = os.getloadavg()[0]
    return {"dataset": name, "model": "cnn", "model_kwargs": kwargs, "batch_size": config.train.batch_size,
            "rounds": rounds, "steps_per_round": n, "device": str(jax.devices()[0]), "backend": jax.default_backend(),
            "step_time_ms": {m: 1e3 * s for m, s in t.items()},
            "step_time_ratio_to_plain": {m: s / t["plain"] for m, s in t.items()}, **out,
            "load_average_1min": [load, os.getloadavg()[0]],  # before / after the UAP calls: other jobs' load
            **_uap_times(trained, ds, config.eps_linf, tuple(min(k, len(ds.test)) for k in sizes))}
