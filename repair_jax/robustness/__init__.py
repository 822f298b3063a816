"""repair_jax.robustness: robustness training meets dataset bias (Pradhan et al. 2020).

Imbalance levels of a training split (balanced / linear / long-tailed), Pradhan et al.'s (2020) training routine
(standard augmentation, triangular cyclical learning rate), AugMix, universal adversarial
perturbations and their defences (universal and shared adversarial training), and adversarial
noise training. See docs/papers/robustness.md.
"""

from repair_jax.robustness.adversarial import (
    NoiseGenerator, NoiseTrainingState, UniversalState, adversarial_noise_step,
    init_noise_training, init_universal_state, scale_to_sphere, shared_adversarial_objective,
    shared_perturbations, universal_adversarial_step,
)
from repair_jax.robustness.augment import (
    Augment, augmented_objective, augmented_step, deepaugment, random_flips, random_rotation, rotate, standard_augment, step_key,
)
from repair_jax.robustness.augmix import (
    AUGMIX_OPS, augmix_batch, augmix_image, augmix_objective, jensen_shannon_consistency,
)
from repair_jax.imbalance import (
    ImbalanceSpec, class_counts, imbalanced_indices, linear_counts, longtail_counts,
    make_imbalanced, parse_imbalance, split_imbalance_name,
)
from repair_jax.robustness.schedules import triangular_cyclical_lr
from repair_jax.robustness.uap import (
    NORMS, check_ball, clipped_cross_entropy, deepfool, eval_logits_fn, fooling_rate, predicted_labels,
    project, random_perturbation, sign_ascent, uap_deepfool, uap_sgd,
)
from repair_jax.robustness.methods import METHODS, RobustMethod
from repair_jax.robustness.report import head_tail_recall, plot_recall_vs_class_size, report_markdown, versus_plain
