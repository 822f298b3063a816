"""Multi-task heads (Sharma n.d., Que-2): per-head losses, the weighted sum, the ensemble, per-head accuracy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_softmax, rel_entr, softmax

from repair_jax.bias.mtl import (
    check_heads, head_accuracies, kl_to_one_hot, l2_to_one_hot, mtl_loss, mtl_objective, multi_head_model,
    predict_heads,
)
from repair_jax.errors import UserError


def test_mtl_loss_is_weighted_sum_of_numpy_terms(rng):
    z = rng.normal(size=(20, 3, 4)).astype(np.float32)
    y = rng.integers(0, 4, 20)
    onehot = np.eye(4)[y]
    ce = -log_softmax(z[:, 0], axis=1)[np.arange(20), y].mean()
    kl = rel_entr(onehot, softmax(z[:, 1], axis=1)).sum(1).mean()
    l2 = ((softmax(z[:, 2], axis=1) - onehot) ** 2).sum(1).mean()
    alphas = (1.0, 0.3, 2.5)
    total, terms = mtl_loss(jnp.asarray(z), jnp.asarray(y), ("ce", "kl", "l2"), alphas)
    np.testing.assert_allclose(terms, [ce, kl, l2], rtol=1e-5)
    np.testing.assert_allclose(total, 1.0 * ce + 0.3 * kl + 2.5 * l2, rtol=1e-5)
    np.testing.assert_allclose(kl_to_one_hot(z[:, 1], y), -log_softmax(z[:, 1], axis=1)[np.arange(20), y],
                               rtol=1e-5)  # KL to a one-hot target is the cross-entropy
    np.testing.assert_allclose(l2_to_one_hot(z[:, 2], y), ((softmax(z[:, 2], 1) - onehot) ** 2).sum(1), rtol=1e-5)


@pytest.mark.parametrize("losses,alphas,widths,match", [
    (("ce", "kl"), (1.0, -0.5), None, "alpha must be >= 0"),
    (("ce", "hinge"), (1.0, 1.0), None, "unknown head loss"),
    (("ce", "kl"), (1.0,), None, "one weight alpha per head"),
    (("ce", "kl"), (1.0, 1.0), (4,), "one width per head"),
    (("ce",), (1.0,), (-3,), "width must be an integer >= 0"),
])
def test_bad_heads_are_user_errors(losses, alphas, widths, match):
    with pytest.raises(UserError, match=match):
        check_heads(losses, alphas, widths)
    if widths is None:
        with pytest.raises(UserError, match=match):
            mtl_objective(losses, alphas)


def test_multi_head_ensemble_training_and_accuracies(digits):
    from repair_jax.models import init_variables
    from repair_jax.train import TrainConfig, create_train_state, fit, make_optimizer, predict

    model = multi_head_model("mlp", 10, head_widths=(0, 16, 8), hidden=(32,))
    variables = init_variables(model, jax.random.PRNGKey(0), digits.input_shape)
    cfg = TrainConfig(model="mlp", epochs=3, batch_size=64, lr=1e-2, seed=0)
    state = create_train_state(model, variables, make_optimizer(cfg, 3 * 20))
    x, y = digits.test.x, digits.test.y
    before = predict_heads(state, {"x": x})
    assert before.shape == (len(y), 3, 10)
    state, history = fit(state, digits, cfg, objective=mtl_objective(("ce", "kl", "l2"), (1.0, 1.0, 1.0)),
                         progress=False)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    z = predict_heads(state, {"x": x}, batch_size=100)  # padded last chunk
    ensemble, _ = predict(state, x)
    np.testing.assert_allclose(ensemble, z.mean(axis=1), rtol=1e-5, atol=1e-5)  # ensemble = mean of logits
    accs = head_accuracies(z, y)
    assert list(accs) == ["head1", "head2", "head3", "ensemble"]
    for h in range(3):
        assert accs[f"head{h + 1}"] == np.mean(z[:, h].argmax(1) == y)
    assert accs["ensemble"] == np.mean(ensemble.argmax(1) == y)
    assert accs["ensemble"] > 0.5  # 3 epochs on digits learn something (chance: 0.1)


def test_multi_head_is_a_named_model_that_reloads_from_a_run(tmp_path, digits):
    from repair_jax.bias import MultiHead
    from repair_jax.models import create_model, init_variables
    from repair_jax.runs import load_run, write_run

    kw = {"backbone": "mlp", "head_widths": [0, 8], "hidden": [16]}  # as run.json stores them
    model = create_model("multi_head", 10, **kw)
    assert isinstance(model, MultiHead) and model.head_widths == (0, 8)
    variables = init_variables(model, jax.random.PRNGKey(1), digits.input_shape)
    info = {"config": {"model": "multi_head", "model_kwargs": kw}, "class_names": list(digits.class_names),
            "input_shape": list(digits.input_shape)}
    write_run(tmp_path, info, variables)
    run = load_run(tmp_path)
    for a, b in zip(jax.tree_util.tree_leaves(run.variables["params"]), jax.tree_util.tree_leaves(variables["params"])):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(UserError, match="width must be an integer >= 0"):
        create_model("multi_head", 10, backbone="mlp", head_widths=[0, -1])
