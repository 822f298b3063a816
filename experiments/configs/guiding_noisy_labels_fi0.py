"""Ablation of Tables 5.1-5.2 (Adebayo 2022, Sec. 5.3): the noisy-labels study on digits
without the feature-importance term (fi_weight = 0) (experiments/results/guiding_noisy_labels_fi0)."""

from repair_jax.guiding.bilevel import BilevelConfig
from repair_jax.studies.guiding import GuidingData, NoisyLabelsStudy, smoke_sweep


def get_config(smoke: bool = False) -> NoisyLabelsStudy:
    config = NoisyLabelsStudy(datasets=(GuidingData("digits", None, 30, (128,)),),
                              bilevel=BilevelConfig(gamma=1.0, fi_weight=0.0, outer_steps=100))
    return smoke_sweep(config) if smoke else config
