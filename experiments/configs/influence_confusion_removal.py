"""Influence on a confused pair's soft type1conf (Zhong et al. 2022, Sec. 2.2 through Adebayo 2022, Eq. 6.4)
against retraining without the k most harmful training points, and that removal as a data-centric
repair: softmax regression (L2 0.01) on 2,000 digits and 2,000 Fashion-MNIST training points, the 3 most
confused validation pairs each, k = 5, 10, 20, 40, 80; ranking and predicted / actual changes on the
validation split, repair statistics on the test split (experiments/results/influence_confusion_removal)."""

from repair_jax.studies.influence import ConfusionRemovalStudy


def get_config(smoke: bool = False) -> ConfusionRemovalStudy:
    if smoke:
        return ConfusionRemovalStudy(datasets=("digits",), pairs=1, ks=(5, 10), train_limit=300)
    return ConfusionRemovalStudy()
