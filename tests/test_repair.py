"""Weighted Regularization (Zhong et al. 2022, Sec. 3-4): each method pinned to its formula on
hand-computed tiny cases, the Sec. 4.3-4.4 statistics against scipy / the paper's tables, and a tiny
resumable study through the Python API and the CLI."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats

from repair_jax.errors import UserError
from repair_jax.models import BatchNorm, create_model, init_variables
from repair_jax.repair import (
    Targets, a12_magnitude, class_representations, compare_to_baseline, confused_subset_mask,
    distance_regularizer, rank_sum, select_rhos, target_error, vargha_delaney_a12,
    weighted_augmentation_class_weights, weighted_batch_norm_objective, weighted_batch_norm_weights,
    weighted_loss, weighted_output_smoothing, wilcoxon_rank_sum,
)
from repair_jax.train import create_train_state, softmax_cross_entropy


# ----------------------------------------------------------------------------- w-os (Sec. 3.4)

def test_w_os_single_label_three_class_table():
    p = np.array([[0.5, 0.3, 0.2],    # predicted 0 (target): scale p0, p1 by 0.5 -> [.25, .15, .2] -> class 0
                  [0.4, 0.35, 0.25],  # predicted 0 (target): -> [.2, .175, .25] -> class 2
                  [0.2, 0.3, 0.5]])   # predicted 2 (non-target): unchanged
    out = np.asarray(weighted_output_smoothing(p, Targets(((0, 1),)), 0.5))
    np.testing.assert_allclose(out, [[0.25, 0.15, 0.2], [0.2, 0.175, 0.25], [0.2, 0.3, 0.5]], rtol=1e-6)
    np.testing.assert_array_equal(out.argmax(1), [0, 2, 2])
    # rho = 1 is the identity; the triplet form scales all three target classes
    np.testing.assert_allclose(weighted_output_smoothing(p, Targets(((0, 1),)), 1.0), p)
    out3 = np.asarray(weighted_output_smoothing(p, Targets(((0, 1, 2),)), 0.1))
    np.testing.assert_allclose(out3, 0.1 * p, rtol=1e-6)


def test_w_os_multilabel_conditions():
    p = np.array([[0.9, 0.8, 0.1, 0.7],   # A=0 and B=1 predicted (pair hit); 0,2 not both
                  [0.9, 0.2, 0.6, 0.1],   # A and C=2 predicted (triplet hit only)
                  [0.1, 0.9, 0.2, 0.9]])  # neither
    pair = np.asarray(weighted_output_smoothing(p, Targets(((0, 1),)), 0.5, multilabel=True))
    np.testing.assert_allclose(pair, [[0.45, 0.4, 0.1, 0.7], p[1], p[2]], rtol=1e-6)
    trip = np.asarray(weighted_output_smoothing(p, Targets(((0, 1, 2),)), 0.5, multilabel=True))
    np.testing.assert_allclose(trip, [p[0], [0.45, 0.1, 0.3, 0.1], p[2]], rtol=1e-6)


# ----------------------------------------------------------------------------- w-aug (Sec. 3.2)

def test_w_aug_class_weights_multi_pair():
    w = weighted_augmentation_class_weights(Targets(((0, 1), (3, 4))), 6, 0.3)
    np.testing.assert_allclose(w, [1, 1, 0.3, 1, 1, 0.3])
    with pytest.raises(UserError):
        weighted_augmentation_class_weights(Targets(((0, 1),)), 3, 1.5)


# ----------------------------------------------------------------------------- w-bn (Sec. 3.3)



def _bn_stats(x, w):
    bn = BatchNorm(momentum=0.0)  # running stats = the batch statistics of this step
    v = bn.init(jax.random.PRNGKey(0), x, train=False)
    y, mut = bn.apply(v, x, train=True, sample_weight=w, mutable=["batch_stats"])
    return y, mut["batch_stats"]["mean"], mut["batch_stats"]["var"]


def test_w_bn_weights_reduce_to_plain_cases():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3, 3, 2)).astype(np.float32)      # regular batch
    xt = (rng.normal(size=(4, 3, 3, 2)) + 2).astype(np.float32)  # target-class batch
    both = np.concatenate([x, xt])
    for rho, ref in ((1.0, x), (0.0, xt)):
        _, mean, var = _bn_stats(both, weighted_batch_norm_weights(6, 4, rho))
        np.testing.assert_allclose(mean, ref.mean((0, 1, 2)), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(var, ref.var((0, 1, 2)), rtol=1e-5, atol=1e-6)
    # rho = 0.25: mean = 0.25 E[x] + 0.75 E[x_t]; var = the same mixture of squared deviations
    _, mean, var = _bn_stats(both, weighted_batch_norm_weights(6, 4, 0.25))
    m = 0.25 * x.mean((0, 1, 2)) + 0.75 * xt.mean((0, 1, 2))
    v = 0.25 * ((x - m) ** 2).mean((0, 1, 2)) + 0.75 * ((xt - m) ** 2).mean((0, 1, 2))
    np.testing.assert_allclose(mean, m, rtol=1e-5)
    np.testing.assert_allclose(var, v, rtol=1e-5)
    np.testing.assert_allclose(weighted_batch_norm_weights(2, 1, 0.5), [0.25, 0.25, 0.5])


def test_w_bn_objective_backprops_only_the_regular_batch():
    model = create_model("cnn", 3, width=2, dense=4)
    rng = np.random.default_rng(1)
    x = rng.random((4, 8, 8, 1)).astype(np.float32)
    xt = rng.random((3, 8, 8, 1)).astype(np.float32)
    y = np.array([0, 1, 2, 0], np.int32)
    state = create_train_state(model, init_variables(model, jax.random.PRNGKey(0), (8, 8, 1)), optax.sgd(0.1))
    batch = {"x": x, "y": y, "x_target": xt}
    loss, (stats, _) = weighted_batch_norm_objective(state.params, state, batch, rho=0.3)
    w = weighted_batch_norm_weights(4, 3, 0.3)
    (logits, _), mut = model.apply({"params": state.params, "batch_stats": state.batch_stats},
                                   np.concatenate([x, xt]), train=True, sample_weight=w, mutable=["batch_stats"])
    np.testing.assert_allclose(loss, np.mean(softmax_cross_entropy(logits[:4], y)), rtol=1e-5)
    # the running statistics get the same weighted statistics
    for a, b in zip(jax.tree_util.tree_leaves(stats), jax.tree_util.tree_leaves(mut["batch_stats"])):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # rho = 1: exactly the plain ERM objective on the regular batch (target batch has zero weight)
    from repair_jax.train import erm_objective
    l1, _ = weighted_batch_norm_objective(state.params, state, batch, rho=1.0)
    l0, _ = erm_objective(state.params, state, {"x": x, "y": y})
    np.testing.assert_allclose(l1, l0, rtol=1e-5)


def test_w_bn_without_batch_norm_is_a_user_error(tmp_path):
    from repair_jax.data import load_dataset
    from repair_jax.repair import RepairConfig, run_study

    ds = load_dataset("digits")
    model = create_model("mlp", 10, hidden=(8,))
    v = init_variables(model, jax.random.PRNGKey(0), ds.input_shape)
    with pytest.raises(UserError, match="BatchNorm"):
        run_study(model, v, ds, Targets(((1, 2),)), tmp_path / "s", RepairConfig(epochs=1), progress=False)


# ----------------------------------------------------------------------------- w-loss (Sec. 3.5)

def test_w_loss_confused_subset_and_value():
    logits = jnp.array([[3.0, 0.0, 0.0],   # y=1 predicted 0: confused (A<-B)
                        [0.0, 3.0, 0.0],   # y=1 predicted 1: correct
                        [0.0, 0.0, 3.0],   # y=0 predicted 2: wrong, but outside the targets
                        [0.0, 2.0, 0.0],   # y=0 predicted 1: confused
                        [0.0, 3.0, 0.0]])  # y=2 predicted 1: label outside the targets
    y = jnp.array([1, 1, 0, 0, 2])
    mask = confused_subset_mask(logits, y, (0, 1))
    np.testing.assert_array_equal(mask, [1, 0, 0, 1, 0])
    per = np.asarray(softmax_cross_entropy(logits, y))
    got = weighted_loss(logits, y, Targets(((0, 1),)), 0.7)
    np.testing.assert_allclose(got, 0.7 * per.mean() + 0.3 * per[[0, 3]].mean(), rtol=1e-6)
    # triplet (A,B,C) = (0,1,2): terms over D({0,2}) = {row 2} and D({1,2}) = {row 4}
    got3 = weighted_loss(logits, y, Targets(((0, 1, 2),)), 0.7)
    np.testing.assert_allclose(got3, 0.7 * per.mean() + 0.3 * (per[2] + per[4]), rtol=1e-6)
    # two pairs: the second half divided by the number of pairs; an empty subset contributes 0
    got2 = weighted_loss(logits, y, Targets(((0, 1), (0, 2))), 0.5)
    np.testing.assert_allclose(got2, 0.5 * per.mean() + 0.5 * (per[[0, 3]].mean() + per[2]) / 2, rtol=1e-6)


def test_w_loss_multilabel_subset():
    logits = jnp.array([[2.0, 2.0, -2.0], [2.0, 2.0, -2.0], [2.0, -2.0, -2.0]])
    y = jnp.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    # labelled exactly one of {0, 1} and predicted both: only row 0
    np.testing.assert_array_equal(confused_subset_mask(logits, y, (0, 1), multilabel=True), [1, 0, 0])


# ----------------------------------------------------------------------------- w-dbr (Sec. 3.6)

def test_w_dbr_distance_on_known_features():
    f = jnp.array([[0.0, 0.0], [2.0, 0.0], [3.0, 4.0], [3.0, 4.0], [0.0, 8.0]])
    y = jnp.array([0, 0, 1, 1, 2])
    reps, counts = class_representations(f, y, 4)
    np.testing.assert_allclose(reps[:3], [[1, 0], [3, 4], [0, 8]])
    np.testing.assert_array_equal(counts, [2, 2, 1, 0])
    # pair: -D(0, 1) = -sqrt(2^2 + 4^2)
    np.testing.assert_allclose(distance_regularizer(f, y, Targets(((0, 1),)), 4), -np.sqrt(20.0), rtol=1e-5)
    # triplet (0, 1, 2): |D(0,2) - D(1,2)| = |sqrt(1 + 64) - sqrt(9 + 16)|
    np.testing.assert_allclose(distance_regularizer(f, y, Targets(((0, 1, 2),)), 4),
                               abs(np.sqrt(65.0) - 5.0), rtol=1e-5)
    # two pairs averaged; a pair with an absent class (3) contributes 0
    np.testing.assert_allclose(distance_regularizer(f, y, Targets(((0, 1), (0, 3))), 4),
                               -np.sqrt(20.0) / 2, rtol=1e-5)


# ----------------------------------------------------------------------------- errors and statistics

def test_target_error_pairs_and_triplets():
    err = np.array([[0, 0.2, 0.1], [0.2, 0, 0.4], [0.1, 0.4, 0]])
    assert target_error(err, Targets(((0, 1),))) == pytest.approx(0.2)
    assert target_error(err, Targets(((0, 1), (1, 2)))) == pytest.approx(0.3)
    assert target_error(err, Targets(((1, 0, 2),))) == pytest.approx(0.3)  # |0.4 - 0.1|


def test_statistics_against_scipy_and_the_paper():
    a, b = [0.1, 0.2, 0.3, 0.4, 0.5], [0.6, 0.7, 0.8, 0.9, 1.0]
    assert wilcoxon_rank_sum(a, b) == pytest.approx(scipy.stats.ranksums(a, b).pvalue)
    assert wilcoxon_rank_sum(a, b) == pytest.approx(0.009, abs=5e-4)  # the paper's "0.009"
    assert vargha_delaney_a12(a, b) == 0.0 and vargha_delaney_a12(b, a) == 1.0
    assert vargha_delaney_a12([1, 2], [2, 1]) == 0.5
    # A12 against its definition via the Mann-Whitney U statistic
    x, y = np.random.default_rng(0).random(7), np.random.default_rng(1).random(5)
    assert vargha_delaney_a12(x, y) == pytest.approx(scipy.stats.mannwhitneyu(x, y).statistic / 35)
    # every magnitude label printed in the paper's Table 2 / 3
    for v, lab in ((0.0, "large"), (0.68, "medium"), (0.42, "small"), (0.48, "negligible"), (0.3, "medium"),
                   (0.28, "medium"), (0.36, "small"), (0.24, "large"), (0.18, "large"), (0.16, "large")):
        assert a12_magnitude(v) == lab, v
    # rank sum with competition ranks (the paper's CIFAR-100 rows: 0.7051 twice -> rank 1, 1, then 3)
    ra, re, rs = rank_sum([0.6998, 0.7051, 0.7051, 0.7034], [0.155, 0.143, 0.152, 0.124])
    assert ra == [4, 1, 1, 3] and re == [4, 2, 3, 1] and rs == [8, 3, 4, 4]
    identical = compare_to_baseline([0.9] * 5, [0.1] * 5, [0.9] * 5, [0.1] * 5)
    assert identical == {}  # not lower on average: no test applied
    c = compare_to_baseline([0.9] * 5, [0.05] * 5, [0.91, 0.9, 0.92, 0.9, 0.91], [0.1, 0.11, 0.12, 0.1, 0.13])
    assert c["err_p"] < 0.1 and c["err_a12"] == 0.0 and "acc_p" in c


def test_selection_rules_of_sec_4_4():
    rows = lambda *t: [{"rho": r, "accuracy": a, "target_error": e} for r, a, e in t]
    # rule 1: errors <= 0.75 * 0.2 = 0.15 are rho .1 and .3; the higher accuracy is .3
    assert select_rhos(rows((0.1, 0.80, 0.10), (0.3, 0.85, 0.15), (0.9, 0.95, 0.19)), 0.9, 0.2) == [0.3, 0.9]
    # (0.3 is not better than orig on accuracy; 0.9 has higher accuracy and lower error: additionally selected)
    # rule 2: none reduces by 25%; among error <= orig, highest accuracy
    assert select_rhos(rows((0.1, 0.80, 0.2), (0.5, 0.85, 0.19), (0.9, 0.95, 0.3)), 0.9, 0.2) == [0.5]
    # rule 3: all increase the error: highest accuracy
    assert select_rhos(rows((0.1, 0.80, 0.3), (0.5, 0.85, 0.4)), 0.9, 0.2) == [0.5]
    # lambda1 is an option
    assert select_rhos(rows((0.1, 0.80, 0.10), (0.3, 0.85, 0.15)), 0.9, 0.2, lambda1=0.4) == [0.1]


def test_targets_validation():
    with pytest.raises(UserError):
        Targets(((0, 1), (0, 1, 2)))
    with pytest.raises(UserError):
        Targets(((1, 1),))
    with pytest.raises(UserError):
        Targets(((0, 12),)).validate(10)
    assert Targets(((0, 1), (2, 3))).classes == (0, 1, 2, 3)


def test_multilabel_evaluation_and_representations():
    from repair_jax.metrics import mean_average_precision, type2conf_matrix
    from repair_jax.repair import evaluate_outputs

    y = np.array([[1, 0, 0], [1, 0, 1], [0, 1, 0], [0, 1, 1]], np.float32)
    p = np.array([[0.9, 0.7, 0.1], [0.8, 0.2, 0.9], [0.3, 0.9, 0.2], [0.6, 0.8, 0.7]], np.float32)
    r = evaluate_outputs(p, y, Targets(((0, 1),)), multilabel=True)
    # type2conf(0, 1): P((0,1)|0) = 1/2 (rows 0, 1 labelled 0 not 1: row 0 predicted both),
    # P((1,0)|1) = 1/2 (rows 2, 3: row 3 predicted both) -> 0.5
    assert r["error_kind"] == "type2conf" and r["target_error"] == pytest.approx(0.5)
    np.testing.assert_allclose(r["confusion_matrix"], type2conf_matrix(y, (p > 0.5).astype(np.int32)))
    assert r["accuracy"] == pytest.approx(float(mean_average_precision(y, p)))
    assert evaluate_outputs(p, y, Targets(((0, 2, 1),)), multilabel=True)["error_kind"] == "cd"
    f = jnp.array([[1.0, 0.0], [3.0, 2.0], [0.0, 4.0], [2.0, 2.0]])
    reps, counts = class_representations(f, jnp.asarray(y), 3, multilabel=True)
    np.testing.assert_allclose(reps, [[2, 1], [1, 3], [2.5, 2]])
    np.testing.assert_array_equal(counts, [2, 2, 2])


def test_every_method_entry_declares_what_its_built_methods_are():
    """Issue 28: the sweep, the report and the bias study read a method's flags from its registry entry
    (no inspect.signature, no building a method to ask it); every value an entry builds agrees with them."""
    import inspect

    from repair_jax.repair import METHODS, Targets, lookup, make_method, needs_harm, takes_rho

    targets = Targets(((3, 5),))
    for name, entry in METHODS.items():
        assert lookup(name) is entry and takes_rho(name) == entry.takes_rho and needs_harm(name) == entry.needs_harm
        params = inspect.signature(entry.build).parameters  # the declaration matches the constructor
        assert ("rho" in params) == entry.takes_rho and ("harm" in params) == entry.needs_harm
        for rho in ((0.3, 0.7) if entry.takes_rho else (None,)):
            m = make_method(name, targets, rho, harm=np.zeros(4))
            assert (m.name, m.rho, m.fine_tunes, m.deterministic, m.extra_rhos, m.needs_batch_norm,
                    m.needs_features) == (name, rho, entry.fine_tunes, entry.deterministic, entry.extra_rhos,
                                          entry.needs_batch_norm, entry.needs_features)
        with pytest.raises(UserError, match=f"method {name} {'takes no' if not entry.takes_rho else 'needs'} rho"):
            make_method(name, targets, None if entry.takes_rho else 0.5)
    assert METHODS["w-os"](targets, 0.5).label == "w-os(0.5)"  # called, an entry is its constructor
