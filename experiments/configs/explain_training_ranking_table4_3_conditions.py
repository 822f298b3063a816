"""Adebayo 2022, Table 4.3 analogue (training-point ranking, Sec. 4.2.4) on the models of
``explain_spurious_table4_1_conditions``: the setting where the thesis's model conditions hold (every spurious
score > 0.85, the normal model's < 0.1; see that config for the probes behind it). Everything else is
``explain_training_ranking_table4_3``'s CPU size: influence of the last dense layer, ICM of the top 10, 50 test
inputs, 3 seeds (the models' config). ``smoke=True``: digits, a small MLP, the same code path.
"""

from dataclasses import replace
from pathlib import Path

from repair_jax.experiment import load_config
from repair_jax.studies.explain_tables import SpuriousTrainingRankingStudy


def get_config(smoke: bool = False) -> SpuriousTrainingRankingStudy:
    models = load_config(str(Path(__file__).with_name("explain_spurious_table4_1_conditions.py")), smoke=smoke)
    models = replace(models, methods=())
    return SpuriousTrainingRankingStudy(models=models, top=5) if smoke else SpuriousTrainingRankingStudy(models=models)
