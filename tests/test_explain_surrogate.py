"""LIME and KernelSHAP on segments (repair_jax/explain/surrogate.py) against exact Shapley values,
a linear model's coefficients and closed forms."""

import itertools
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from repair_jax.errors import UserError
from repair_jax.explain import (
    attribute, coalition_logits, kernel_shap, lime, lime_kernel, masked_inputs, patch_segments, segment_image,
)

SHAPE = (4, 4, 2)


def _linear(p, x):
    return x.reshape((x.shape[0], -1)) @ p["w"] + p["b"]


def _tanh_net(p, x):
    """A smooth nonlinear classifier (3 classes): its Shapley values are not its linear coefficients."""
    return jnp.tanh(x.reshape((x.shape[0], -1)) @ p["w1"]) @ p["w2"]


def _params(shape=SHAPE, seed=0):
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    d = math.prod(shape)
    return {"w": jax.random.normal(k[0], (d, 3)), "b": jax.random.normal(k[1], (3,)),
            "w1": jax.random.normal(k[2], (d, 6)), "w2": jax.random.normal(k[3], (6, 3))}


def _x(seed=1, shape=SHAPE):
    return np.asarray(jax.random.uniform(jax.random.PRNGKey(seed), shape))


def _per_segment(attribution, labels):
    """The (M,) segment values of a map in which every pixel holds its segment's value."""
    a = np.asarray(attribution)[..., 0]
    return np.array([a[labels == j][0] for j in range(labels.max() + 1)])


def _exact_shapley(f, p, x, base, labels, target):
    """Shapley values of v(S) = f_target(x on S, base elsewhere), all 2^M coalitions enumerated by hand."""
    m = labels.max() + 1
    coalitions = list(itertools.product((0, 1), repeat=m))
    images = np.stack([np.where(np.array(c)[labels][..., None] == 1, x, base) for c in coalitions])
    v = dict(zip(coalitions, np.asarray(f(p, jnp.asarray(images)), np.float64)[:, target]))
    phi = np.zeros(m)
    for c in coalitions:
        size = sum(c)
        for j in range(m):
            if not c[j]:
                with_j = c[:j] + (1,) + c[j + 1:]
                weight = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
                phi[j] += weight * (v[with_j] - v[c])
    return phi, v[coalitions[-1]] - v[coalitions[0]]


def test_segments_patches_slic_and_explicit_labels(digits):
    np.testing.assert_array_equal(patch_segments(4, 4, 4), [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
    for side, block in ((8, 2), (28, 7)):  # defaults: 16 patches of digits and Fashion-MNIST
        labels = segment_image(np.zeros((side, side, 1)))
        np.testing.assert_array_equal(labels, np.kron(np.arange(16).reshape(4, 4), np.ones((block, block), int)))
    digit = digits.test.x[3]
    tinted = np.concatenate([digit, 0.5 * digit, 1.0 - digit], axis=-1)  # an RGB variant of a real digit
    for image in (digit, tinted):
        labels = segment_image(image, "slic")
        assert labels.shape == (8, 8) and 4 <= labels.max() + 1 <= 20
        np.testing.assert_array_equal(np.unique(labels), np.arange(labels.max() + 1))
    np.testing.assert_array_equal(segment_image(digit, np.array([[7, 3]] * 4 + [[3, 7]] * 4).repeat(4, axis=1)),
                                  np.array([[1, 0]] * 4 + [[0, 1]] * 4).repeat(4, axis=1))
    masks = np.array([[1.0, 0.0, 0.0, 1.0]])
    x, base = _x(), _x(seed=2)
    out = np.asarray(masked_inputs(x, patch_segments(4, 4, 4), masks, base))[0]
    np.testing.assert_allclose(out[:2, :2], x[:2, :2])
    np.testing.assert_allclose(out[:2, 2:], base[:2, 2:])
    np.testing.assert_allclose(out[2:, 2:], x[2:, 2:])


def test_kernel_shap_equals_exact_shapley_values_and_is_efficient():
    p, x, base = _params(), _x(), 0.3 * _x(seed=2)
    labels = patch_segments(4, 4, 4)
    exact, gap = _exact_shapley(_tanh_net, p, x, base, labels, target=1)
    got = kernel_shap(_tanh_net, p, x, 1, n_segments=4, samples=64, baseline=base)  # >= 2^4 - 2: enumerated
    assert got.shape == x.shape
    np.testing.assert_allclose(_per_segment(got, labels), exact, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(exact.sum(), gap, rtol=1e-6)  # the reference itself is efficient
    # sampled (M = 16 > log2 samples): efficiency still holds exactly; same seed same numbers
    fine = patch_segments(4, 4, 16)
    sampled = [kernel_shap(_tanh_net, p, x, 1, samples=60, seed=s) for s in (0, 0, 1)]
    logits = np.asarray(_tanh_net(p, jnp.stack([jnp.asarray(x), jnp.zeros(SHAPE)])))[:, 1]
    np.testing.assert_allclose(_per_segment(sampled[0], fine).sum(), logits[0] - logits[1], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(sampled[0], sampled[1])
    assert not np.allclose(sampled[0], sampled[2])


def test_lime_and_kernel_shap_recover_a_linear_model_over_segments():
    """f(x) = w . x + b is linear in the segment indicators z with coefficients c_j = sum_{p in j} w_p (x_p - b_p):
    a weighted least-squares fit recovers them exactly whatever the kernel; so do the Shapley values."""
    p, x, base = _params(), _x(), 0.2 * _x(seed=3)
    labels = np.array([[0, 0, 1, 1], [0, 2, 2, 1], [3, 3, 2, 1], [3, 3, 4, 4]])
    w = np.asarray(p["w"])[:, 2].reshape(SHAPE)
    coef = np.array([np.sum((w * (x - base))[labels == j]) for j in range(5)])
    for distance in ("cosine", "l2"):
        got = lime(_linear, p, x, 2, segments=labels, samples=200, ridge=1e-9, distance=distance, baseline=base)
        np.testing.assert_allclose(_per_segment(got, labels), coef, rtol=1e-4, atol=1e-4)
    shap_values = kernel_shap(_linear, p, x, 2, segments=labels, samples=40, baseline=base)
    np.testing.assert_allclose(_per_segment(shap_values, labels), coef, rtol=1e-4, atol=1e-4)
    shrunk = _per_segment(lime(_linear, p, x, 2, segments=labels, samples=200, baseline=base), labels)
    assert np.linalg.norm(shrunk) < np.linalg.norm(coef)  # the default ridge penalty shrinks


def test_lime_kernel_closed_form_and_lime_seeds():
    masks = np.array([[1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_allclose(lime_kernel(masks, 0.5), [1.0, np.exp(-0.25 / 0.25), np.exp(-1 / 0.25)])
    np.testing.assert_allclose(lime_kernel(masks, 2.0, "l2"), [1.0, np.exp(-3 / 4), np.exp(-4 / 4)])
    p, x = _params(), _x()
    runs = [lime(_tanh_net, p, x, 0, samples=50, seed=s) for s in (5, 5, 6)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.allclose(runs[0], runs[2])


def test_attribute_runs_the_host_methods_per_example_rgb_and_slic(digits):
    digit = digits.test.x[:2]
    xs = np.concatenate([digit, 0.5 * digit, 1.0 - digit], axis=-1)  # RGB variants of real digits
    p = _params(shape=(8, 8, 3))
    targets = np.array([0, 2])
    maps = {}
    for name, fn in (("lime", lime), ("kernel_shap", kernel_shap)):
        maps[name] = attribute(name, _tanh_net, p, xs, targets, segments="slic", samples=40, seed=3)
        assert maps[name].shape == xs.shape
        np.testing.assert_allclose(maps[name][1], fn(_tanh_net, p, xs[1], 2, segments="slic", samples=40, seed=3),
                                   atol=1e-6)
    labels = segment_image(xs[0], "slic")
    logits = np.asarray(_tanh_net(p, jnp.stack([jnp.asarray(xs[0]), jnp.zeros((8, 8, 3))])))[:, 0]
    np.testing.assert_allclose(_per_segment(maps["kernel_shap"][0], labels).sum(), logits[0] - logits[1],
                               rtol=1e-4, atol=1e-5)
    gray = attribute("lime", _linear, _params(shape=(8, 8, 1)), digits.test.x[:1], samples=20)
    assert gray.shape == (1, 8, 8, 1)
    all_on = coalition_logits(_linear, p, xs[0], 1, labels, np.ones((3, labels.max() + 1)), np.zeros((8, 8, 3)))
    np.testing.assert_allclose(all_on, np.asarray(_linear(p, xs[:1]))[0, 1], rtol=1e-5)


@pytest.mark.parametrize("options, message", [
    ({"segments": "quickshift"}, "unknown segmentation 'quickshift'"),
    ({"n_segments": 5}, "n_segments = g \\* g"),
    ({"segments": np.zeros((3, 4), int)}, "integer labels of shape \\(4, 4\\)"),
    ({"samples": 0}, "samples must be an integer >= 1"),
    ({"seed": -1}, "seed must be an integer in \\[0, 2\\*\\*32\\)"),
    ({"seed": 0.5}, "seed must be an integer"),
    ({"baseline": np.zeros((3, 3, 2))}, "does not broadcast"),
    ({"distance": "manhattan"}, "unknown LIME distance"),
    ({"kernel_width": 0.0}, "kernel_width must be > 0"),
    ({"ridge": -1.0}, "ridge must be >= 0"),
    ({"n_segmentz": 4}, "bad options for lime"),
])
def test_bad_options_are_user_errors(options, message):
    with pytest.raises(UserError, match=message):
        attribute("lime", _linear, _params(), _x()[None], **{"samples": 10, **options})


def test_kernel_shap_without_shap_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "shap", None)  # `import shap` raises ImportError
    with pytest.raises(UserError, match=r"repair_jax\[explain\]"):
        kernel_shap(_linear, _params(), _x(), 0)
