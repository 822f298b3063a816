"""The full width-32 SmallCNN (BatchNorm) on the real Fashion-MNIST, trained and diagnosed on CPU
(experiments/results/fashion_mnist_cnn; the original model of wr_fashion_mnist_full*).

6 epochs of Adam 2e-3 (cosine), batch 128, all 50,000 training images; writes OUT/run, OUT/diagnosis and
OUT/summary.json (test accuracy, the top confused pairs and biased triplets, wall time).
"""

from repair_jax.studies.wr import TrainAndDiagnose
from repair_jax.train import TrainConfig


def get_config(smoke: bool = False) -> TrainAndDiagnose:
    if smoke:  # a width-4 CNN, one epoch on digits
        return TrainAndDiagnose(TrainConfig(dataset="digits", model="cnn", model_kwargs={"width": 4}, epochs=1))
    return TrainAndDiagnose(TrainConfig(dataset="fashion_mnist", model="cnn", model_kwargs={"width": 32}, epochs=6,
                                        batch_size=128, lr=2e-3, seed=0))
