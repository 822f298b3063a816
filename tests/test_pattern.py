"""PatternNet, PatternAttribution (Kindermans et al. 2018) and DeepTaylor's z+ rule (Montavon et al.
2017): the signal estimator on a planted linear problem, the linear-model closed forms, z+
conservation, NNX / linen twins, and the one-line refusals."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from repair_jax.classifier import from_apply_fn, from_linen, from_nnx
from repair_jax.errors import UserError
from repair_jax.explain import attribute, deep_taylor, fit_pattern, fit_patterns, pattern_attribution, patternnet

SHAPE = (6, 6, 1)


def _planted(n=4000, seed=0):
    """Kindermans et al. 2018, Sec. 2: x = a_s y + a_d eps; w = (1, -1) cancels the distractor a_d."""
    rng = np.random.default_rng(seed)
    y, eps = rng.normal(size=n), rng.normal(size=n)
    a_s, a_d = np.array([1.0, 0.0]), np.array([1.0, 1.0])
    x = y[:, None] * a_s + eps[:, None] * a_d
    w = np.array([[1.0], [-1.0]])
    return x, x @ w, w, a_s


def _cos(u, v):
    u, v = np.ravel(u), np.ravel(v)
    return float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))


def test_the_pattern_recovers_a_planted_signal_that_the_weights_do_not_show():
    x, y, w, a_s = _planted()
    np.testing.assert_allclose(x @ w, y)  # the filter w outputs the signal y exactly
    for estimator in ("linear", "two_component"):
        a = np.asarray(fit_pattern(x, y, w, estimator))[:, 0]
        assert _cos(a, a_s) > 0.999, estimator
        np.testing.assert_allclose(a, a_s, atol=0.05)  # w^T a = 1 fixes the scale
    assert abs(_cos(w, a_s) - 1 / np.sqrt(2)) < 1e-9  # the gradient w points elsewhere
    with pytest.raises(UserError, match="unknown pattern estimator"):
        fit_pattern(x, y, w, "median")


class Linear(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(x.reshape((x.shape[0], -1)))


def test_on_a_linear_model_patternnet_is_the_signal_and_pattern_attribution_w_times_it():
    """Kindermans et al. 2018, Sec. 4.3: on y = w^T x + b, PatternNet = a y and PatternAttribution = w ⊙ a y."""
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(300, *SHAPE)).astype(np.float32)
    clf = from_linen(Linear(), Linear().init(jax.random.PRNGKey(0), jnp.zeros((1, *SHAPE))), input_shape=SHAPE)
    patterns = fit_patterns(clf, xs, estimator="linear", batch_size=128)
    w, b = clf.params["Dense_0"]["kernel"], clf.params["Dense_0"]["bias"]
    flat = xs.reshape(len(xs), -1)
    expected = fit_pattern(flat, flat @ w + b, w, "linear")
    np.testing.assert_allclose(patterns[0], expected, rtol=1e-4, atol=1e-5)
    x, target = xs[:3], np.array([0, 1, 1])
    y = (x.reshape(3, -1) @ w + b)[np.arange(3), target]
    a = np.asarray(patterns[0])[:, target].T  # (3, D)
    np.testing.assert_allclose(attribute("patternnet", clf, x, target, patterns=patterns).reshape(3, -1),
                               a * y[:, None], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(attribute("pattern_attribution", clf, x, target, patterns=patterns).reshape(3, -1),
                               np.asarray(w)[:, target].T * a * y[:, None], rtol=1e-4, atol=1e-5)


class ReluNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.max_pool(nn.relu(nn.Conv(3, (3, 3))(x)), (2, 2), (2, 2))
        h = nn.relu(nn.Dense(8)(h.reshape((h.shape[0], -1))))
        return nn.Dense(3)(h)


def test_deep_taylor_z_plus_conserves_the_target_logit():
    """Montavon et al. 2017: the z+ rule redistributes all of each unit's relevance (non-positive biases)."""
    variables = ReluNet().init(jax.random.PRNGKey(3), jnp.zeros((1, *SHAPE)))
    params = jax.tree_util.tree_map_with_path(
        lambda p, v: -0.1 * jnp.abs(v) if p[-1].key == "bias" else v, variables["params"])
    params = jax.tree_util.tree_map_with_path(  # some negative biases, the rest zero
        lambda p, v: v if p[-1].key != "bias" or p[0].key != "Dense_0" else jnp.zeros_like(v) - 0.05, params)
    clf = from_linen(ReluNet(), {"params": params}, input_shape=SHAPE)
    x = jax.random.uniform(jax.random.PRNGKey(4), (4, *SHAPE))
    target = np.array([0, 1, 2, 0])
    relevance = attribute("deep_taylor", clf, x, target)
    logits = np.asarray(clf.logits(x))[np.arange(4), target]
    np.testing.assert_allclose(relevance.reshape(4, -1).sum(1), logits, rtol=1e-4, atol=1e-5)
    assert not np.allclose(relevance, attribute("lrp_epsilon", clf, x, target), atol=1e-4)


class LinenCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.BatchNorm(use_running_average=True)(nn.Conv(4, (3, 3))(x)))
        h = nn.max_pool(h, (2, 2), (2, 2))
        h = nn.relu(nn.Dense(6)(h.reshape((h.shape[0], -1))))
        return nn.Dense(3)(h)


class NNXCNN(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(4, use_running_average=True, rngs=rngs)
        self.fc = nnx.Linear(3 * 3 * 4, 6, rngs=rngs)
        self.head = nnx.Linear(6, 3, rngs=rngs)

    def __call__(self, x):
        h = nnx.max_pool(nnx.relu(self.bn(self.conv(x))), (2, 2), (2, 2))
        return self.head(nnx.relu(self.fc(h.reshape((h.shape[0], -1)))))


def _twins():
    variables = LinenCNN().init(jax.random.PRNGKey(0), jnp.zeros((1, *SHAPE)))
    p = dict(variables["params"])
    p["BatchNorm_0"] = {"scale": jnp.array([0.5, 1.5, -1.0, 2.0]), "bias": jnp.array([0.1, -0.2, 0.3, 0.0])}
    stats = {"BatchNorm_0": {"mean": jnp.array([0.1, -0.1, 0.0, 0.2]), "var": jnp.array([1.5, 0.7, 1.0, 2.0])}}
    model = NNXCNN(nnx.Rngs(0))
    for layer, name in ((model.conv, "Conv_0"), (model.fc, "Dense_0"), (model.head, "Dense_1")):
        layer.kernel[...], layer.bias[...] = p[name]["kernel"], p[name]["bias"]
    model.bn.scale[...], model.bn.bias[...] = p["BatchNorm_0"]["scale"], p["BatchNorm_0"]["bias"]
    model.bn.mean[...], model.bn.var[...] = stats["BatchNorm_0"]["mean"], stats["BatchNorm_0"]["var"]
    linen = from_linen(LinenCNN(), {"params": p, "batch_stats": stats}, input_shape=SHAPE)
    return linen, from_nnx(model, input_shape=SHAPE)


def test_nnx_and_linen_twins_give_identical_patterns_and_attributions():
    linen, nnx_clf = _twins()
    xs = jax.random.normal(jax.random.PRNGKey(5), (64, *SHAPE))
    x, target = xs[:2], np.array([0, 2])
    np.testing.assert_allclose(nnx_clf.logits(x), linen.logits(x), rtol=1e-5, atol=1e-6)
    p_linen, p_nnx = fit_patterns(linen, xs, batch_size=32), fit_patterns(nnx_clf, list(np.split(np.asarray(xs), 2)))
    assert [p.shape for p in p_linen] == [(3, 3, 1, 4), (36, 6), (6, 3)]
    for a, b in zip(p_linen, p_nnx):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    for name in ("patternnet", "pattern_attribution", "deep_taylor"):
        opts = {} if name == "deep_taylor" else {"patterns": p_linen}
        a, b = attribute(name, linen, x, target, **opts), attribute(name, nnx_clf, x, target, **opts)
        assert a.shape == x.shape and float(jnp.abs(a).max()) > 0, name
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5, err_msg=name)
    assert not np.allclose(attribute("patternnet", linen, x, target, patterns=p_linen),
                           attribute("grad", linen, x, target), atol=1e-4)


def test_the_pattern_conv_backward_is_the_transposed_pattern_convolution():
    """PatternNet of a one-conv model: the transpose of the conv with the pattern kernel, seeded by y."""
    class OneConv(nn.Module):
        @nn.compact
        def __call__(self, x):
            return jnp.mean(nn.relu(nn.Conv(2, (3, 3), strides=2)(x)), axis=(1, 2))

    clf = from_linen(OneConv(), OneConv().init(jax.random.PRNGKey(0), jnp.zeros((1, *SHAPE))), input_shape=SHAPE)
    xs = jax.random.normal(jax.random.PRNGKey(1), (40, *SHAPE))
    (pattern,) = fit_patterns(clf, xs)
    kernel, bias = clf.params["Conv_0"]["kernel"], clf.params["Conv_0"]["bias"]
    x = xs[0]
    conv = lambda k, z: jax.lax.conv_general_dilated(z[None], k, (2, 2), "SAME",
                                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))[0]
    out = conv(kernel, x) + bias
    y = jnp.mean(jax.nn.relu(out), axis=(0, 1))[1]
    seed = jnp.zeros_like(out).at[..., 1].set((out[..., 1] > 0) / (out.shape[0] * out.shape[1]))
    expected = y * jax.vjp(lambda z: conv(pattern, z), x)[1](seed)[0]
    np.testing.assert_allclose(attribute("patternnet", clf, x[None], np.array([1]), patterns=(pattern,))[0],
                               expected, rtol=1e-4, atol=1e-6)


def test_what_the_pattern_methods_cannot_take_is_refused_in_one_line():
    linen, _ = _twins()
    x, target = jax.random.normal(jax.random.PRNGKey(0), (2, *SHAPE)), np.array([0, 1])
    fn = from_apply_fn(lambda p, z: linen.logits(z), linen.params, input_shape=SHAPE)
    cases = [(lambda: fit_patterns(fn, x), "plain-function model"),
             (lambda: attribute("patternnet", fn, x, target, patterns=(jnp.zeros(1),)), "plain-function model"),
             (lambda: attribute("pattern_attribution", linen, x, target), "needs patterns fitted"),
             (lambda: attribute("patternnet", linen, x, target, patterns=fit_patterns(linen, x)[:2]), "do not fit"),
             (lambda: fit_patterns(linen, x, estimator="relu"), "unknown pattern estimator")]

    class PreNorm(nn.Module):  # a BatchNorm before any Dense / Conv
        @nn.compact
        def __call__(self, z):
            return nn.Dense(3)(nn.BatchNorm(use_running_average=True)(z).reshape((z.shape[0], -1)))

    pre = from_linen(PreNorm(), PreNorm().init(jax.random.PRNGKey(0), jnp.zeros((1, *SHAPE))), input_shape=SHAPE)
    cases.append((lambda: fit_patterns(pre, x), "does not directly follow"))
    for call, match in cases:
        with pytest.raises(UserError, match=match) as err:
            call()
        assert "\n" not in str(err.value), match
