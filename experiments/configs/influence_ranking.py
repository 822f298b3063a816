"""Ranking mislabelled training points by influence on group calibration (Adebayo 2022,
Sec. 6.5, Fig. 6-3 analogue): 10% of the digits training labels flipped, softmax regression, the
fraction of flipped points among the top 50 of four rankings, 5 seeds
(experiments/results/influence_ranking)."""

from repair_jax.studies.influence import InfluenceRankingStudy


def get_config(smoke: bool = False) -> InfluenceRankingStudy:
    if smoke:
        return InfluenceRankingStudy(seeds=(0,), train_limit=300)
    return InfluenceRankingStudy()
