"""Adebayo 2022, Sec. 4.3 analogue in a setting where its precondition holds: the noisy model memorises its
flipped training labels (the thesis's noisy model reaches 94.2 % training accuracy with 10 % of the labels flipped,
App. A.2.1, so it fits at least 42 % of the flipped ones; the CPU-size config ``explain_mislabelled_sec4_3``
fits 3.7 % and fails it).

Same study as ``explain_mislabelled_sec4_3`` (10 % of the training labels flipped, a synthetic variant of the real
Fashion-MNIST; each flipped training input explained by the clean model for its true label and by the noisy model
for its flipped label; SSIM and rank correlation per method), with a recipe that memorises: 1,000 training images,
a CNN of width 16, 40 epochs at learning rate 3e-3 (a probe on this machine: the noisy model fits 100 % of its
flipped labels, test accuracy 0.80). All 100 flipped inputs are explained. ``smoke=True``: 300 digits images, an MLP,
2 methods, 4 inputs (same code path).
"""

from repair_jax.studies.explain_tables import MislabelledExplanationStudy
from repair_jax.train import TrainConfig


def get_config(smoke: bool = False) -> MislabelledExplanationStudy:
    if smoke:
        train = TrainConfig(dataset="digits", model="mlp", model_kwargs={"hidden": (32,)}, epochs=2, lr=3e-3,
                            train_limit=300)
        return MislabelledExplanationStudy(train=train, methods=("grad", "guided_backprop"),
                                           explain_examples=4, steps=4, samples=2)
    train = TrainConfig(dataset="fashion_mnist", model="cnn", model_kwargs={"width": 16}, epochs=40, lr=3e-3,
                        train_limit=1000)
    return MislabelledExplanationStudy(train=train, explain_examples=100)
