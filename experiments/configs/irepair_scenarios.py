"""RQ i of Henriksen et al. 2022, Sec. 5, I-REPAIR (gamma 1) against retraining
(experiments/results/irepair_scenarios): scenario 1 (Fig. 1a), single-class repair sets of K in {16, 32}
for every class; scenario 2 (Fig. 1d), repair sets over 1, 2, 5 and 10 classes with K in {1, 2, 4} per
class. FC 2x256 on Fashion-MNIST, |C| = 40, RMSprop lr 1e-4, ub 5000, 3 seeds.
"""

from repair_jax.studies.irepair import IRepairProtocol, IRepairScenario, IRepairStudy


def get_config(smoke: bool = False) -> IRepairStudy:
    if smoke:
        return IRepairStudy(IRepairProtocol.digits_smoke(),
                            (IRepairScenario(1, sizes=(1, 2)), IRepairScenario(2, sizes=(1, 2), num_classes=(1, 2))))
    return IRepairStudy(IRepairProtocol.fashion_mnist_mlp("experiments/results/irepair/fmnist_mlp_run", seeds=3),
                        (IRepairScenario(1, sizes=(16, 32)), IRepairScenario(2, sizes=(1, 2, 4), num_classes=(1, 2, 5, 10))))
