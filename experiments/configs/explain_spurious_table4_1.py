"""Adebayo 2022, Table 4.1 analogue on Fashion-MNIST: K-SSD, CCM, FAM, FAM-GT (SSIM, with SEM)
of Grad, SmoothGrad, IG and Guided Backprop for Tag, Stripe and a non-visible background texture.

Thesis direction (Sec. 4.2.2): GBP best on K-SSD; FAM above CCM; attributions fail on the non-visible
signal. ``smoke=True``: digits, a small MLP, 2 signals, 2 methods, 8 inputs (same code path).
The default is the CPU size (6k training images, CNN width 8, 3 epochs, 50 inputs, 1 seed). GPU size:
``seeds=(0, 1, 2, 3, 4)``, ``model_kwargs={"width": 32}``, ``epochs=10``, no train_limit, 190 inputs (the
thesis trains 5 seeds per condition and reports SEMs over 190 inputs in Table 4.4).
"""

from repair_jax.studies.explain_spurious import SpuriousAttributionStudy
from repair_jax.train import TrainConfig


def get_config(smoke: bool = False) -> SpuriousAttributionStudy:
    if smoke:
        train = TrainConfig(dataset="digits", model="mlp", model_kwargs={"hidden": (32,)}, epochs=6, lr=3e-3)
        return SpuriousAttributionStudy(train=train, signals=("tag", "stripe"), methods=("grad", "guided_backprop"),
                                        explain_examples=8, steps=8, samples=4, seeds=(0,))
    train = TrainConfig(dataset="fashion_mnist", model="cnn", model_kwargs={"width": 8}, epochs=3, lr=1e-3,
                        train_limit=6000)
    return SpuriousAttributionStudy(train=train, explain_examples=50, seeds=(0,))
