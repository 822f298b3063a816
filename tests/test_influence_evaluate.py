"""The LDS / LOO / noisy-label harness (repair_jax.influence.evaluate) against references: scipy's Spearman,
retraining on the subset alone (the same optax L-BFGS, one weighting), a pair count of the ROC AUC, TracIn's
own function."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from repair_jax.errors import UserError
from repair_jax.influence import evaluate as ev
from repair_jax.influence import tracin
from repair_jax.influence.full_batch import minimize_objective


def _first(batch, m):
    return jax.tree_util.tree_map(lambda a: a[:m], batch)


def test_lds_is_spearman_of_summed_scores_per_test_point(rng):
    scores, masks = rng.normal(size=(3, 12)), ev.draw_subsets(12, 7, alpha=0.5, seed=1)
    actual = rng.normal(size=(7, 3))
    pred = ev.predicted_outputs(scores, masks)
    hand = np.array([[scores[t][masks[j]].sum() for t in range(3)] for j in range(7)])
    np.testing.assert_allclose(pred, hand, rtol=1e-12)
    lds = ev.linear_datamodeling_score(pred, actual)
    ref = [scipy.stats.spearmanr(hand[:, t], actual[:, t]).statistic for t in range(3)]
    np.testing.assert_allclose(lds["per_test_point"], ref, rtol=1e-12)
    assert lds["mean"] == pytest.approx(np.mean(ref))
    assert masks.sum(1).tolist() == [6] * 7 and (masks != ev.draw_subsets(12, 7, 0.5, seed=2)).any()
    np.testing.assert_array_equal(masks, ev.draw_subsets(12, 7, alpha=0.5, seed=1))


def test_vmapped_subset_retraining_equals_retraining_on_the_subset_alone(logreg):
    loss, params, train, _, l2, _ = logreg
    masks = ev.draw_subsets(60, 2, alpha=0.5, seed=0)
    with jax.enable_x64(True):
        train = _first(train, 60)
        xs, norms, unravel = ev.retrain_on_subsets(loss, params, train, masks, l2=l2, steps=60)
        alone = jax.tree_util.tree_map(lambda a: a[masks[1]], train)
        ref, gn = minimize_objective(loss, params, alone, l2=l2)
        flat_ref = np.asarray(jax.flatten_util.ravel_pytree(ref)[0])
        xs = np.asarray(xs)
    assert gn < 1e-6 and norms.max() < 1e-6
    np.testing.assert_allclose(xs[1], flat_ref, atol=1e-5)
    assert np.abs(xs[0] - xs[1]).max() > 1e-3  # the two subsets give different models


def test_noisy_label_auc_counts_ordered_pairs(rng):
    flipped = np.zeros(20, bool)
    flipped[[1, 4, 7, 15]] = True
    scores = np.round(rng.normal(size=20), 1)  # rounded: some ties, counted one half
    pairs = [(scores[i] > scores[j]) + 0.5 * (scores[i] == scores[j])
             for i, j in itertools.product(np.flatnonzero(flipped), np.flatnonzero(~flipped))]
    assert ev.noisy_label_auc(scores, flipped) == pytest.approx(np.mean(pairs))
    assert ev.noisy_label_auc(flipped * 2.0, flipped) == 1.0


def test_tracin_scores_are_the_negated_one_checkpoint_tracin(logreg):
    loss, params, train, test, _, _ = logreg
    with jax.enable_x64(True):
        train, test = _first(train, 50), _first(test, 2)
        s = ev.attribution_scores("tracin", loss, params, train, test)
        ref = tracin(loss, [params], [1.0], train, test_batch=_first(test, 1))
        self_inf = ev.self_influence("tracin", loss, params, train, [0, 3])
        g = jax.grad(lambda p: loss(p, _first(train, 1))[0])(params)
    np.testing.assert_allclose(-s[0], np.asarray(ref), rtol=1e-10)
    assert self_inf[0] == pytest.approx(float(sum(jnp.sum(a * a) for a in jax.tree_util.tree_leaves(g))))


@pytest.mark.parametrize("alpha, m, methods", [(0.0, 5, ()), (1.0, 5, ()), (1.5, 5, ()), (0.5, 1, ()),
                                               (0.5, 5, ("explicit", "datamodels"))])
def test_bad_lds_input_is_a_user_error(alpha, m, methods):
    with pytest.raises(UserError):
        ev.validate_lds_args(alpha, m, methods)
    if not methods:
        with pytest.raises(UserError):
            ev.draw_subsets(10, m, alpha)


def test_bad_shapes_and_one_class_auc_are_user_errors():
    with pytest.raises(UserError):
        ev.predicted_outputs(np.zeros((2, 5)), np.zeros((3, 4), bool))
    with pytest.raises(UserError):
        ev.noisy_label_auc(np.zeros(4), np.zeros(4, bool))
    with pytest.raises(UserError):
        ev.attribution_scores("datamodels", None, None, {}, {})
