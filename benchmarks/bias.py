"""Training-step costs of the 004_9347ff94c01a7b9b.txt mitigations on this machine, ratios taken in one run
(jitted :func:`repair_jax.train.make_train_step`, SGD, one batch of 64 real Fashion-MNIST images, digits
if it is not installed; the first call compiles and is not timed):

* ``padain_over_plain_step``: an additive PyramidNet (depth 8, alpha 16, the CPU config's) with PAdaIN
  (p = 0.01) after every convolution over the same model without it. The layer computes the permuted
  statistics on every training step and selects them with probability p, so its cost does not depend on p;
* ``mtl_over_single_head_step``: that PyramidNet with three heads (CE / KL / L2, widths 0, 64, 32) trained
  on L_MTL over the single-head model trained on cross-entropy;
* ``fusion_over_cnn_step``: the LSTM-CNN (ResNet-18 of width 8, embedding 16, LSTM 32) on the captioned
  set trained on L_Fus over its image backbone alone trained on cross-entropy;
  ``mml_over_fusion_step``: the same LSTM-CNN on L_MML (three heads) over L_Fus.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import optax

PYRAMID = {"depth": 8, "alpha": 16}
RESNET = {"width": 8}


def _step_time(model, variables, objective, batch: dict, n: int) -> float:
    """Seconds per jitted training step of ``model`` on ``batch`` (one warm-up call compiles)."""
    from repair_jax.train import create_train_state, make_train_step

    step = make_train_step(objective)
    state = create_train_state(model, variables, optax.sgd(1e-2, momentum=0.9))
    state, m = step(state, batch)
    jax.block_until_ready(m["loss"])
    t0 = time.perf_counter()
    for _ in range(n):
        state, m = step(state, batch)
    jax.block_until_ready(m["loss"])
    return (time.perf_counter() - t0) / n


def _captioned_variables(model, batch: dict) -> dict:
    variables = dict(model.init(jax.random.PRNGKey(0), batch["x"][:2], text=batch["text"][:2]))
    variables.setdefault("batch_stats", {})
    return variables


def run(quick: bool = False) -> dict:
    from repair_jax.bias import captions
    from repair_jax.bias.mtl import mtl_objective, multi_head_model
    from repair_jax.bias.multimodal import lstm_cnn_model, mml_objective
    from repair_jax.data import find_fashion_mnist_dir
    from repair_jax.models import create_model, init_variables
    from repair_jax.objectives import erm_objective

    fashion = bool(find_fashion_mnist_dir())
    data = (captions.fashion_mnist_captions(seed=0, train_limit=1000) if fashion
            else captions.digits_captions(seed=0, train_limit=400))
    bs, n = 64, (5 if quick else 40)
    tr = data.images.train
    batch = {"x": jnp.asarray(tr.x[:bs]), "y": jnp.asarray(tr.y[:bs]), "text": jnp.asarray(data.text["train"][:bs])}
    image_batch = {"x": batch["x"], "y": batch["y"]}
    k, shape, key = data.num_classes, data.images.input_shape, jax.random.PRNGKey(0)

    def image_step(model, objective=erm_objective):
        return _step_time(model, init_variables(model, key, shape), objective, image_batch, n)

    plain = image_step(create_model("pyramidnet", k, **PYRAMID))
    padain = image_step(create_model("pyramidnet", k, padain_p=0.01, **PYRAMID))
    mtl = image_step(multi_head_model("pyramidnet", k, (0, 64, 32), **PYRAMID), mtl_objective(("ce", "kl", "l2")))
    cnn = image_step(create_model("resnet18", k, **RESNET))
    fusion_model = lstm_cnn_model("resnet18", k, len(data.vocab), 16, 32, **RESNET)
    fusion_vars = _captioned_variables(fusion_model, batch)
    fusion = _step_time(fusion_model, fusion_vars, mml_objective(0.0, 0.0), batch, n)
    mml = _step_time(fusion_model, fusion_vars, mml_objective(1.0, 1.0), batch, n)
    return {"padain_over_plain_step": padain / plain, "mtl_over_single_head_step": mtl / plain,
            "fusion_over_cnn_step": fusion / cnn, "mml_over_fusion_step": mml / fusion,
            "step_ms": {"pyramidnet": 1e3 * plain, "pyramidnet_padain": 1e3 * padain, "pyramidnet_mtl": 1e3 * mtl,
                        "resnet18": 1e3 * cnn, "lstm_cnn_fusion": 1e3 * fusion, "lstm_cnn_mml": 1e3 * mml},
            "dataset": data.name, "batch_size": bs, "timed_steps": n, "device": str(jax.devices()[0]),
            "backend": jax.default_backend()}
