"""repair_jax.explain attributions against axioms, closed forms and layer-by-layer references."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from repair_jax.errors import UserError
from repair_jax.explain import (
    ATTRIBUTIONS, attribute, conv_layers, deconvnet, eval_apply_fn, expected_gradients, fit_patterns, gradcam,
    gradcam_pp, gradient, guided_backprop, input_x_gradient, integrated_gradients, lrp_alpha_beta, lrp_epsilon,
    noise_tunnel, quadrature, smoothgrad, target_logit, vargrad,
)

SHAPE = (4, 4, 2)


class Linear(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(x.reshape((x.shape[0], -1)))


class TanhMLP(nn.Module):
    """A smooth network without ReLU."""

    @nn.compact
    def __call__(self, x):
        h = jnp.tanh(nn.Dense(6)(x.reshape((x.shape[0], -1))))
        return nn.Dense(3)(h)


class ReluMLP(nn.Module):
    hidden: tuple = (5,)
    bias: bool = True

    @nn.compact
    def __call__(self, x):
        h = x.reshape((x.shape[0], -1))
        for w in self.hidden:
            h = nn.relu(nn.Dense(w, use_bias=self.bias)(h))
        return nn.Dense(3, use_bias=self.bias)(h)


class ReluConvNet(nn.Module):
    """Conv-ReLU-maxpool-Conv-ReLU-mean-Dense, no biases (LRP conservation is exact)."""

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(3, (3, 3), use_bias=False)(x))
        h = nn.max_pool(h, (2, 2), (2, 2))
        h = nn.relu(nn.Conv(4, (2, 2), use_bias=False)(h))
        return nn.Dense(3, use_bias=False)(jnp.mean(h, axis=(1, 2)))


class CamNet(nn.Module):
    """1x1 convolution, global average pooling, dense: GradCAM equals CAM in closed form."""

    @nn.compact
    def __call__(self, x):
        a = nn.Conv(3, (1, 1), name="features")(x)
        return nn.Dense(2, name="head")(jnp.mean(a, axis=(1, 2)))


def _build(module, seed=0, shape=SHAPE):
    params = module.init(jax.random.PRNGKey(seed), jnp.zeros((1, *shape)))["params"]
    return (lambda p, x: module.apply({"params": p}, x)), params


def _run(fn, f, p, x, t, **opts):
    """``fn(f, p, x, t, **opts)`` compiled once (array options traced), not op by op."""
    arrays = {k: v for k, v in opts.items() if hasattr(v, "shape")}
    static = {k: v for k, v in opts.items() if k not in arrays}
    return jax.jit(lambda p, x, arrays: fn(f, p, x, t, **static, **arrays))(p, x, arrays)


def _x(seed=1, shape=SHAPE, low=0.0):
    return jax.random.uniform(jax.random.PRNGKey(seed), shape, minval=low, maxval=1.0)


# ----------------------------------------------------------------------------- gradient family

def test_quadrature_rules_integrate_polynomials():
    for rule in ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gauss_legendre"):
        a, w = quadrature(rule, 8)
        assert np.isclose(w.sum(), 1.0) and a.min() >= 0 and a.max() <= 1
    a, w = quadrature("gauss_legendre", 4)  # exact up to degree 7
    assert np.isclose(np.sum(w * a ** 7), 1 / 8)
    a, w = quadrature("riemann_middle", 4)
    assert not np.isclose(np.sum(w * a ** 2), 1 / 3)
    with pytest.raises(UserError, match="integration rule"):
        quadrature("simpson", 8)
    with pytest.raises(UserError, match="steps"):
        quadrature("riemann_trapezoid", 1)


def test_integrated_gradients_completeness_error_shrinks_with_steps():
    f, p = _build(TanhMLP())
    x, base = _x(), _x(seed=2) * 0.5
    logits = f(p, jnp.stack([x, base]))
    gap = logits[0, 1] - logits[1, 1]
    errs = {}
    for rule, all_steps in (("riemann_middle", (2, 8, 32)), ("riemann_left", (32,)), ("gauss_legendre", (8,))):
        for steps in all_steps:
            ig = _run(integrated_gradients, f, p, x, 1, baseline=base, steps=steps, rule=rule)
            assert ig.shape == x.shape
            errs[rule, steps] = abs(float(jnp.sum(ig) - gap))
    assert errs["riemann_middle", 2] > errs["riemann_middle", 8] > errs["riemann_middle", 32]
    assert errs["riemann_left", 32] > errs["riemann_middle", 32]  # first order vs second order
    assert errs["riemann_middle", 32] < errs["riemann_middle", 2] / 50  # second order
    assert errs["gauss_legendre", 8] < 1e-4


def test_input_x_gradient_equals_ig_on_a_linear_model():
    f, p = _build(Linear())
    x = _x()
    ixg = _run(input_x_gradient, f, p, x, 2)
    for rule in ("riemann_left", "gauss_legendre"):
        np.testing.assert_allclose(_run(integrated_gradients, f, p, x, 2, steps=3, rule=rule), ixg, atol=1e-6)
    kernel = np.asarray(p["Dense_0"]["kernel"])[:, 2].reshape(SHAPE)
    np.testing.assert_allclose(ixg, np.asarray(x) * kernel, atol=1e-6)


def test_expected_gradients_on_a_linear_model_is_x_minus_reference_times_weights():
    f, p = _build(Linear())
    x, ref = _x(), _x(seed=3)
    eg = _run(expected_gradients, f, p, x, 0, references=ref[None], samples=5, key=jax.random.PRNGKey(4))
    kernel = np.asarray(p["Dense_0"]["kernel"])[:, 0].reshape(SHAPE)
    np.testing.assert_allclose(eg, (np.asarray(x) - np.asarray(ref)) * kernel, atol=1e-6)


def test_smoothgrad_with_zero_noise_is_the_gradient_and_vargrad_zero():
    f, p = _build(ReluMLP())
    x = _x()
    g = _run(gradient, f, p, x, 1)
    np.testing.assert_allclose(_run(smoothgrad, f, p, x, 1, samples=4, stdev=0.0), g, atol=1e-6)
    np.testing.assert_allclose(_run(vargrad, f, p, x, 1, samples=4, stdev=0.0), 0.0, atol=1e-10)
    noisy = _run(smoothgrad, f, p, x, 1, samples=4, stdev=0.3, key=jax.random.PRNGKey(1))
    assert not np.allclose(noisy, g)
    # the wrapper composes with any method: mean of IG over noisy copies
    sg_ig = noise_tunnel(integrated_gradients, "smoothgrad")
    np.testing.assert_allclose(_run(sg_ig, f, p, x, 1, samples=3, stdev=0.0, steps=4),
                               _run(integrated_gradients, f, p, x, 1, steps=4), atol=1e-6)
    with pytest.raises(UserError, match="noise tunnel"):
        noise_tunnel(gradient, "median")


# ----------------------------------------------------------------------------- modified backprop

def test_guided_backprop_and_deconvnet_equal_gradient_without_relu():
    f, p = _build(TanhMLP())
    x = _x()
    g = _run(gradient, f, p, x, 0)
    np.testing.assert_allclose(_run(guided_backprop, f, p, x, 0), g, atol=1e-6)
    np.testing.assert_allclose(_run(deconvnet, f, p, x, 0), g, atol=1e-6)


def test_guided_backprop_and_deconvnet_closed_form_on_one_hidden_layer():
    f, p = _build(ReluMLP(bias=True))
    x = _x()
    w1, b1 = np.asarray(p["Dense_0"]["kernel"]), np.asarray(p["Dense_0"]["bias"])
    w2 = np.asarray(p["Dense_1"]["kernel"])[:, 2]
    s = np.asarray(x).reshape(-1) @ w1 + b1
    g_top = w2  # gradient arriving at the ReLU outputs
    gbp = w1 @ (g_top * (s > 0) * (g_top > 0))
    dec = w1 @ (g_top * (g_top > 0))
    plain = w1 @ (g_top * (s > 0))
    np.testing.assert_allclose(_run(guided_backprop, f, p, x, 2).reshape(-1), gbp, atol=1e-5)
    np.testing.assert_allclose(_run(deconvnet, f, p, x, 2).reshape(-1), dec, atol=1e-5)
    np.testing.assert_allclose(_run(gradient, f, p, x, 2).reshape(-1), plain, atol=1e-5)  # the swap is undone
    assert nn.relu is jax.nn.relu


def _lrp_reference(params, x, target, rule):
    """Layer-by-layer LRP of a ReLU MLP in numpy (Bach et al. 2015; Montavon et al. 2019)."""
    layers = [(np.asarray(params[k]["kernel"], np.float64), np.asarray(params[k]["bias"], np.float64))
              for k in sorted(params)]
    acts, a = [], np.asarray(x, np.float64).reshape(-1)
    for i, (w, b) in enumerate(layers):
        acts.append(a)
        z = a @ w + b
        a = np.maximum(z, 0) if i < len(layers) - 1 else z
    relevance = np.zeros_like(a)
    relevance[target] = a[target]
    for (w, b), a in zip(reversed(layers), reversed(acts)):
        contrib = a[:, None] * w  # (in, out)
        if rule[0] == "eps":
            z = contrib.sum(0) + b
            relevance = (contrib * (relevance / (z + rule[1] * np.where(z >= 0, 1, -1)))).sum(1)
        else:
            alpha, beta = rule[1], rule[2]
            pos, neg = np.maximum(contrib, 0), np.minimum(contrib, 0)
            zp, zn = pos.sum(0), neg.sum(0)
            sp = np.divide(relevance, zp, out=np.zeros_like(zp), where=zp != 0)
            sn = np.divide(relevance, zn, out=np.zeros_like(zn), where=zn != 0)
            relevance = alpha * (pos * sp).sum(1) - beta * (neg * sn).sum(1)
    return relevance.reshape(np.shape(x))


def test_lrp_epsilon_and_alpha_beta_match_a_layer_by_layer_reference():
    f, p = _build(ReluMLP(hidden=(7, 5)))
    x = _x(low=-1.0)  # negative inputs exercise the a < 0 branch of alpha-beta
    for eps in (1e-6, 0.5):
        np.testing.assert_allclose(_run(lrp_epsilon, f, p, x, 1, epsilon=eps),
                                   _lrp_reference(p, x, 1, ("eps", eps)), rtol=1e-4, atol=1e-6)
    for alpha, beta in ((1.0, 0.0), (2.0, 1.0)):
        np.testing.assert_allclose(_run(lrp_alpha_beta, f, p, x, 1, alpha=alpha, beta=beta),
                                   _lrp_reference(p, x, 1, ("ab", alpha, beta)), rtol=1e-4, atol=1e-6)
    with pytest.raises(UserError, match="alpha - beta"):
        _run(lrp_alpha_beta, f, p, x, 1, alpha=1.0, beta=1.0)


def test_lrp_epsilon_conserves_relevance_on_a_bias_free_conv_net():
    f, p = _build(ReluConvNet(), shape=(6, 6, 1))
    x = _x(shape=(6, 6, 1))
    for t in (1,):
        logit = float(_run(target_logit, f, p, x, t))
        r = _run(lrp_epsilon, f, p, x, t, epsilon=1e-9)
        assert r.shape == x.shape
        np.testing.assert_allclose(float(jnp.sum(r)), logit, rtol=1e-4, atol=1e-6)
        # LRP-0 on a bias-free ReLU net is Input x Gradient (Kindermans et al. 2016, Adebayo 2022, Sec. 3.2)
        np.testing.assert_allclose(r, _run(input_x_gradient, f, p, x, t), atol=1e-5)
        big = _run(lrp_epsilon, f, p, x, t, epsilon=10.0)  # epsilon absorbs relevance
        assert abs(float(jnp.sum(big))) < abs(logit)


# ----------------------------------------------------------------------------- class activation maps

def test_gradcam_and_gradcam_pp_closed_form_on_a_gap_network():
    f, p = _build(CamNet())
    x = _x()
    kc, bc = np.asarray(p["features"]["kernel"]).reshape(2, 3), np.asarray(p["features"]["bias"])
    w = np.asarray(p["head"]["kernel"])[:, 1]  # (3,)
    a = np.asarray(x) @ kc + bc  # (4, 4, 3) feature maps
    g = np.broadcast_to(w / 16.0, a.shape)  # dY/dA is constant over positions
    cam = np.maximum(a @ (w / 16.0), 0)
    got = _run(gradcam, f, p, x, 1)
    np.testing.assert_allclose(got[..., 0], cam, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[..., 1], cam, rtol=1e-5, atol=1e-6)
    alpha = g ** 2 / (2 * g ** 2 + a.sum((0, 1)) * g ** 3)
    weights = (alpha * np.maximum(g, 0)).sum((0, 1))
    np.testing.assert_allclose(_run(gradcam_pp, f, p, x, 1)[..., 0], np.maximum(a @ weights, 0), rtol=1e-4, atol=1e-6)


def test_gradcam_layers_and_errors():
    f, p = _build(ReluConvNet(), shape=(6, 6, 1))
    x = _x(shape=(6, 6, 1))
    assert conv_layers(f, p, (6, 6, 1)) == ["Conv_0", "Conv_1"]
    default, first = _run(gradcam, f, p, x, 0), _run(gradcam, f, p, x, 0, layer="Conv_0")
    np.testing.assert_allclose(default, _run(gradcam, f, p, x, 0, layer="Conv_1"))
    assert default.shape == first.shape == x.shape
    with pytest.raises(UserError, match="no layer 'Conv_9'.*Conv_0, Conv_1"):
        _run(gradcam, f, p, x, 0, layer="Conv_9")
    with pytest.raises(UserError, match="not a feature map"):
        attribute("gradcam", f, p, x[None], layer="Dense_0")
    fm, pm = _build(ReluMLP())
    with pytest.raises(UserError, match="no convolutional layer"):
        attribute("gradcam_pp", fm, pm, _x()[None])


# ----------------------------------------------------------------------------- batching and models

def test_attribute_batches_every_method_like_single_calls():
    f, p = _build(ReluConvNet(), shape=(6, 6, 1))
    xs = jax.random.uniform(jax.random.PRNGKey(5), (3, 6, 6, 1))
    targets = np.array([0, 2, 1])
    options = {"ig": {"steps": 4}, "expected_grad": {"references": np.asarray(xs), "samples": 4},
               "smoothgrad": {"samples": 3}, "smoothgrad_sq": {"samples": 3}, "smoothgrad_mean_sq": {"samples": 3},
               "vargrad": {"samples": 3}}
    options["patternnet"] = options["pattern_attribution"] = {"patterns": fit_patterns(f, p, xs)}
    for name, fn in ATTRIBUTIONS.items():  # every jittable method traces under vmap with x's shape out
        if not getattr(fn, "jittable", True):  # LIME / KernelSHAP: host code (tests/test_explain_surrogate.py)
            continue
        opts = options.get(name, {})
        one = lambda x, t: fn(f, p, x, t, **opts)
        assert jax.eval_shape(jax.vmap(one), xs, jnp.asarray(targets)).shape == xs.shape, name
    for name in ("lrp_alpha_beta", "gradcam"):
        np.testing.assert_allclose(attribute(name, f, p, xs, targets)[1], _run(ATTRIBUTIONS[name], f, p, xs[1], 2),
                                   rtol=1e-4, atol=1e-6, err_msg=name)
    once = attribute("smoothgrad", f, p, xs, targets, samples=2)  # keyed: fold_in(key, example)
    np.testing.assert_array_equal(once, attribute("smoothgrad", f, p, xs, targets, samples=2))
    np.testing.assert_allclose(once[1], _run(smoothgrad, f, p, xs[1], 2, samples=2,
                                                   key=jax.random.fold_in(jax.random.PRNGKey(0), 1)), atol=1e-6)
    predicted = attribute("grad", f, p, xs)
    np.testing.assert_allclose(predicted[0], _run(gradient, f, p, xs[0], int(jnp.argmax(f(p, xs[:1])[0]))), atol=1e-6)
    with pytest.raises(UserError, match="unknown attribution method 'shap'"):
        attribute("shap", f, p, xs)
    with pytest.raises(UserError, match="bad options for integrated_gradients.*stepz"):
        attribute("ig", f, p, xs, stepz=3)
    with pytest.raises(UserError, match="one class per example"):
        attribute("grad", f, p, xs, np.array([0, 1]))


def test_eval_apply_fn_uses_batchnorm_running_statistics():
    from repair_jax.models import create_model, init_variables
    from repair_jax.train import create_train_state
    import optax

    model = create_model("cnn", 3, width=2, dense=4)
    variables = init_variables(model, jax.random.PRNGKey(0), (8, 8, 1))
    stats = jax.tree_util.tree_map(lambda v: v + 0.3, variables["batch_stats"])
    state = create_train_state(model, {**variables, "batch_stats": stats}, optax.identity())
    f, p = eval_apply_fn(state)
    x = _x(shape=(8, 8, 1))
    logit = lambda z: model.apply({"params": p, "batch_stats": stats}, z[None], train=False)[0][0, 1]
    by_hand = jax.jit(jax.grad(logit))(x)
    np.testing.assert_allclose(attribute("grad", f, p, x[None], np.array([1]))[0], by_hand, atol=1e-6)
    with pytest.raises(UserError, match="needs its variables"):
        eval_apply_fn(model)


def test_smoothgrad_sq_is_the_mean_of_squares_and_mean_sq_the_square_of_the_mean():
    """Hooker et al. 2019 / Captum's NoiseTunnel ``smoothgrad_sq``: mean_i g(x + n_i)^2; the thesis's
    SGradSQ (Adebayo 2022, Sec. 3.2): (mean_i g(x + n_i))^2, kept as ``smoothgrad_mean_sq``."""
    from repair_jax.explain import smoothgrad_mean_sq, smoothgrad_sq

    f, p = _build(ReluMLP())
    x, key, samples, stdev = _x(), jax.random.PRNGKey(3), 5, 0.4
    noise = stdev * jax.random.normal(key, (samples, *x.shape), x.dtype)  # the draws noise_tunnel makes
    grads = np.stack([np.asarray(_run(gradient, f, p, x + n, 1)) for n in noise])
    opts = dict(samples=samples, stdev=stdev, key=key)
    np.testing.assert_allclose(_run(smoothgrad_sq, f, p, x, 1, **opts), np.mean(grads ** 2, 0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(_run(smoothgrad_mean_sq, f, p, x, 1, **opts), np.mean(grads, 0) ** 2,
                               rtol=1e-5, atol=1e-7)
    assert not np.allclose(np.mean(grads ** 2, 0), np.mean(grads, 0) ** 2)
