"""benchmarks/explain.py: our attributions equal Captum's on the same architecture with copied weights
(what makes its attributions-per-second ratios meaningful). Needs the ``bench`` extra (torch, captum)."""

import jax
import numpy as np

from benchmarks.explain import agreement, benchmark_models, disagreements, flax_model
from repair_jax.data import load_dataset


def _digits(name):
    test = load_dataset("digits").test
    x = benchmark_models(test.x[:4].astype(np.float32), 4)[name][2]  # ResNet: 12x12x3, odd sizes after stride 2
    return x, test.y[:4].astype(np.int32)


def test_cnn_gradient_ig_and_gradcam_agree_with_captum_on_copied_weights():
    x, y = _digits("cnn")
    apply_fn, params, variables = flax_model("cnn", {"width": 4, "dense": 8}, x)
    errors = agreement("cnn", apply_fn, params, variables, x, y)
    assert set(errors) == {"grad", "ig", "gradcam"}
    assert not disagreements(errors), errors
    # the check can fail: the torch copy of a model with one BatchNorm scale changed disagrees
    changed = jax.tree_util.tree_map(np.array, variables)
    changed["params"]["BatchNorm_0"]["scale"][0] += 0.5
    assert "grad" in disagreements(agreement("cnn", apply_fn, params, changed, x, y, ("grad",)))


def test_resnet18_gradient_agrees_with_captum_on_copied_weights():
    """The ResNet copy (flax's SAME padding at stride 2, shortcuts, eval BatchNorm) computes the same function."""
    x, y = _digits("resnet18")
    apply_fn, params, variables = flax_model("resnet18", {"width": 4}, x)
    errors = agreement("resnet18", apply_fn, params, variables, x, y, ("grad",))
    assert not disagreements(errors), errors
