"""The source papers' studies: one config type and its runner per table, above every method package.

Each module reproduces one source's tables from the method packages' values (the house's top floor: a study
imports methods; no method package imports a study). A config file in ``experiments/configs`` builds one of
these config types; :func:`repair_jax.experiment.run_experiment` runs it.

- :mod:`.wr`: Zhong et al. 2022 (Weighted Regularization), Sec. 4: train-and-diagnose, WR studies, sweeps,
  w-os frontiers, two pairs at once (Table 3)
- :mod:`.irepair`: Henriksen et al. 2022 (I-REPAIR), Sec. 5: Table 1, scenarios, RQ2/RQ3
- :mod:`.explain_spurious`: Adebayo 2022, Sec. 4.2 (Table 4.1): attributions of spurious-signal models
- :mod:`.explain_tables`: Adebayo 2022, Sec. 4.2-4.5 (Tables 4.2-4.4, mislabelled examples)
- :mod:`.explain_sanity`: Adebayo 2022, Sec. 4.4: cascading parameter randomisation
- :mod:`.guiding`: Adebayo 2022, Ch. 5 (Tables 5.1-5.4): model guiding vs its baselines
- :mod:`.influence`: Adebayo 2022, Ch. 3 and 6: influence vs leave-one-out, label-flip sensitivity, training-point
  ranking, confusion removal
- :mod:`.influence_ranking_ablation`: Adebayo 2022, Sec. 6.5 (Fig. 6-3): which setting flips IF-Calib and the
  training-loss ranking
- :mod:`.influence_lds`: the linear datamodeling score of the influence estimators (Park et al. 2023)
- :mod:`.robustness`: Pradhan et al. 2020, Table 1: robustness methods under class imbalance
- :mod:`.bias`: Sharma n.d., Que-2: bias mitigations and WR vs degree of bias
- :mod:`.bias_multimodal`: Sharma n.d., Que-1: the multimodal LSTM-CNN with captions
- :mod:`.preconditions` and :mod:`.status`: the sources' preconditions as code, and the reproduction status page

``import repair_jax.studies`` imports every module (so every runner is registered) and exposes the config types.
"""

from repair_jax.studies import preconditions  # noqa: F401  (registers the after-run step writing preconditions.json)
from repair_jax.studies.bias import BiasMitigationStudy
from repair_jax.studies.bias_multimodal import MultimodalBiasStudy
from repair_jax.studies.explain_sanity import CascadingRandomizationStudy
from repair_jax.studies.explain_spurious import SpuriousAttributionStudy
from repair_jax.studies.explain_tables import (
    MislabelledExplanationStudy, OODExplanationStudy, SpuriousConceptStudy, SpuriousTrainingRankingStudy,
)
from repair_jax.studies.guiding import CreditStudy, FullGuidingRun, NoisyLabelsStudy, SpuriousStudy
from repair_jax.studies.influence import (
    ConfusionRemovalStudy, InfluenceLooStudy, InfluenceRankingStudy, LabelFlipSensitivityStudy,
)
from repair_jax.studies.influence_lds import LdsStudy
from repair_jax.studies.influence_ranking_ablation import InfluenceRankingAblation
from repair_jax.studies.irepair import IRepairStudy
from repair_jax.studies.robustness import RobustnessStudy
from repair_jax.studies.wr import FrontierComparison, Sweep, TrainAndDiagnose, WRStudy

__all__ = [
    "BiasMitigationStudy", "CascadingRandomizationStudy", "ConfusionRemovalStudy", "CreditStudy", "FrontierComparison",
    "FullGuidingRun", "IRepairStudy", "InfluenceLooStudy", "InfluenceRankingAblation", "InfluenceRankingStudy", "LabelFlipSensitivityStudy",
    "LdsStudy", "MislabelledExplanationStudy", "MultimodalBiasStudy", "NoisyLabelsStudy", "OODExplanationStudy",
    "RobustnessStudy", "SpuriousAttributionStudy", "SpuriousConceptStudy", "SpuriousStudy",
    "SpuriousTrainingRankingStudy", "Sweep", "TrainAndDiagnose", "WRStudy",
]
