"""Zhong et al. 2022, Sec. 4.3-4.4 on a ResNet-18 (width 32) trained on all of Fashion-MNIST with Table 1's recipe,
shortened (GPU; experiments/results/wr_fashion_mnist_resnet18, whose checkpoint is not committed).

Training: 20 epochs of SGD 0.1 (Nesterov 0.9, x0.1 at 50% and 75%), L2 5e-4, batch 128 (Zhong et al. 2022, Sec. 4.1);
fine-tuning: 4 epochs of SGD 0.01 on the same step schedule, batch 128, the run's L2; same targets rule
as wr_fashion_mnist; w-os's trade-off over 61 rhos on both targets and on every pair.
"""

from repair_jax.repair import RepairConfig
from repair_jax.studies.wr import WRStudy, recipe


def get_config(smoke: bool = False) -> WRStudy:
    config = WRStudy.diagnosed(
        train=recipe("sgd_step", dataset="fashion_mnist", model="resnet18", model_kwargs={"width": 32}, epochs=20),
        repair=RepairConfig(epochs=4, lr=0.01, batch_size=128, optimizer="sgd", schedule="step", l2=5e-4, seeds=5,
                            rhos=(0.1, 0.3, 0.5, 0.7, 0.9)))
    if smoke:  # the recipe (SGD, step schedule) on the default smoke CNN: ResNet-18 compiles for a minute
        # on 2 CPUs, and wr_cifar's smoke run already repairs a ResNet-18
        return config.shrunk(recipe("sgd_step", dataset="digits", model="cnn", model_kwargs={"width": 4, "dense": 16},
                                    epochs=2))
    return config
