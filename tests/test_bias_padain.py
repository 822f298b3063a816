"""Permuted AdaIN (Sharma n.d., Que-2) and the bias-report backbones (ShuffleNetV2, PyramidNet)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from repair_jax.padain import PermutedAdaIN, instance_stats, padain_draw, permuted_adain
from repair_jax.errors import UserError
from repair_jax.models import create_model, init_variables


def _hand_padain(x, perm, eps=1e-5):
    """Sharma n.d., Que-2 written out with numpy loops over examples and channels (NHWC)."""
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        for c in range(x.shape[-1]):
            a, b = x[i, :, :, c], x[perm[i], :, :, c]
            mu_a, mu_b = a.mean(), b.mean()
            sd_a = np.sqrt(((a - mu_a) ** 2).mean() + eps)
            sd_b = np.sqrt(((b - mu_b) ** 2).mean() + eps)
            out[i, :, :, c] = sd_b * (a - mu_a) / sd_a + mu_b
    return out


def test_instance_stats_and_formula(rng):
    x = rng.normal(size=(5, 4, 3, 2)).astype(np.float32) * rng.uniform(0.5, 3, (5, 1, 1, 2))
    mu, sd = instance_stats(jnp.asarray(x))
    np.testing.assert_allclose(mu[:, 0, 0], x.mean((1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sd[:, 0, 0], np.sqrt(x.var((1, 2)) + 1e-5), rtol=1e-5)
    perm = np.array([3, 0, 4, 1, 2])
    np.testing.assert_allclose(permuted_adain(jnp.asarray(x), perm), _hand_padain(x, perm), rtol=1e-4, atol=1e-5)
    # the identity permutation leaves x unchanged (up to eps)
    np.testing.assert_allclose(permuted_adain(jnp.asarray(x), np.arange(5)), x, rtol=1e-3, atol=1e-4)


def test_layer_p0_is_identity_and_eval_is_identity(rng):
    x = jnp.asarray(rng.normal(size=(4, 3, 3, 2)), jnp.float32)
    layer0, layer1 = PermutedAdaIN(p=0.0), PermutedAdaIN(p=1.0)
    v = layer0.init(jax.random.PRNGKey(0), x, train=False)
    out, _ = layer0.apply(v, x, train=True, mutable=["batch_stats"])
    np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(layer1.apply(v, x, train=False), x)


def test_layer_matches_hand_formula_with_its_permutation(rng):
    x = rng.normal(size=(6, 4, 4, 3)).astype(np.float32) * 2 + 1
    layer = PermutedAdaIN(p=1.0)
    v = layer.init(jax.random.PRNGKey(0), jnp.asarray(x), train=False)
    for count in range(2):
        out, mutated = layer.apply(v, jnp.asarray(x), train=True, mutable=["batch_stats"])
        _, perm = padain_draw(0, (), count, 6)
        np.testing.assert_allclose(out, _hand_padain(x, np.asarray(perm)), rtol=1e-4, atol=1e-5)
        assert float(mutated["batch_stats"]["padain_calls"]) == count + 1
        v = {**v, **mutated}


def test_layer_swaps_with_probability_p(rng):
    x = jnp.asarray(rng.normal(size=(4, 3, 3, 2)), jnp.float32)
    layer = PermutedAdaIN(p=0.5, seed=3)
    v = layer.init(jax.random.PRNGKey(0), x, train=False)
    swapped = []
    for count in range(12):
        out, v = layer.apply(v, x, train=True, mutable=["batch_stats"])
        u, perm = padain_draw(3, (), count, 4)
        want = permuted_adain(x, perm) if u < 0.5 else x
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
        swapped.append(bool(u < 0.5))
    assert 0 < sum(swapped) < 12  # both outcomes occur in 12 draws at p = 0.5 (seed fixed)


@pytest.mark.parametrize("p", [-0.1, 1.5, "0.5"])
def test_bad_p_is_user_error(p):
    with pytest.raises(UserError, match=r"PAdaIN probability p must be in \[0, 1\]"):
        PermutedAdaIN(p=p)
    model = create_model("cnn", 3, width=4, dense=8, padain_p=p)
    with pytest.raises(UserError, match="PAdaIN"):
        jax.eval_shape(lambda k: init_variables(model, k, (8, 8, 1)), jax.random.PRNGKey(0))


def test_cnn_option_p0_unchanged_and_p1_changes_training_forward(rng):
    x = jnp.asarray(rng.normal(size=(4, 8, 8, 1)), jnp.float32)
    plain = create_model("cnn", 3, width=4, dense=8)
    padain = create_model("cnn", 3, width=4, dense=8, padain_p=1.0)
    vp = jax.jit(lambda k: init_variables(padain, k, (8, 8, 1)))(jax.random.PRNGKey(0))
    # the plain model's variables are the PAdaIN model's without the layers' call counters
    v = {"params": vp["params"],
         "batch_stats": {k: b for k, b in vp["batch_stats"].items() if not k.startswith("PermutedAdaIN")}}
    shapes = lambda m: jax.eval_shape(lambda k: init_variables(m, k, (8, 8, 1)), jax.random.PRNGKey(0))
    assert jax.tree_util.tree_structure(shapes(plain)) == jax.tree_util.tree_structure(v)
    p0 = create_model("cnn", 3, width=4, dense=8, padain_p=0.0)
    assert jax.tree_util.tree_structure(shapes(p0)) == jax.tree_util.tree_structure(v)  # no variable at p = 0
    np.testing.assert_allclose(jax.jit(padain.apply)(vp, x)[0], jax.jit(plain.apply)(v, x)[0], rtol=1e-5)
    train = lambda m, var: jax.jit(lambda var, x: m.apply(var, x, train=True, mutable=["batch_stats"]))(var, x)
    (out_padain, _), mutated = train(padain, vp)
    (out_plain, _), _ = train(plain, v)
    assert not np.allclose(out_padain, out_plain)
    assert all(float(c["padain_calls"]) == 1 for k, c in mutated["batch_stats"].items() if k.startswith("Perm"))


@pytest.mark.parametrize("name,kw,shape", [
    ("shufflenet_v2", dict(stage_channels=(8, 16, 32), stage_repeats=(1, 2, 1), stem=8, last=32), (28, 28, 1)),
    ("shufflenet_v2", dict(stage_channels=(8, 16, 32), stage_repeats=(1, 1, 1), stem=8, last=16, padain_p=0.5),
     (4, 4, 3)),
    ("pyramidnet", dict(depth=8, alpha=12), (28, 28, 1)),
    ("pyramidnet", dict(depth=14, alpha=6, padain_p=0.5), (8, 8, 3)),
])
def test_backbone_forward_shapes(name, kw, shape, rng):
    model = create_model(name, 5, **kw)
    x = jax.ShapeDtypeStruct((3, *shape), jnp.float32)
    v = jax.eval_shape(lambda k: init_variables(model, k, shape), jax.random.PRNGKey(0))
    (logits, feats), _ = jax.eval_shape(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]), v, x)
    assert logits.shape == (3, 5) and feats.ndim == 2 and feats.shape[0] == 3
    if name == "pyramidnet":  # the width grows by alpha in total: 16 + alpha channels at the end
        assert feats.shape[1] == 16 + kw["alpha"]
    else:
        assert feats.shape[1] == kw["last"]


def test_bad_backbone_options():
    init = lambda m: jax.eval_shape(lambda k: init_variables(m, k, (8, 8, 1)), jax.random.PRNGKey(0))
    with pytest.raises(UserError, match="6n \\+ 2"):
        init(create_model("pyramidnet", 3, depth=9))
    with pytest.raises(UserError, match="even"):
        init(create_model("shufflenet_v2", 3, stage_channels=(7, 16, 32)))
