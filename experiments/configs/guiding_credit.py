"""The regression path of model guiding (Adebayo 2022, Sec. 5.2, the lending example) on
the synthetic credit-limit table, 3 seeds (experiments/results/guiding_credit)."""

import dataclasses

from repair_jax.studies.guiding import CreditStudy


def get_config(smoke: bool = False) -> CreditStudy:
    config = CreditStudy()
    if smoke:
        config = dataclasses.replace(config, seeds=config.seeds[:1], n=300,
                                     bilevel=dataclasses.replace(config.bilevel, outer_steps=5))
    return config
