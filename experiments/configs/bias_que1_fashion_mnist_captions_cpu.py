"""The Sharma n.d., Que-1 analogue of ``bias_que1_fashion_mnist_captions`` sized for a 2-core CPU
(the committed results, experiments/results/bias_que1_fashion_mnist_captions_cpu): the same variants
(LSTM-CNN with ResNet-18 and ShuffleNetV2 backbones, with and without MTL), captions and 3 seeds, on
1000 real Fashion-MNIST training images (stratified; the full 10k test split) with their synthetic
captions, 3 epochs, batch 64, a ResNet-18 of width 8, a small ShuffleNetV2 (stage channels 24, 48, 96,
repeats 1, 2, 1, stem 16, last 256), embedding 16 and LSTM 32. The full-size table (the whole training split,
10 epochs, ResNet-18 width 16, the standard ShuffleNetV2 1x) is the GPU command
``python -m experiments.run bias_que1_fashion_mnist_captions``. Smoke size: the full config's.

    python -m experiments.run bias_que1_fashion_mnist_captions_cpu
"""

import dataclasses
from pathlib import Path

from repair_jax.studies.bias_multimodal import MultimodalBiasStudy
from repair_jax.experiment import load_config

FULL = str(Path(__file__).with_name("bias_que1_fashion_mnist_captions.py"))


def get_config(smoke: bool = False) -> MultimodalBiasStudy:
    if smoke:
        return load_config(FULL, smoke=True)
    full = load_config(FULL)
    return dataclasses.replace(
        full, train=dataclasses.replace(full.train, train_limit=1000, epochs=3, batch_size=64), embed=16,
        lstm_hidden=32,
        backbone_kwargs=(("resnet18", (("width", 8),)),
                         ("shufflenet_v2", (("stage_channels", (24, 48, 96)), ("stage_repeats", (1, 2, 1)),
                                            ("stem", 16), ("last", 256)))))
