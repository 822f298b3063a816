"""Explanations of the user's own model (issue #25, part 3): every registry method gives the same
attributions for an NNX CNN and a linen CNN with identical weights, called through
``attribute(method, classifier, x, target)``; what a model cannot support is refused in one line."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from repair_jax.classifier import from_apply_fn, from_linen, from_nnx
from repair_jax.errors import UserError
from repair_jax.explain import ATTRIBUTIONS, attribute, conv_layers, fit_patterns, layer_activations

SHAPE = (8, 8, 1)
OPTIONS = {"ig": {"steps": 4}, "smoothgrad": {"samples": 3}, "smoothgrad_sq": {"samples": 3},
           "smoothgrad_mean_sq": {"samples": 3},
           "vargrad": {"samples": 3}, "lime": {"samples": 40, "seed": 1}, "kernel_shap": {"samples": 40, "seed": 1}}


class LinenCNN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Conv(4, (3, 3))(x)))
        h = nn.max_pool(h, (2, 2), (2, 2))
        h = nn.relu(nn.Conv(5, (3, 3))(h))
        return nn.Dense(3)(h.reshape((h.shape[0], -1)))


class NNXCNN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, relu=None):
        self.conv1 = nnx.Conv(1, 4, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.conv2 = nnx.Conv(4, 5, (3, 3), rngs=rngs)
        self.head = nnx.Linear(4 * 4 * 5, 3, rngs=rngs)
        self.relu = relu  # None: nnx.relu, looked up at call time

    def __call__(self, x):
        h = nnx.max_pool(nnx.relu(self.bn(self.conv1(x))), (2, 2), (2, 2))
        h = (self.relu or nnx.relu)(self.conv2(h))
        return self.head(h.reshape((h.shape[0], -1)))


def _twins(relu=None):
    """The linen CNN (random weights, non-trivial BatchNorm statistics) and the NNX CNN with its weights."""
    variables = LinenCNN().init(jax.random.PRNGKey(0), jnp.zeros((1, *SHAPE)))
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    stats = {"BatchNorm_0": {"mean": 0.1 * jax.random.normal(k1, (4,)),
                             "var": 1 + jax.random.uniform(k2, (4,))}}
    p = variables["params"]
    model = NNXCNN(nnx.Rngs(0), relu)
    for layer, name in ((model.conv1, "Conv_0"), (model.conv2, "Conv_1"), (model.head, "Dense_0")):
        layer.kernel[...], layer.bias[...] = p[name]["kernel"], p[name]["bias"]
    bn = {"scale": p["BatchNorm_0"]["scale"] + 0.5, "bias": p["BatchNorm_0"]["bias"] - 0.2}
    model.bn.scale[...], model.bn.bias[...] = bn["scale"], bn["bias"]
    model.bn.mean[...], model.bn.var[...] = stats["BatchNorm_0"]["mean"], stats["BatchNorm_0"]["var"]
    params = {**p, "BatchNorm_0": bn}
    linen = from_linen(LinenCNN(), {"params": params, "batch_stats": stats}, input_shape=SHAPE)
    return linen, from_nnx(model, input_shape=SHAPE)


def _x(n=2):
    return jax.random.uniform(jax.random.PRNGKey(2), (n, *SHAPE))


def test_nnx_and_linen_twins_give_identical_attributions_for_every_method():
    linen, nnx_clf = _twins()
    x, target = _x(), np.array([0, 2])
    np.testing.assert_allclose(nnx_clf.logits(x), linen.logits(x), rtol=1e-6, atol=1e-6)
    assert list(linen.layers()) == ["Conv_0", "BatchNorm_0", "Conv_1", "Dense_0"]
    assert list(nnx_clf.layers()) == ["conv1", "bn", "conv2", "head"]
    patterns = {"patterns": fit_patterns(linen, _x(8))}  # fitted on the linen twin, used by both
    options = {**OPTIONS, "expected_grad": {"samples": 3, "references": np.asarray(_x(3))},
               "patternnet": patterns, "pattern_attribution": patterns}
    for name in ATTRIBUTIONS:
        a = attribute(name, linen, x, target, **options.get(name, {}))
        b = attribute(name, nnx_clf, x, target, **options.get(name, {}))
        assert a.shape == x.shape and float(jnp.abs(a).max()) > 0, name
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=name)
    grad = attribute("grad", linen, x, target)
    assert not np.allclose(attribute("guided_backprop", nnx_clf, x, target), grad)  # ReLUs were modified
    for linen_layer, nnx_layer in (("Conv_0", "conv1"), ("BatchNorm_0", "bn")):  # layers by path
        np.testing.assert_allclose(attribute("gradcam", nnx_clf, x, target, layer=nnx_layer),
                                   attribute("gradcam", linen, x, target, layer=linen_layer), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(layer_activations(nnx_clf, x, nnx_layer),
                                   layer_activations(linen, x, linen_layer), rtol=1e-5, atol=1e-6)


def test_every_form_of_passing_a_model_agrees():
    """A Classifier, a linen module with its variables, an NNX model itself and the older apply_fn form."""
    linen, nnx_clf = _twins()
    x, target = _x(), np.array([1, 0])
    module, variables = LinenCNN(), linen.variables
    plain = lambda p, z: module.apply({"params": p, "batch_stats": variables["batch_stats"]}, z)
    for name in ("guided_backprop", "lrp_alpha_beta", "gradcam"):
        expected = attribute(name, linen, x, target)
        np.testing.assert_allclose(attribute(name, module, variables, x, target), expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(attribute(name, plain, linen.params, x, target=target), expected,
                                   rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(attribute("gradcam", nnx_clf.export(), x, target), expected, rtol=1e-5, atol=1e-6)
    assert conv_layers(nnx_clf, SHAPE) == ["conv1", "conv2"] and conv_layers(plain, linen.params, SHAPE) == [
        "Conv_0", "Conv_1"]


def test_a_plain_function_model_gets_gradients_and_a_one_line_refusal_elsewhere():
    linen, _ = _twins()
    stats = linen.state
    fn = lambda p, z: LinenCNN().apply({"params": p, "batch_stats": stats}, z)
    clf = from_apply_fn(fn, linen.params, input_shape=SHAPE)
    x, target = _x(), np.array([0, 1])
    np.testing.assert_allclose(attribute("grad", clf, x, target), attribute("grad", linen, x, target), atol=1e-6)
    np.testing.assert_allclose(attribute("ig", clf, x, target, steps=4),
                               attribute("ig", linen, x, target, steps=4), atol=1e-6)
    for name in ("guided_backprop", "deconvnet", "lrp_epsilon", "lrp_alpha_beta", "gradcam", "gradcam_pp"):
        with pytest.raises(UserError, match="plain-function model") as err:
            attribute(name, clf, x, target)
        assert "\n" not in str(err.value), name
    with pytest.raises(UserError, match="plain-function model"):
        layer_activations(clf, x, "Conv_0")


def test_guided_backprop_refuses_a_relu_it_cannot_modify():
    x, target = _x(), np.array([0, 1])
    _, hidden = _twins(relu=lambda h: jnp.maximum(h, 0))  # conv1's ReLU is nnx.relu, conv2's is not
    for name, what in (("guided_backprop", "guided backprop"), ("deconvnet", "deconvnet")):
        with pytest.raises(UserError, match=f"{what} found not every ReLU it can modify in this model"):
            attribute(name, hidden, x, target)

    class MaxNet(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(1, 2, (3, 3), rngs=rngs)
            self.head = nnx.Linear(2, 3, rngs=rngs)

        def __call__(self, z):
            return self.head(jnp.mean(jnp.maximum(self.conv(z), 0), axis=(1, 2)))

    with pytest.raises(UserError, match="guided backprop found no ReLU it can modify in this model"):
        attribute("guided_backprop", from_nnx(MaxNet(nnx.Rngs(0)), input_shape=SHAPE), x, target)
    lrp = attribute("lrp_epsilon", hidden, x, target)  # LRP needs layers, not ReLU calls
    assert lrp.shape == x.shape

    class NormNet(MaxNet):  # LayerNorm clamps its variance with max(0, v): not a ReLU, not refused
        def __call__(self, z):
            return self.head(jnp.mean(nnx.relu(self.norm(self.conv(z))), axis=(1, 2)))

    norm_net = NormNet(nnx.Rngs(0))
    norm_net.norm = nnx.LayerNorm(2, rngs=nnx.Rngs(0))
    norm_clf = from_nnx(norm_net, input_shape=SHAPE)
    assert not np.allclose(attribute("guided_backprop", norm_clf, x, target), attribute("grad", norm_clf, x, target))


def test_a_missing_layer_path_lists_the_models_layers():
    linen, nnx_clf = _twins()
    x = _x()
    with pytest.raises(UserError, match="no layer 'conv9' in the model; its layers are: conv1, bn, conv2, head"):
        attribute("gradcam", nnx_clf, x, layer="conv9")
    with pytest.raises(UserError, match="no layer 'conv2' in the model; its layers are: Conv_0, BatchNorm_0, "
                                        "Conv_1, Dense_0"):
        attribute("gradcam_pp", linen, x, layer="conv2")
    with pytest.raises(UserError, match="no layer 'conv9'.*conv1, bn, conv2, head"):
        layer_activations(nnx_clf, x, "conv9")
    with pytest.raises(UserError, match="layer 'head' has output shape"):
        attribute("gradcam", nnx_clf, x, layer="head")
