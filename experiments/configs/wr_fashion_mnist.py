"""Zhong et al. 2022, Sec. 4.3-4.4 on the real Fashion-MNIST, CPU-sized (results: the README's CPU
tables and experiments/results/wr_fashion_mnist).

A SmallCNN (width 8, dense 32, BatchNorm) trained 3 epochs (Adam 3e-3, cosine, batch 64) on a stratified
subset of 6,000 training images; its most confused pair and that pair's most biased triplet (diagnosed on
the validation split), each repaired by every method: 1 fine-tuning epoch (Adam 5e-4, constant, batch 64),
the rho grid of Sec. 4.4 on seed 0, selection on the validation split, 5 seeds for the selected settings;
w-os's trade-off over 61 rhos on both targets and on every pair. Beside Zhong et al.'s (2022) methods, the data-centric
i-drop (issue 17 Part 4: fine-tuning without the training points most harmful to the target by influence)
in the same table.
"""

from repair_jax.repair import WR_METHODS, RepairConfig
from repair_jax.studies.wr import WRStudy, recipe


def get_config(smoke: bool = False) -> WRStudy:
    config = WRStudy.diagnosed(
        train=recipe("cnn", dataset="fashion_mnist", model="cnn", model_kwargs={"width": 8, "dense": 32},
                     epochs=3, train_limit=6000),
        repair=RepairConfig(epochs=1, lr=5e-4, batch_size=64, optimizer="adam", schedule="constant", seeds=5,
                            rhos=(0.1, 0.3, 0.5, 0.7, 0.9), methods=WR_METHODS + ("i-drop",)))
    if smoke:
        return config.shrunk()
    return config
