"""Sharma n.d., Que-2 analogue: additive PyramidNet alone, + augmentation (flip, rotation),
+ PAdaIN + augmentation, + multi-task heads (CE / KL / L2) + augmentation on Fashion-MNIST, 3 seeds;
and the WR repairs of Zhong et al. 2022 applied to the plain model of each seed on its most
confused pair (validation split): w-os with rho 0.1 (the smallest value of Zhong et al.'s (2022) grid: confident
models need a small w-os rho, Sec. 4.4) and w-loss with rho 0.5, fine-tuned 5 epochs with Adam at
1e-4 (the WR study's defaults). rho is fixed here, not selected per method by Zhong et al.'s (2022) sweep.
Mean +- std of the average metrics, DOB t-tests against the plain model, class-wise tables.
Smoke size: the same code path on the digits.

    from repair_jax.experiment import load_config, run_experiment
    run_experiment(load_config("bias_que2_fashion_mnist"), "out/bias_que2")
"""

from repair_jax.studies.bias import BiasMitigationStudy
from repair_jax.train import TrainConfig


def get_config(smoke: bool = False) -> BiasMitigationStudy:
    if smoke:  # the same variants and a tiny PyramidNet, one epoch on 400 of the digits (8x8 images: seconds)
        train = TrainConfig(dataset="digits", train_limit=400, model="pyramidnet",
                            model_kwargs={"depth": 8, "alpha": 8}, epochs=1, batch_size=64, optimizer="sgd", lr=0.05)
        return BiasMitigationStudy(train=train, seeds=(0, 1), head_widths=(0, 16, 8), padain_p=0.5, wr_epochs=1)
    train = TrainConfig(dataset="fashion_mnist", model="pyramidnet", model_kwargs={"depth": 20, "alpha": 48},
                        epochs=15, batch_size=128, optimizer="sgd", lr=0.05)
    return BiasMitigationStudy(train=train, seeds=(0, 1, 2), padain_p=0.01,
                               head_widths=(0, 128, 64), head_alphas=(1.0, 1.0, 1.0),
                               wr_rhos=(("w-os", 0.1), ("w-loss", 0.5)), wr_epochs=5, wr_lr=1e-4)
