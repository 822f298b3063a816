"""Tables 5.3-5.4 analogues of Adebayo 2022, Sec. 5.3 (spurious correlation): a synthetic
4x4 tag on 95% of one class's real training images (Fashion-MNIST Shirt, digits 8), MLPs, 3 seeds;
model guiding vs Errors-ERM, group DRO and SSA (experiments/results/guiding_spurious; committed
before SSA was added, so its tables have no SSA column until rerun)."""

from repair_jax.studies.guiding import GuidingData, SpuriousStudy, smoke_sweep


def get_config(smoke: bool = False) -> SpuriousStudy:
    config = SpuriousStudy(datasets=(GuidingData("fashion_mnist", 3000, 15, (256,), spurious_class="Shirt"),
                                     GuidingData("digits", None, 30, (128,), spurious_class="8")))
    return smoke_sweep(config) if smoke else config
