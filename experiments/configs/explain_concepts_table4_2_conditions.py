"""Adebayo 2022, Table 4.2 analogue (TCAV, Sec. 4.2.3) on the models of ``explain_spurious_table4_1_conditions``:
the setting where the thesis's model conditions hold (every spurious score > 0.85, the normal model's < 0.1;
see that config for the probes behind it). Everything else is ``explain_concepts_table4_2``'s CPU size: the last
convolution, known concepts = classes 1-3, 50 concept images, 10 random sets, 3 seeds (the models' config). ``smoke=True``: digits,
a small MLP (layer Dense_0), the same code path.
"""

from dataclasses import replace
from pathlib import Path

from repair_jax.experiment import load_config
from repair_jax.studies.explain_tables import SpuriousConceptStudy


def get_config(smoke: bool = False) -> SpuriousConceptStudy:
    models = load_config(str(Path(__file__).with_name("explain_spurious_table4_1_conditions.py")), smoke=smoke)
    models = replace(models, methods=())
    if smoke:
        return SpuriousConceptStudy(models=models, layer="Dense_0", concepts=(1,), concept_examples=10, random_sets=3)
    return SpuriousConceptStudy(models=models)
