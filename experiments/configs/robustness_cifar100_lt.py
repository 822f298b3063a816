"""Pradhan et al. 2020, Table 1 on its own data set, CIFAR-100 (Cui et al. 2019 long tail): the
vanilla CNN, ResNet-50 (CIFAR stem) and SqueezeNet x {plain, AugMix, ANT, UAT, SAT} x {balanced,
linear(10), longtail(100)}, 3 seeds, 30 epochs. GPU-sized; needs CIFAR-100 in the TFDS data directory
(``tfds build cifar100`` where a network is). On a GPU:

    python -m experiments.run robustness_cifar100_lt --out runs/robustness_cifar100_lt

Smoke size: the Fashion-MNIST config's (digits, seconds), the same code path.
"""

from pathlib import Path

from repair_jax.experiment import load_config
from repair_jax.studies.robustness import RobustnessStudy
from repair_jax.train import TrainConfig


def get_config(smoke: bool = False) -> RobustnessStudy:
    if smoke:
        return load_config(str(Path(__file__).with_name("robustness_fashion_mnist.py")), smoke=True)
    return RobustnessStudy(train=TrainConfig(dataset="cifar100", epochs=30, batch_size=128),
                           models=("cnn", "resnet50", "squeezenet"), eps_linf=8 / 255)
