"""003's robustness methods: training step time of each method / plain training, and the time of a
universal adversarial perturbation per 1,000 images.

Each method trains the small CNN two epochs through its :data:`repair_jax.robustness.study.METHODS`
entry (the code path of the Table 1 study) on a subset of the real Fashion-MNIST (digits if it is not
installed); the second epoch (compiled) is measured and divided by its steps. The UAP times are
:func:`~repair_jax.robustness.uap_sgd` (2 epochs, as the study runs it) and
:func:`~repair_jax.robustness.uap_deepfool` (one pass, ``target_fooling=1``) on 1,000 test images,
after a warm-up call on 64 images compiles them. ResNet-50 on a GPU: run this file where one is.
"""

from __future__ import annotations

import time

import jax
import optax

from repair_jax.data import find_fashion_mnist_dir, load_dataset
from repair_jax.models import create_model, init_variables
from repair_jax.robustness.study import METHODS, RobustnessStudy
from repair_jax.robustness.uap import eval_logits_fn, uap_deepfool, uap_sgd
from repair_jax.train import create_train_state


def _epoch_times(config: RobustnessStudy, ds, model_name: str, kwargs: dict) -> tuple[dict, object]:
    model = create_model(model_name, ds.num_classes, **kwargs)
    variables = init_variables(model, jax.random.PRNGKey(0), ds.input_shape)
    steps = len(ds.train) // config.batch_size
    out, state = {}, None
    for name in config.methods:
        state, history = METHODS[name].train(create_train_state(model, variables, optax.adam(1e-3)), ds, config, 0)
        out[name] = 1000 * history[-1]["epoch_time"] / steps
    return out, state


def _uap_time(state, ds, n: int, eps: float) -> dict:
    f = eval_logits_fn(state)
    x, y = ds.test.x[:n], ds.test.y[:n]
    uap_sgd(f, x[:64], y[:64], eps, "linf", epochs=1)
    uap_deepfool(f, x[:64], eps, "linf", target_fooling=1.0, max_passes=1)
    t0 = time.perf_counter()
    uap_sgd(f, x, y, eps, "linf", epochs=2)
    t1 = time.perf_counter()
    uap_deepfool(f, x, eps, "linf", target_fooling=1.0, max_passes=1)
    t2 = time.perf_counter()
    return {"uap_sgd_s_per_1000": (t1 - t0) * 1000 / n, "uap_deepfool_s_per_1000": (t2 - t1) * 1000 / n}


def run(quick: bool = False) -> dict:
    name = "fashion_mnist" if find_fashion_mnist_dir() else "digits"
    n_train, n_uap, kwargs = (256, 128, {"width": 8}) if quick else (2048, 1000, {})
    ds = load_dataset(name, seed=0, train_limit=n_train)
    config = RobustnessStudy(dataset=name, epochs=2, batch_size=128)
    step_ms, state = _epoch_times(config, ds, "cnn", kwargs)
    return {"dataset": name, "model": "cnn", "model_kwargs": kwargs, "train_examples": len(ds.train),
            "batch_size": config.batch_size, "device": str(jax.devices()[0]), "step_time_ms": step_ms,
            "step_time_ratio_to_plain": {m: t / step_ms["plain"] for m, t in step_ms.items()},
            "uap_images": min(n_uap, len(ds.test)), **_uap_time(state, ds, min(n_uap, len(ds.test)), config.eps_linf)}
