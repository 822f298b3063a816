"""Ablation of Tables 5.1-5.2 (Adebayo 2022, Sec. 5.3): which term flips model guiding vs influence functions.

At the committed setting (``guiding_noisy_labels``: eta = fi_weight 0.1) model guiding detects the flipped labels
of digits slightly worse than influence functions (AUROC 0.966 vs 0.981), the reverse of the thesis's Table 5.1,
while without the feature-importance term (``guiding_noisy_labels_fi0``) it is slightly better (0.983). This sweep
runs the digits noisy-labels study at eta in {0, 0.01, 0.03, 0.1, 0.3, 1} with everything else fixed (gamma 1,
l2 1e-2, 100 outer Adam steps at 0.05, 20 % of the labels flipped, audit 100, 3 seeds; the networks are trained
once per seed and shared through ``runs/guiding_networks_ablation``), so the order of the two methods can be read
against eta. Each setting writes ``OUT/eta_<value>/`` as ``guiding_noisy_labels`` does. ``smoke=True``: two etas
at smoke size (same code path).
"""

import dataclasses

from repair_jax.guiding.bilevel import BilevelConfig
from repair_jax.studies.guiding import GuidingData, NoisyLabelsStudy, smoke_sweep
from repair_jax.studies.wr import Sweep

ETAS = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)


def get_config(smoke: bool = False) -> Sweep:
    base = NoisyLabelsStudy(datasets=(GuidingData("digits", None, 30, (128,)),),
                            bilevel=BilevelConfig(gamma=1.0, fi_weight=0.1, outer_steps=100),
                            network_cache="runs/guiding_networks_ablation")
    etas = ETAS[::5] if smoke else ETAS
    if smoke:
        base = dataclasses.replace(smoke_sweep(base), network_cache="")
    return Sweep(configs=tuple((f"eta_{eta:g}", dataclasses.replace(
        base, bilevel=dataclasses.replace(base.bilevel, fi_weight=eta))) for eta in etas))
