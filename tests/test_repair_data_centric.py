"""The data-centric repair i-drop (issue 17 Part 4): the targets' influence against Adebayo 2022, Eq. 6.4 computed
with the explicit Hessian, the dropped set by hand, and i-drop through the WR sweep."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from repair_jax.data import load_dataset
from repair_jax.errors import UserError
from repair_jax.metrics import soft_type1conf
from repair_jax.models import create_model, init_variables
from repair_jax.repair import (
    RepairConfig, Targets, dropped_examples, make_method, read_study_records, run_study, target_influence,
)
from repair_jax.stats import InsufficientSeedsWarning
from repair_jax.train import TrainConfig, create_train_state, fit, predict


@pytest.fixture(scope="module")
def small():
    """An MLP (64-8-10, 610 parameters) trained on 300 real digits, and its data set."""
    ds = load_dataset("digits", seed=0, train_limit=300)
    model = create_model("mlp", 10, hidden=(8,))
    state = create_train_state(model, init_variables(model, jax.random.PRNGKey(0), ds.input_shape), optax.adam(1e-2))
    state, _ = fit(state, ds, TrainConfig(epochs=30, batch_size=64), progress=False)
    return model, state, ds


def test_target_influence_is_eq_6_4_through_the_last_layer(small):
    """The scores against Eq. 6.4 written out by hand for the last dense layer on the penultimate features:
    jax.hessian of the mean loss + damping, the gradient of the summed soft type1conf, per-example gradients."""
    _, state, ds = small
    targets = Targets(((3, 5), (8, 1)))
    scores, solver = target_influence(state, ds.train, ds.val, targets)
    assert solver["converged"] and scores.shape == (len(ds.train),) and "last dense layer" in solver["through"]
    _, feats = predict(state, ds.train.x)
    _, vfeats = predict(state, ds.val.x)
    w, b = state.params["Dense_1"]["kernel"], state.params["Dense_1"]["bias"]  # 8 -> 10: the last layer
    unravel = jax.flatten_util.ravel_pytree({"bias": b, "kernel": w})[1]
    logits = lambda f, x: x @ unravel(f)["kernel"] + unravel(f)["bias"]
    ce = lambda f, x, y: -jax.nn.log_softmax(logits(f, x))[jnp.arange(len(y)), y]
    flat = jax.flatten_util.ravel_pytree({"bias": b, "kernel": w})[0]
    h = jax.hessian(lambda f: jnp.mean(ce(f, feats, ds.train.y)))(flat) + solver["damping"] * jnp.eye(flat.size)
    q = lambda f: sum(soft_type1conf(jax.nn.softmax(logits(f, vfeats)), jnp.asarray(ds.val.y), a, c)
                      for a, c in targets.groups)
    g = jax.vmap(jax.grad(lambda f, x, y: ce(f, x[None], y[None])[0]), in_axes=(None, 0, 0))(
        flat, jnp.asarray(feats), jnp.asarray(ds.train.y))
    want = -np.asarray(g @ jnp.linalg.solve(h, jax.grad(q)(flat)))  # I_up = -grad l_i^T (H + damping I)^-1 grad q
    np.testing.assert_allclose(scores, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())
    assert np.sum(want > 0) > 0 and np.sum(want < 0) > 0


def test_dropped_examples_are_the_rho_fraction_of_the_harmful_most_harmful_first():
    scores = np.array([0.5, -1.0, 2.0, 0.0, 0.5, 3.0, -0.2])  # harmful (> 0): 5, 2, 0, 4
    np.testing.assert_array_equal(dropped_examples(scores, 0.5), [5, 2])
    np.testing.assert_array_equal(dropped_examples(scores, 0.6), [5, 2, 0])  # ceil(2.4); tie 0/4 by index
    np.testing.assert_array_equal(dropped_examples(scores, 1.0), [5, 2, 0, 4])
    assert len(dropped_examples(-np.abs(scores), 0.9)) == 0
    with pytest.raises(UserError, match="rho"):
        dropped_examples(scores, 1.5)


def test_i_drop_batches_leave_out_the_dropped_points_and_need_the_scores(small):
    _, _, ds = small
    harm = np.linspace(-1.0, 1.0, len(ds.train))  # the last ~half harmful
    method = make_method("i-drop", Targets(((3, 5),)), 0.5, harm=harm)
    indices, make_batch = method.batches(ds.train, 32, 9, 10, False)
    seen = np.concatenate(list(indices(np.random.default_rng(0))))
    dropped = dropped_examples(harm, 0.5)
    assert make_batch is None and len(seen) == (len(ds.train) - len(dropped)) // 32 * 32
    assert not np.isin(seen, dropped).any() and len(np.unique(seen)) == len(seen)
    with pytest.raises(UserError, match="influence"):
        make_method("i-drop", Targets(((3, 5),)), 0.5).batches(ds.train, 32, 9, 10, False)
    with pytest.raises(UserError, match="299 influence scores"):
        make_method("i-drop", Targets(((3, 5),)), 0.5, harm=harm[1:]).batches(ds.train, 32, 9, 10, False)


def test_i_drop_runs_in_the_wr_sweep_beside_the_baselines(small, tmp_path):
    model, state, ds = small
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    cfg = RepairConfig(epochs=1, lr=1e-3, seeds=1, rhos=(0.5,), methods=("orig", "orig-ft", "i-drop"))
    with pytest.warns(InsufficientSeedsWarning):  # one seed: no significance claimed, as the sweep says
        summary = run_study(model, variables, ds, Targets(((3, 5),)), tmp_path / "s", cfg, progress=False, plots=False)
    assert {r["method"] for r in read_study_records(tmp_path / "s")} == {"orig", "orig-ft", "i-drop"}
    assert "i-drop(0.5)" in [r["label"] for r in summary["rows"]]
    record = json.loads((tmp_path / "s" / "influence.json").read_text())
    assert record["solver"]["converged"] and len(record["scores"]) == len(ds.train)
    assert "i-drop(0.5)" in (tmp_path / "s" / "table.md").read_text()
    # a multi-label data set has no type1conf pair to attribute: one clear error
    multilabel = dataclasses.replace(ds, train=dataclasses.replace(ds.train, y=np.eye(10)[ds.train.y]))
    with pytest.raises(UserError, match="single-label"):
        target_influence(state, multilabel.train, ds.val, Targets(((3, 5),)))
