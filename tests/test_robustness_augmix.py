"""AugMix (Pradhan et al. 2020, Sec. 3, Hendrycks et al. 2020): ops against PIL, the JS consistency loss against its
entropy form, and the objective inside a jitted step."""

import functools

import dm_pix

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image, ImageOps
from scipy.stats import entropy

from repair_jax.data import load_dataset
from repair_jax.errors import UserError
from repair_jax.models import create_model, init_variables
from repair_jax.objectives import softmax_cross_entropy
from repair_jax.robustness import augmix_batch, augmix_objective, jensen_shannon_consistency
import repair_jax.robustness.augmix as augmix_module
from repair_jax.train import create_train_state, make_train_step


def _uint8_image(seed=0, shape=(12, 10)):
    rng = np.random.default_rng(seed)
    return rng.integers(30, 200, shape).astype(np.uint8)


def _apply(op, img_u8, u=0.3):
    x = jnp.asarray(img_u8, jnp.float32)[..., None] / 255.0
    return np.asarray(jnp.round(op(x, u, 1.0)[..., 0] * 255)).astype(np.uint8)


def test_ops_match_pil():
    img = _uint8_image()
    pil = Image.fromarray(img)
    np.testing.assert_array_equal(_apply(augmix_module.equalize, img), np.asarray(ImageOps.equalize(pil)))
    auto = np.asarray(ImageOps.autocontrast(pil)).astype(int)
    assert np.abs(_apply(augmix_module.autocontrast, img).astype(int) - auto).max() <= 1
    # u = 0.3: posterize keeps 4 - int(1.2) = 3 bits; solarize threshold 256 - int(76.8) = 180
    np.testing.assert_array_equal(_apply(augmix_module.posterize, img), np.asarray(ImageOps.posterize(pil, 3)))
    np.testing.assert_array_equal(_apply(augmix_module.solarize, img), np.asarray(ImageOps.solarize(pil, 180)))


def test_geometric_ops():
    img = jnp.asarray(_uint8_image(1), jnp.float32)[..., None] / 255.0
    ops = augmix_module.AUGMIX_OPS
    # u = 0.3 on a 12 x 10 image: translate_x pulls from one column to the right, translate_y from 1.2 rows below
    out = np.asarray(ops["translate_x"](img, 0.3, 1.0))
    np.testing.assert_allclose(out[:, :-1], np.asarray(img)[:, 1:], atol=1e-6)
    want = np.asarray(dm_pix.rotate(img, np.deg2rad(9.0)))  # int(30 * 0.3) = 9 degrees
    np.testing.assert_allclose(ops["rotate"](img, 0.3, 1.0), want, atol=1e-5)
    np.testing.assert_allclose(ops["shear_x"](img, 0.0, 1.0), img, atol=1e-6)


def test_js_consistency_formula():
    rng = np.random.default_rng(0)
    logits = [jnp.asarray(rng.normal(size=(5, 4)), jnp.float32) for _ in range(3)]
    ps = [np.asarray(jax.nn.softmax(l)) for l in logits]
    # generalised JS divergence = H(mean p) - mean H(p_i)
    want = entropy(sum(ps).T / 3) - sum(entropy(p.T) for p in ps) / 3
    np.testing.assert_allclose(jensen_shannon_consistency(*logits), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jensen_shannon_consistency(logits[0], logits[0], logits[0]), 0.0, atol=1e-6)
    assert np.all(np.asarray(jensen_shannon_consistency(*logits)) > 0)


def test_augmix_images_are_convex_mixes_in_range():
    x = jnp.asarray(load_dataset("digits").train.x[:8])
    a = jax.jit(augmix_batch)(jax.random.PRNGKey(0), x)
    assert a.shape == x.shape and float(a.min()) >= -1e-6 and float(a.max()) <= 1 + 1e-6
    assert not np.allclose(a, x)
    np.testing.assert_array_equal(a, jax.jit(augmix_batch)(jax.random.PRNGKey(0), x))
    single = jax.jit(functools.partial(augmix_batch, ops=("autocontrast",), width=1, depth=1))(jax.random.PRNGKey(2), x)
    auto = jax.vmap(lambda im: augmix_module.autocontrast(im, 0.1, 1.0))(x)
    # one chain of one op: x_augmix = m x + (1 - m) op(x) with one m per image in [0, 1]
    d, t = np.asarray(auto - x).reshape(8, -1), np.asarray(single - x).reshape(8, -1)
    for di, ti in zip(d, t):
        frac = ti @ di / max(di @ di, 1e-12)
        assert -1e-5 <= frac <= 1 + 1e-5
        np.testing.assert_allclose(ti, frac * di, atol=1e-5)


def test_augmix_objective_step():
    ds = load_dataset("digits")
    model = create_model("mlp", 10, hidden=(16,))
    variables = init_variables(model, jax.random.PRNGKey(0), ds.input_shape)
    state = create_train_state(model, variables, optax.adam(1e-3))
    objective = augmix_objective(seed=0)
    batch = {"x": jnp.asarray(ds.train.x[:16]), "y": jnp.asarray(ds.train.y[:16])}
    # one compiled step (the AugMix graph compiles slowly on CPU); its metrics are the objective's
    new_state, m = make_train_step(objective)(state, batch)
    assert int(new_state.step) == 1 and np.isfinite(float(m["loss"])) and float(m["js"]) > 0
    np.testing.assert_allclose(m["loss"], m["ce"] + 12.0 * m["js"], rtol=1e-6)
    blank = augmix_objective(seed=0, ops=("autocontrast",), width=1,  # the DeepAugment hook
                             pre_augment=lambda key, x: jnp.zeros_like(x))
    _, (_, m_blank) = jax.jit(blank)(state.params, state, batch)
    logits0 = state.apply_fn(state.params, state.batch_stats, jnp.zeros_like(batch["x"]))[0]
    np.testing.assert_allclose(m_blank["ce"], jnp.mean(softmax_cross_entropy(logits0, batch["y"])), rtol=1e-5)
    with pytest.raises(UserError):
        augmix_objective(ops=("rotate", "blur"))
    with pytest.raises(UserError):
        augmix_objective(severity=0)
