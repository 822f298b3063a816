"""w-os on every class pair of the four Fashion-MNIST pair studies, side by side (the README's all-pairs
table; experiments/results/wr_os_frontier/compare.md).

Reads each study's w_os_all_pairs.json (written by its own config: wr_fashion_mnist,
wr_fashion_mnist_full, wr_fashion_mnist_full_cosine, wr_fashion_mnist_resnet18) and runs no model, so the
smoke size is the full size.
"""

from repair_jax.studies.wr import FrontierComparison

STUDIES = (("CNN width 8 (CPU)", "experiments/results/wr_fashion_mnist/pair"),
           ("CNN width 32, schedule 1", "experiments/results/wr_fashion_mnist_full/pair"),
           ("CNN width 32, schedule 2", "experiments/results/wr_fashion_mnist_full_cosine/pair"),
           ("ResNet-18 (width 32)", "experiments/results/wr_fashion_mnist_resnet18/pair"))


def get_config(smoke: bool = False) -> FrontierComparison:
    return FrontierComparison(STUDIES, top=5)
