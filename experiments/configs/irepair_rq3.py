"""RQ iii of Henriksen et al. 2022, Sec. 5 (experiments/results/irepair_rq3): the margin stopping rule
(Fig. 1c), I-REPAIR and retraining with softmax margins 0 and 0.3 at |R| in {4, 8}. FC 2x256 on
Fashion-MNIST, gamma 1, |C| = 40, RMSprop lr 1e-4, ub 5000, 2 seeds.
"""

from repair_jax.studies.irepair import IRepairProtocol, IRepairRQ, IRepairStudy


def get_config(smoke: bool = False) -> IRepairStudy:
    if smoke:
        return IRepairStudy(IRepairProtocol.digits_smoke(), (IRepairRQ("margin", sizes=(1,), margins=(0.0, 0.3)),))
    return IRepairStudy(IRepairProtocol.fashion_mnist_mlp("experiments/results/irepair/fmnist_mlp_run", seeds=2),
                        (IRepairRQ("margin", sizes=(4, 8), margins=(0.0, 0.3)),))
