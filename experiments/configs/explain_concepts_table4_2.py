"""Adebayo 2022, Table 4.2 analogue on Fashion-MNIST: KS tests of TCAV concept scores (K-SSD,
CCM, FAM) for normal vs spurious models (Tag, Stripe and the non-visible background texture), at the
last convolution, for the aligned class T-shirt/top (see repair_jax.studies.explain_tables for the pairs compared).

Thesis direction (Sec. 4.2.3, Tag): K-SSD rejected (the known signal's concept is found), CCM and FAM not
(known concepts look alike; no false alarm); for the non-visible blur K-SSD is not rejected either.
``smoke=True``: 300 digits, a small MLP (layer Dense_0), Stripe only, 8 inputs, 3 random sets (same code path).
The default is the CPU size (Table 4.1's models: 6k training images, CNN width 8, 3 epochs, 1 seed,
50 aligned-class test inputs, 10 random sets of 50). GPU size: ``seeds=(0, 1, 2, 3, 4)``, ``model_kwargs=
{"width": 32}``, ``epochs=10``, no train_limit, ``random_sets=50``, ``concept_examples=100``.
"""

from repair_jax.studies.explain_spurious import SpuriousAttributionStudy
from repair_jax.studies.explain_tables import SpuriousConceptStudy
from repair_jax.train import TrainConfig


def get_config(smoke: bool = False) -> SpuriousConceptStudy:
    if smoke:
        train = TrainConfig(dataset="digits", model="mlp", model_kwargs={"hidden": (32,)}, epochs=2, lr=3e-3,
                            train_limit=300)
        models = SpuriousAttributionStudy(train=train, signals=("stripe",), methods=(),
                                          explain_examples=8, seeds=(0,))
        return SpuriousConceptStudy(models=models, layer="Dense_0", concepts=(1,), concept_examples=10,
                                    random_sets=3)
    return SpuriousConceptStudy()
