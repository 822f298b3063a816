"""Adebayo 2022, Table 4.4 analogue (Sec. 4.5): Fashion-MNIST test inputs explained by a
Fashion-MNIST model and by a digits model (scikit-learn's 8x8 digits resized bilinearly to 28x28: a
synthetic variant of real digits standing in for MNIST), SSIM of the heat maps and Spearman rank
correlation of |attributions|, mean and SEM per method.

Thesis direction: visual similarity (SSIM 0.4-0.9) but essentially no ranking similarity (RK ~ 0, except
SGradSQ, VarGrad, GBP). ``smoke=True``: 300 training images of each, MLPs, 2 methods, 4 inputs (same code path). The default is the CPU
size: CNN width 8, Fashion-MNIST 6k training images 3 epochs, digits 20 epochs, 10 gradient and modified
back-propagation methods (LIME / KernelSHAP left out for time), 190 inputs. GPU size: ``model_kwargs=
{"width": 32}``, ``epochs=10``, no train_limit, ``methods`` plus ``lime``, ``kernel_shap``, ``lrp_alpha_beta``.
"""

from repair_jax.studies.explain_tables import OODExplanationStudy
from repair_jax.train import TrainConfig


def get_config(smoke: bool = False) -> OODExplanationStudy:
    if smoke:
        train = TrainConfig(dataset="fashion_mnist", model="mlp", model_kwargs={"hidden": (32,)}, epochs=2, lr=3e-3,
                            train_limit=300)
        return OODExplanationStudy(train=train, ood_epochs=2, methods=("grad", "guided_backprop"), explain_examples=4,
                                   steps=4, samples=2)
    return OODExplanationStudy()
