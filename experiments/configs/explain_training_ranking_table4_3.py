"""Adebayo 2022, Table 4.3 analogue on Fashion-MNIST: KS tests of the identical class metric
(ICM, top 10) of influence-based training-point rankings (last dense layer) for normal vs spurious models
(Tag, Stripe and the non-visible background texture), aligned class T-shirt/top (see
repair_jax.studies.explain_tables for the pairs compared).

Thesis direction (Sec. 4.2.4): K-SSD rejected, CCM and FAM not; the fraction of top-ranked training points
that carry the signal rises for a spurious model. ``smoke=True``: 300 digits, a small MLP, Stripe only, 8 inputs
(same code path). The default is the CPU size (Table 4.1's models: 6k training images, CNN width 8, 3 epochs,
1 seed, 50 test inputs). GPU size: ``seeds=(0, 1, 2, 3, 4)``, ``model_kwargs={"width": 32}``, ``epochs=10``,
no train_limit, ``explain_examples=190``.
"""

from repair_jax.studies.explain_spurious import SpuriousAttributionStudy
from repair_jax.studies.explain_tables import SpuriousTrainingRankingStudy
from repair_jax.train import TrainConfig


def get_config(smoke: bool = False) -> SpuriousTrainingRankingStudy:
    if smoke:
        train = TrainConfig(dataset="digits", model="mlp", model_kwargs={"hidden": (32,)}, epochs=2, lr=3e-3,
                            train_limit=300)
        models = SpuriousAttributionStudy(train=train, signals=("stripe",), methods=(),
                                          explain_examples=8, seeds=(0,))
        return SpuriousTrainingRankingStudy(models=models, top=5)
    return SpuriousTrainingRankingStudy()
