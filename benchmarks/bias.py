"""Training-step costs of the mitigations of Sharma n.d. on this machine, ratios taken in one run
(jitted :func:`repair_jax.train.make_train_step`, SGD, one batch of 64 real Fashion-MNIST images with
their captions, digits if it is not installed; the first call compiles and is not timed; each step
time is the fastest of 6 rounds of 8 steps, each step from the same initial state, the models
interleaved within each round, so that a shared machine's load reaches them alike):

* ``padain_over_plain_step``: an additive PyramidNet (depth 8, alpha 8, as bias_que2_fashion_mnist_cpu)
  with PAdaIN (p = 0.01) after every convolution over the same model without it. The layer computes
  the permuted statistics on every training step and selects them with probability p, so its cost
  does not depend on p;
* ``mtl_over_single_head_step``: that PyramidNet with three heads (CE / KL / L2, widths 0, 64, 32)
  trained on L_MTL over the single-head model trained on cross-entropy;
* ``fusion_over_cnn_step``: the LSTM-CNN (ResNet-18 of width 8, embedding 16, LSTM 32, as
  bias_que1_fashion_mnist_captions_cpu) on the captioned set trained on L_Fus over its image
  backbone alone trained on cross-entropy; ``mml_over_fusion_step``: the same LSTM-CNN on L_MML
  (three heads) over L_Fus.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import optax

from benchmarks import interleaved_times

PYRAMID = {"depth": 8, "alpha": 8}
RESNET = {"width": 8}


def _stepper(model, variables, objective, batch: dict):
    """A callable running one jitted training step of ``model`` on ``batch`` from the initial ``variables``
    to completion (compiled here)."""
    from repair_jax.train import create_train_state, make_train_step

    step = make_train_step(objective)
    state = create_train_state(model, variables, optax.sgd(1e-2, momentum=0.9))

    def once():  # always from the initial state: repeated steps on one batch drift the timing as it is memorised
        _, m = step(state, batch)
        jax.block_until_ready(m["loss"])
    once()
    return once


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
    bs, rounds, n = 64, (2 if quick else 6), (3 if quick else 8)
    tr = data.images.train
    batch = {"x": jnp.asarray(tr.x[:bs]), "y": jnp.asarray(tr.y[:bs]), "text": jnp.asarray(data.text["train"][:bs])}
    image_batch = {"x": batch["x"], "y": batch["y"]}
    k, shape, key = data.num_classes, data.images.input_shape, jax.random.PRNGKey(0)

    def image(model, objective=erm_objective):
        return _stepper(model, init_variables(model, key, shape), objective, image_batch)

    fusion_model = lstm_cnn_model("resnet18", k, len(data.vocab), 16, 32, **RESNET)
    fusion_vars = _captioned_variables(fusion_model, batch)
    t = interleaved_times({
        "pyramidnet": image(create_model("pyramidnet", k, **PYRAMID)),
        "pyramidnet_padain": image(create_model("pyramidnet", k, padain_p=0.01, **PYRAMID)),
        "pyramidnet_mtl": image(multi_head_model("pyramidnet", k, (0, 64, 32), **PYRAMID),
                                mtl_objective(("ce", "kl", "l2"))),
        "resnet18": image(create_model("resnet18", k, **RESNET)),
        "lstm_cnn_fusion": _stepper(fusion_model, fusion_vars, mml_objective(0.0, 0.0), batch),
        "lstm_cnn_mml": _stepper(fusion_model, fusion_vars, mml_objective(1.0, 1.0), batch),
    }, rounds, n)
    return {"padain_over_plain_step": t["pyramidnet_padain"] / t["pyramidnet"],
            "mtl_over_single_head_step": t["pyramidnet_mtl"] / t["pyramidnet"],
            "fusion_over_cnn_step": t["lstm_cnn_fusion"] / t["resnet18"],
            "mml_over_fusion_step": t["lstm_cnn_mml"] / t["lstm_cnn_fusion"],
            "step_ms": {name: 1e3 * v for name, v in t.items()},
            "dataset": data.name, "batch_size": bs, "rounds": rounds, "steps_per_round": n,
            "device": str(jax.devices()[0]), "backend": jax.default_backend()}
