"""Zhong et al. 2022, Sec. 4.3-4.4 multi-label: BCE, type2conf (and cd over it) and mAP on digits_multilabel, the
synthetic composites of real digits (2-3 per 16x16 canvas), CPU (experiments/results/wr_digits_multilabel).

A SmallCNN (width 8, BatchNorm) trained 15 epochs (Adam 3e-3, cosine, batch 64); diagnosed pair and
triplet; fine-tuning 3 epochs at Adam 5e-4 (constant), batch 64, 5 seeds.
"""

from repair_jax.repair import RepairConfig
from repair_jax.studies.wr import WRStudy, recipe


def get_config(smoke: bool = False) -> WRStudy:
    config = WRStudy.diagnosed(
        train=recipe("cnn", dataset="digits_multilabel", model="cnn", model_kwargs={"width": 8, "dense": 32},
                     epochs=15),
        repair=RepairConfig(epochs=3, lr=5e-4, batch_size=64, optimizer="adam", schedule="constant", seeds=5,
                            rhos=(0.1, 0.3, 0.5, 0.7, 0.9)),
        frontier_rhos=0)
    if smoke:
        return config.shrunk(recipe("cnn", dataset="digits_multilabel", model="cnn",
                                    model_kwargs={"width": 4, "dense": 16}, epochs=2))
    return config
