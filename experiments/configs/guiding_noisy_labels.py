"""Tables 5.1-5.2 analogues of Adebayo 2022, Sec. 5.3 (noisy training labels): 20% of the
training labels flipped on digits and a 3000-image Fashion-MNIST subset, MLPs, 3 seeds; model
guiding vs influence functions vs DUTI vs the training loss (experiments/results/guiding_noisy_labels)."""

from repair_jax.studies.guiding import GuidingData, NoisyLabelsStudy, smoke_sweep


def get_config(smoke: bool = False) -> NoisyLabelsStudy:
    config = NoisyLabelsStudy(datasets=(GuidingData("digits", None, 30, (128,)),
                                        GuidingData("fashion_mnist", 3000, 15, (256,))))
    return smoke_sweep(config) if smoke else config
