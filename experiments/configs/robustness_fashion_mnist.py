"""Pradhan et al. 2020, Table 1 analogue on Fashion-MNIST: CNN and SqueezeNet x {plain, AugMix,
ANT, UAT, SAT} x {balanced, linear(10), longtail(100)}, 3 seeds; balanced accuracy and F1 tables."""

from repair_jax.studies.robustness import RobustnessStudy
from repair_jax.train import TrainConfig


def get_config(smoke: bool = False) -> RobustnessStudy:
    if smoke:
        return RobustnessStudy(train=TrainConfig(dataset="digits", epochs=1, batch_size=32), models=("mlp",),
                               methods=("plain", "augmix", "ant", "uat", "sat"), levels=("longtail(10)",), seeds=(0,),
                               model_kwargs=(("mlp", (("hidden", (16,)),)),), uap_examples=64)
    return RobustnessStudy()
