"""Attribution quality as the data-attribution field measures it (issue 17 Part 1): the linear datamodeling
score (TRAK Sec. 2 / dattri), leave-one-out correlation and noisy-label detection AUC of every attribution
method (explicit, CG, LiSSA, TracIn, TRAK-style projection, EK-FAC) for softmax regression and a
1-hidden-layer MLP (8 softplus units: smooth, so that its fits converge) on 300 real digits and 300 real
Fashion-MNIST training points (float64): 40 subsets of half the points, 40 test points, 10 leave-one-out
removals, 10% flipped labels (synthetic, self-influence of 60 points); sized for the shared 2-core CPU
(experiments/results/influence_lds)."""

from repair_jax.studies.influence import FullBatchModel
from repair_jax.studies.influence_lds import LdsStudy


def get_config(smoke: bool = False) -> LdsStudy:
    if smoke:
        return LdsStudy(datasets=("digits",), models=(FullBatchModel("logistic_regression", (), 1e-2, 200),),
                        train_limit=100, num_subsets=6, test_points=4, retrain_steps=40, loo_points=3,
                        self_influence_points=30, noisy_fraction=0.2, methods=("cg", "tracin"))
    return LdsStudy()
