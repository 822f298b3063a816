"""The leave-one-out check of influence functions (Koh & Liang 2017; Adebayo 2022,
Sec. 3.4, Eq. 3.1/6.2) on digits: softmax regression (3 test points) and a damped MLP (one hidden
layer of 16, 400 training points, 1 test point), k = 20 removals each
(experiments/results/influence_loo)."""

from repair_jax.studies.influence import FullBatchModel, InfluenceLooStudy, LooModel


def get_config(smoke: bool = False) -> InfluenceLooStudy:
    logistic = FullBatchModel("logistic_regression", (), 1e-2, 2000)
    mlp = FullBatchModel("mlp_damped", (16,), 1e-3, 100 if smoke else 400)
    return InfluenceLooStudy(models=(LooModel(logistic, 0.0, 200 if smoke else None, 1 if smoke else 3),
                                     LooModel(mlp, 1e-2, 200 if smoke else 400, 1)),
                             k=4 if smoke else 20)
