"""Adebayo 2022, Table 4.1 analogue in a setting where the thesis's model conditions hold (Sec. 4.2.1:
every spurious model's spurious score > 0.85; the normal model's < 0.1 for every class and signal).

The committed CPU-size run (``explain_spurious_table4_1``) fails both: its spurious scores are 0.78 / 0.88 /
0.34 and its clean normal model scores 0.81, because on Fashion-MNIST's black background a clean model reads the
two bright stripes as a Bag. Probes on this machine (seed 0, 6k training images, CNN width 8; spurious score on
2,000 test images) chose this setting, changing one thing at a time:

* the normal model: trained on clean data, its largest score is 0.815 (stripes -> Bag) at 3 epochs; dimmer
  stripes (0.5) give 0.093, too close to 0.1 to hold across seeds. Trained with each signal pasted on a random 30 %
  of its training images whatever their class (``normal_signal_fraction=0.3``: it has seen the signals and learnt
  that they carry no label), its largest score is 0.012-0.014 (seeds 0 and 1). This is our departure from the
  thesis, whose normal model sees clean data; the normal condition is the thesis's, checked as before;
* epochs 3 -> 6: the stripe model 0.88 -> 0.92; the tag model stays at 0.83 (10 epochs: 0.83, lr 3e-3: 0.84);
* the tag 4 -> 6 pixels (``tag(6)``): 0.83 -> 0.88 (a width-16 CNN with the 4-pixel tag: 0.93, at twice the
  cost of every attribution);
* the texture amplitude 0.04 -> 0.12 (``texture(0.12)``, still faint on black): 0.57 -> 0.90 at 6 epochs (0.08:
  0.84; 0.04 at 10 epochs: 0.64).

The thesis's definitions are applied before averaging (``spurious_models_only=True``, Sec. 4.2.1: only a model
above 0.85 is a spurious model): a (seed, signal) pair whose models fail them stays in the log and the model
table and is left out of the measures (at 3 seeds: seed 2's Stripe and texture models, 0.82 and 0.77).

Everything else is the CPU-size run's: aligned class 0 (T-shirt/top), 50 explained test inputs, Grad,
SmoothGrad, IG, Guided Backprop; 3 seeds (the CPU-size run has 1, the thesis 5), about 5 minutes each on
one core. ``smoke=True``: the smoke config with the same signal forms (same code path).
"""

from dataclasses import replace

from repair_jax.studies.explain_spurious import SpuriousAttributionStudy
from repair_jax.train import TrainConfig

SIGNALS = ("tag(6)", "stripe", "texture(0.12)")
NORMAL_SIGNAL_FRACTION = 0.3


def models(smoke: bool = False) -> SpuriousAttributionStudy:
    """The models of this setting (shared by the Table 4.2 and 4.3 configs of the same name)."""
    if smoke:
        train = TrainConfig(dataset="digits", model="mlp", model_kwargs={"hidden": (32,)}, epochs=6, lr=3e-3)
        return SpuriousAttributionStudy(train=train, signals=("tag(3)", "stripe"), methods=("grad", "guided_backprop"),
                                        explain_examples=8, steps=8, samples=4, seeds=(0,),
                                        normal_signal_fraction=NORMAL_SIGNAL_FRACTION, spurious_models_only=True)
    train = TrainConfig(dataset="fashion_mnist", model="cnn", model_kwargs={"width": 8}, epochs=6, lr=1e-3,
                        train_limit=6000)
    return SpuriousAttributionStudy(train=train, signals=SIGNALS, explain_examples=50, seeds=(0, 1, 2),
                                    normal_signal_fraction=NORMAL_SIGNAL_FRACTION, spurious_models_only=True)


def get_config(smoke: bool = False) -> SpuriousAttributionStudy:
    return models(smoke)
