"""RQ iv / Table 1 of Henriksen et al. 2022, Sec. 5 (experiments/results/irepair_table1): single-class
repair on the FC 2x256 network, retraining vs I-REPAIR (gamma in {0.01, 0.05, 0.1, 0.5, 1}) vs MM repair
(L-inf 1 and 5), |R| in {1, 2, 4, 8}, |C| = 40, RMSprop lr 1e-4, ub 5000, every class, 3 seeds (the paper
uses 20); accuracy drop on the test split with 95% CIs and t-test p-values against retraining.
"""

from repair_jax.studies.irepair import IRepairProtocol, IRepairStudy, IRepairTable1


def get_config(smoke: bool = False) -> IRepairStudy:
    if smoke:
        return IRepairStudy(IRepairProtocol.digits_smoke(),
                            (IRepairTable1(sizes=(1, 2), gammas=(1.0,), mm_epsilons=(1.0,)),))
    return IRepairStudy(IRepairProtocol.fashion_mnist_mlp("experiments/results/irepair/fmnist_mlp_run", seeds=3),
                        (IRepairTable1(sizes=(1, 2, 4, 8), gammas=(0.01, 0.05, 0.1, 0.5, 1.0),
                                       mm_epsilons=(1.0, 5.0)),))
