"""Model guiding at full scale (Adebayo 2022, Sec. 5.2, Algorithm 1): all 60,000
Fashion-MNIST training images, 20% of their labels flipped, through the width-32 CNN of the
fashion_mnist_cnn run; meant for a GPU (experiments/results/guiding_full_fashion_mnist).
Smoke: a tiny digits MLP trained on the spot."""

import dataclasses

from repair_jax.studies.guiding import FullGuidingRun
from repair_jax.train import TrainConfig


def get_config(smoke: bool = False) -> FullGuidingRun:
    config = FullGuidingRun()
    if smoke:
        config = dataclasses.replace(
            config, audit_size=40, bilevel=dataclasses.replace(config.bilevel, outer_steps=5),
            train=TrainConfig(dataset="digits", model="mlp", model_kwargs={"hidden": [64]}, epochs=3, seed=0))
    return config
