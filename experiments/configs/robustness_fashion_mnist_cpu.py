"""Pradhan et al. 2020, Table 1 analogue at CPU size, the committed run: the grid of
``robustness_fashion_mnist`` (CNN and SqueezeNet x {plain, AugMix, ANT, UAT, SAT} x {balanced,
linear(10), longtail(100)}, 3 seeds) on a stratified 2,000-image subset of the real Fashion-MNIST
training split (the imbalance levels are cut from it: about 1,100 images at linear(10), 500 at
longtail(100)), 3 epochs, the CNN at width 16 (dense 64) and SqueezeNet at width 0.5, UAPs on 500
test images; the test split stays the full balanced 10,000. About 70 minutes of a 2-core CPU with the
seeds as three parallel shards (about 2.5 hours in one process); the full-size grid is
``robustness_fashion_mnist`` (GPU).

Smoke size: the full config's (digits, seconds), the same code path.
"""

from pathlib import Path

from repair_jax.experiment import load_config
from repair_jax.studies.robustness import RobustnessStudy
from repair_jax.train import TrainConfig


def get_config(smoke: bool = False) -> RobustnessStudy:
    if smoke:
        return load_config(str(Path(__file__).with_name("robustness_fashion_mnist.py")), smoke=True)
    return RobustnessStudy(train=TrainConfig(dataset="fashion_mnist", train_limit=2000, epochs=3, batch_size=128),
                           uap_examples=500,
                           model_kwargs=(("cnn", (("width", 16), ("dense", 64))),
                                         ("squeezenet", (("width_mult", 0.5),))))
