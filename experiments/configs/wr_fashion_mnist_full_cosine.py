"""Zhong et al. 2022, Sec. 4.3-4.4 on the full width-32 CNN of fashion_mnist_cnn with the second fine-tuning schedule (GPU;
the README's "schedule 2" tables, experiments/results/wr_fashion_mnist_full_cosine).

As wr_fashion_mnist_full, with fine-tuning 4 epochs, Adam 2e-4 on a cosine schedule, batch 256.
"""

from repair_jax.repair import RepairConfig
from repair_jax.studies.wr import WRStudy


def get_config(smoke: bool = False) -> WRStudy:
    repair = RepairConfig(epochs=4, lr=2e-4, batch_size=256, optimizer="adam", schedule="cosine", seeds=5,
                          rhos=(0.1, 0.3, 0.5, 0.7, 0.9))
    config = WRStudy.diagnosed(repair, run="experiments/results/fashion_mnist_cnn/run")
    return config.shrunk() if smoke else config  # smoke: a small CNN on digits stands in for the run
