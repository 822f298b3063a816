"""Sensitivity of group calibration error to label error (Adebayo 2022, Sec. 6.3,
Fig. 6-1 and 6-2 analogues): 0-30% of the digits test labels (fixed model) or training labels
(refit) flipped; % change of the heavy-ink and light-ink groups' ECE for softmax regression and an
MLP, 3 seeds (experiments/results/label_flip_sensitivity)."""

from repair_jax.studies.influence import LabelFlipSensitivityStudy


def get_config(smoke: bool = False) -> LabelFlipSensitivityStudy:
    if smoke:
        return LabelFlipSensitivityStudy(seeds=(0,), fractions=(0.0, 0.3), train_limit=300)
    return LabelFlipSensitivityStudy()
