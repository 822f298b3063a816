"""Zhong et al. 2022, Sec. 4.3-4.4 on the full width-32 CNN of fashion_mnist_cnn (GPU; the README's "schedule 1" tables,
experiments/results/wr_fashion_mnist_full).

The run experiments/results/fashion_mnist_cnn/run (SmallCNN width 32, 6 epochs on all 50,000 images);
same targets rule as wr_fashion_mnist; fine-tuning 3 epochs, Adam 2e-4 constant, batch 128, 5 seeds;
w-os's trade-off over 61 rhos on both targets and on every pair.
"""

from repair_jax.repair import RepairConfig
from repair_jax.studies.wr import WRStudy


def get_config(smoke: bool = False) -> WRStudy:
    repair = RepairConfig(epochs=3, lr=2e-4, batch_size=128, optimizer="adam", schedule="constant", seeds=5,
                          rhos=(0.1, 0.3, 0.5, 0.7, 0.9))
    config = WRStudy.diagnosed(repair, run="experiments/results/fashion_mnist_cnn/run")
    return config.shrunk() if smoke else config  # smoke: a small CNN on digits stands in for the run
