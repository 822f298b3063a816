"""Adebayo 2022, Sec. 4.4 / Fig. 4-7 analogue (after Adebayo et al. 2018b): cascading parameter
randomisation, top layer down; SSIM (heat maps) and Spearman rank correlation (|attributions|) of each
method's maps against the trained model's, per randomised layer.

Thesis direction: gradient-family maps (Grad, Input x Grad, IG, SmoothGrad) lose their similarity as
layers are re-initialised; Guided Backprop, PatternNet, PatternAttribution and DeepTaylor stay similar to
the trained model's maps (patterns fitted once on the training data with the trained model).
``smoke=True``: digits, an MLP (32, 16), 1 epoch, 3 methods, 4 inputs (same code path). The default is the
CPU size: Fashion-MNIST (6k training images), CNN width 8, 3 epochs, 9 methods, 50 test inputs.
GPU size: ``model_kwargs={"width": 32}``, ``epochs=10``, ``train_limit=None``, ``explain_examples=190``.
"""

from repair_jax.studies.explain_sanity import CascadingRandomizationStudy
from repair_jax.train import TrainConfig


def get_config(smoke: bool = False) -> CascadingRandomizationStudy:
    if smoke:
        train = TrainConfig(dataset="digits", model="mlp", model_kwargs={"hidden": (32, 16)}, epochs=1, lr=1e-3)
        return CascadingRandomizationStudy(train=train, methods=("grad", "guided_backprop", "patternnet"),
                                           explain_examples=4, steps=4, samples=2)
    return CascadingRandomizationStudy()
