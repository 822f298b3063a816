"""Adebayo 2022, Sec. 4.3 analogue (noisy training labels, App. A.2.1): a CNN trained on
Fashion-MNIST and the same recipe trained with 10 % of the training labels flipped (synthetic variant of
the real data); 190 flipped training inputs explained by both models (true label / flipped label), SSIM
of the heat maps and Spearman rank correlation of |attributions|, mean and SEM per method.

Thesis direction: SSIM 0.73-0.99 for every method (attributions look alike, so they would not reveal
the mislabelled point). ``smoke=True``: 300 training images, an MLP, 2 methods, 4 inputs (same code path).
The default is the CPU size of the Table 4.4 config (CNN width 8, 6k training images, 3 epochs, 10
gradient and modified back-propagation methods). GPU size: ``model_kwargs={"width": 32}``,
``epochs=10``, no train_limit, ``methods`` plus ``lime``, ``kernel_shap``, ``lrp_alpha_beta``.
"""

from repair_jax.studies.explain_tables import MislabelledExplanationStudy
from repair_jax.train import TrainConfig


def get_config(smoke: bool = False) -> MislabelledExplanationStudy:
    if smoke:
        train = TrainConfig(dataset="fashion_mnist", model="mlp", model_kwargs={"hidden": (32,)}, epochs=2, lr=3e-3,
                            train_limit=300)
        return MislabelledExplanationStudy(train=train, methods=("grad", "guided_backprop"),
                                           explain_examples=4, steps=4, samples=2)
    return MislabelledExplanationStudy()
