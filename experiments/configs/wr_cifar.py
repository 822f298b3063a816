"""Zhong et al. 2022, Table 1 (single-label settings), GPU-sized, through TFDS; one setting per
data set and model, each in OUT/<setting> (no committed results: no GPU and no CIFAR copy here).

Training (Sec. 4.1): SGD 0.1, Nesterov 0.9, x0.1 at 50% and 75% of 300 epochs, L2 5e-4, batch 128.
Repair: 60 fine-tuning epochs at 0.01 (the paper gives no rate; 0.01 is the one the training schedule
reaches after its first decay), SGD on the same step schedule, the rho grid of Sec. 4.4, 5 seeds for the
selected settings. Targets: cat-dog and dog-cat-bird (CIFAR-10), girl-woman and woman-girl-boy
(CIFAR-100), cat-dog + automobile-truck (two pairs). Smoke: TFDS mock data, tiny widths, and the
settings that add a data set or a target rule (VGG11-BN, MobileNetV2 and the plain CIFAR-10 pair are
left out of the smoke run, and CIFAR-100's smoke trains the smoke ResNet-18 instead of a ResNet-34: the
models are exercised by tests/test_train.py, and compiling them costs a minute on 2 CPUs).
CIFAR class indices: airplane 0, automobile 1, bird 2, cat 3, deer 4, dog 5, frog 6, horse 7, ship 8,
truck 9; CIFAR-100: boy 11, girl 35, woman 98.
"""

from repair_jax.repair import RepairConfig
from repair_jax.studies.wr import Sweep, TargetRule, WRStudy, recipe

CAT, DOG, BIRD, AUTOMOBILE, TRUCK = 3, 5, 2, 1, 9
BOY, GIRL, WOMAN = 11, 35, 98

# name -> (dataset, model, (smoke model, its kwargs), studies, the study run at smoke size)
SETTINGS = {
    "cifar10_resnet18": ("cifar10", "resnet18", ("resnet18", {"width": 4}),
                         {"pair": ((CAT, DOG),), "triplet": ((DOG, CAT, BIRD),)}, "pair"),
    "cifar10_vgg11_bn": ("cifar10", "vgg11_bn", ("vgg11_bn", {"width_mult": 0.0625}),
                         {"pair": ((CAT, DOG),), "triplet": ((DOG, CAT, BIRD),)}, "pair"),
    "cifar10_mobilenet_v2": ("cifar10", "mobilenet_v2", ("mobilenet_v2", {"width_mult": 0.1}),
                             {"pair": ((CAT, DOG),), "triplet": ((DOG, CAT, BIRD),)}, "triplet"),
    "cifar100_resnet34": ("cifar100", "resnet34", ("resnet18", {"width": 4}),
                          {"pair": ((GIRL, WOMAN),), "triplet": ((WOMAN, GIRL, BOY),)}, "pair"),
    "cifar10_resnet18_two_pairs": ("cifar10", "resnet18", ("resnet18", {"width": 4}),
                                   {"pairs": ((CAT, DOG), (AUTOMOBILE, TRUCK))}, "pairs"),
}


def setting(dataset: str, model: str, smoke_model: tuple, studies: dict, smoke_study: str, smoke: bool) -> WRStudy:
    config = WRStudy(
        train=recipe("sgd_step", dataset=dataset, model=model, epochs=300),
        repair=RepairConfig(epochs=60, lr=0.01, batch_size=128, optimizer="sgd", schedule="step", l2=5e-4,
                            seeds=5, rhos=(0.1, 0.3, 0.5, 0.7, 0.9)),
        studies=tuple(TargetRule(name, groups=groups) for name, groups in studies.items()))
    if smoke:  # enough mock examples that CIFAR-100's target classes occur in the train split
        return config.shrunk(recipe("sgd_step", dataset=dataset, model=smoke_model[0], model_kwargs=smoke_model[1], epochs=1),
                             mock_examples=400 if dataset == "cifar100" else 48, studies=(smoke_study,))
    return config


# cifar10_resnet18 adds nothing to these at smoke size: the two-pairs setting trains the same model on
# the same data, and CIFAR-100's runs the pair rule
SMOKE_SETTINGS = ("cifar100_resnet34", "cifar10_resnet18_two_pairs")


def get_config(smoke: bool = False) -> Sweep:
    names = SMOKE_SETTINGS if smoke else tuple(SETTINGS)
    return Sweep(tuple((name, setting(*SETTINGS[name], smoke=smoke)) for name in names))
