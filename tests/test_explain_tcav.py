"""TCAV on a hand-built network that provably uses a constructed concept: a bright tag pasted in the
top-left corner of real digits ("tagged digits", a synthetic variant of the real data)."""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from repair_jax.errors import UserError
from repair_jax.explain import conceptual_sensitivity, layer_activations, tcav, tcav_score, tcav_significance


class TagNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(2, name="hidden")(x.reshape((x.shape[0], -1)))
        return nn.Dense(2, use_bias=False, name="head")(nn.relu(h))


def _tagnet():
    corner = np.zeros((8, 8, 1), np.float32)
    corner[:3, :3] = 1 / 9
    bottom = np.zeros((8, 8, 1), np.float32)
    bottom[4:] = 1 / 32
    params = {"hidden": {"kernel": jnp.asarray(np.stack([corner.ravel(), bottom.ravel()], 1)),
                         "bias": jnp.asarray([-0.3, 0.0])},
              "head": {"kernel": jnp.asarray([[3.0, 0.0], [0.0, 1.0]])}}
    return (lambda p, x: TagNet().apply({"params": p}, x)), params


def _tagged(x):
    x = np.array(x)
    x[:, :2, :2] = 1.0
    return x


def test_tcav_finds_the_concept_the_model_uses(digits):
    f, p = _tagnet()
    x = digits.train.x[:140]
    concept, class_x, randoms = _tagged(x[:20]), _tagged(x[20:40]), [x[40 + 20 * r:60 + 20 * r] for r in range(5)]
    acts = layer_activations(f, p, concept, "hidden")
    hidden = concept.reshape(20, -1) @ np.asarray(p["hidden"]["kernel"]) + np.asarray(p["hidden"]["bias"])
    np.testing.assert_allclose(acts, hidden, atol=1e-5)
    result = tcav(f, p, class_x, 0, "hidden", concept, randoms)
    # logit_0 = 3 relu(h_0): S(x) = 3 v_0 on the tagged inputs (h_0 > 0), and the CAV has v_0 > 0
    np.testing.assert_array_equal(result.scores, 1.0)
    assert result.significant and result.p_value < 0.05 and result.cav_accuracy > 0.9
    v = np.array([0.6, 0.8])
    np.testing.assert_allclose(conceptual_sensitivity(f, p, class_x, 0, "hidden", v), 3 * 0.6, rtol=1e-6)
    assert tcav_score([0.5, -1.0, 2.0, 0.0]) == 0.5
    with pytest.raises(UserError, match="no layer 'conv'"):
        layer_activations(f, p, concept, "conv")


def test_tcav_significance_two_sided_t_test_with_bonferroni():
    from scipy import stats

    a, b = np.array([0.9, 0.8, 0.95, 0.85]), np.array([0.5, 0.6, 0.4, 0.55])
    p, sig = tcav_significance(a, b, alpha=0.05, num_tests=1)
    assert p == pytest.approx(stats.ttest_ind(a, b).pvalue) and sig
    assert not tcav_significance(a, b, alpha=0.05, num_tests=int(0.05 / p) + 1)[1]  # Bonferroni
    assert tcav_significance(b, a)[0] == pytest.approx(p)  # two-sided
    with pytest.raises(UserError, match="at least 2"):
        tcav_significance(a[:1], b)
