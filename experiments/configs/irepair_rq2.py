"""RQ ii of Henriksen et al. 2022, Sec. 5 (experiments/results/irepair_rq2): influence locking against
random locking with p in {0.1, 0.3, 0.5, 0.7, 0.9} at |R| = 8 (Fig. 1b), and the correct-set influence
loss, output magnitude against cross-entropy, at |R| in {1, 2, 4, 8}. FC 2x256 on Fashion-MNIST, gamma 1,
|C| = 40, RMSprop lr 1e-4, ub 5000, 3 seeds.
"""

from repair_jax.studies.irepair import IRepairProtocol, IRepairRQ, IRepairStudy


def get_config(smoke: bool = False) -> IRepairStudy:
    if smoke:
        return IRepairStudy(IRepairProtocol.digits_smoke(),
                            (IRepairRQ("locking", sizes=(1,), probabilities=(0.5,)), IRepairRQ("loss", sizes=(1,))))
    return IRepairStudy(IRepairProtocol.fashion_mnist_mlp("experiments/results/irepair/fmnist_mlp_run", seeds=3),
                        (IRepairRQ("locking", sizes=(8,), probabilities=(0.1, 0.3, 0.5, 0.7, 0.9)),
                         IRepairRQ("loss", sizes=(1, 2, 4, 8))))
