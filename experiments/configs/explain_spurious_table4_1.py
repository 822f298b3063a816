"""002_97a11baaf249c571.txt Table 4.1 analogue on Fashion-MNIST: K-SSD, CCM, FAM, FAM-GT (SSIM, with SEM)
of Grad, SmoothGrad, IG and Guided Backprop for Tag, Stripe and a non-visible background texture.

Thesis direction (Sec. 4.2.2): GBP best on K-SSD; FAM above CCM; attributions fail on the non-visible
signal. ``smoke=True``: digits, a small MLP, 2 signals, 2 methods, 8 inputs (same code path).
GPU size: ``seeds=(0, 1, 2, 3, 4)`` and ``model_kwargs={"width": 32}`` (the thesis trains 5 seeds).
"""

from repair_jax.explain.study import SpuriousAttributionStudy


def get_config(smoke: bool = False) -> SpuriousAttributionStudy:
    if smoke:
        return SpuriousAttributionStudy(dataset="digits", model="mlp", model_kwargs={"hidden": (32,)}, epochs=6,
                                        lr=3e-3, signals=("tag", "stripe"), methods=("grad", "guided_backprop"),
                                        explain_examples=8, steps=8, samples=4, seeds=(0,))
    return SpuriousAttributionStudy(dataset="fashion_mnist", model="cnn", model_kwargs={"width": 16}, epochs=5,
                                    train_limit=20000, explain_examples=190, seeds=(0, 1, 2))
