"""Explanations of a trained classifier's predictions (Adebayo 2022, Ch. 3; Sharma n.d., GradCAM).

Attributions are pure functions ``method(apply_fn, params, x, target, **options)`` of one example
(see :mod:`repair_jax.explain.gradients`, :mod:`~repair_jax.explain.backprop`,
:mod:`~repair_jax.explain.cam`, :mod:`~repair_jax.explain.surrogate`); :func:`attribute` runs any of them
over a batch (vmapped and jitted; LIME / KernelSHAP, host code, example by example); :data:`ATTRIBUTIONS`
holds them by name. It takes the user's model (``attribute(method, model, x, target)``: a
:class:`~repair_jax.classifier.Classifier` of a linen, NNX or plain-function model, an NNX model, a run, a
TrainState) or the older ``attribute(method, apply_fn, params, x, target)``, where
``apply_fn(params, x) -> logits`` in eval mode comes from :func:`eval_apply_fn`.
"""

from repair_jax.explain.backprop import (
    deconvnet, deep_taylor, guided_backprop, lrp_alpha_beta, lrp_epsilon, modified_relu,
)
from repair_jax.explain.patterns import (
    ESTIMATORS, LayerMoments, fit_pattern, fit_patterns, layer_moments, pattern_attribution, pattern_from_moments,
    patternnet,
)
from repair_jax.explain.cam import (
    conv_layers, gradcam, gradcam_map, gradcam_pp, gradcam_pp_map, layer_activation_and_gradient, resolve_layer,
)
from repair_jax.explain.gradients import (
    NOISE_KINDS, QUADRATURE_RULES, expected_gradients, gradient, input_x_gradient, integrated_gradients,
    noise_tunnel, quadrature, smoothgrad, smoothgrad_mean_sq, smoothgrad_sq, vargrad,
)
from repair_jax.explain.model_fn import eval_apply_fn, input_gradient, target_logit
from repair_jax.explain.registry import ATTRIBUTIONS, attribute, get_attribution, parse_methods
from repair_jax.explain.pipeline import explain_run
from repair_jax.explain.plots import heat_map, plot_attributions
from repair_jax.explain.concepts import (
    TCAVResult, concept_activation_vector, conceptual_sensitivity, layer_activations, layer_gradients, tcav, tcav_score,
    tcav_significance,
)
from repair_jax.explain.spurious import (
    SIGNALS, add_signal, ccm, contaminate, distributions_differ, explanation_ssim, fam, fam_gt, identical_class_metric,
    k_ssd, label_independent_signals, parse_signal, signal_mask, spurious_score,
)
from repair_jax.explain.surrogate import (
    DISTANCES, SEGMENTATIONS, coalition_logits, kernel_shap, lime, lime_kernel, masked_inputs, patch_segments,
    segment_image, segment_map,
)
from repair_jax.explain.randomization import cascading_randomization, rank_correlation
