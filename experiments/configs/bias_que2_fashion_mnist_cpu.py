"""The Sharma n.d., Que-2 analogue of ``bias_que2_fashion_mnist`` sized for a 2-core CPU (the
committed results, experiments/results/bias_que2_fashion_mnist_cpu): the same variants, WR rows,
optimizer and PAdaIN p, and 3 seeds (so the DOB t-test has samples), on 1000 real Fashion-MNIST
training images (stratified; the full 10k test split), a PyramidNet of depth 8 and alpha 8, 3 epochs,
batch 64, heads of widths (0, 64, 32), WR fine-tuning 3 epochs. The full-size table (depth 20,
alpha 48, the whole training split, 15 epochs) is the GPU command ``python -m experiments.run bias_que2_fashion_mnist``.
Smoke size: the full config's (one code path, no extra test time).

    python -m experiments.run bias_que2_fashion_mnist_cpu
"""

import dataclasses
from pathlib import Path

from repair_jax.studies.bias import BiasMitigationStudy
from repair_jax.experiment import load_config

FULL = str(Path(__file__).with_name("bias_que2_fashion_mnist.py"))


def get_config(smoke: bool = False) -> BiasMitigationStudy:
    if smoke:
        return load_config(FULL, smoke=True)
    full = load_config(FULL)
    train = dataclasses.replace(full.train, train_limit=1000, model_kwargs={"depth": 8, "alpha": 8}, epochs=3,
                                batch_size=64)
    return dataclasses.replace(full, train=train, head_widths=(0, 64, 32), wr_epochs=3)
