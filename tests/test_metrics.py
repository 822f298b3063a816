"""Every metric against scikit-learn (or a brute-force definition) on random inputs."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm

from repair_jax import metrics as M


def _random_labels(rng, n, k, missing_true=(), missing_pred=()):
    allowed_t = [c for c in range(k) if c not in missing_true]
    allowed_p = [c for c in range(k) if c not in missing_pred]
    y = rng.choice(allowed_t, n)
    p = np.where(rng.random(n) < 0.6, y, rng.choice(allowed_p, n))
    p = np.where(np.isin(p, missing_pred), allowed_p[0], p)
    return y, p


CASES = [dict(), dict(missing_true=(3,)), dict(missing_pred=(1, 4)), dict(missing_true=(0,), missing_pred=(0, 2))]


@pytest.mark.parametrize("array", [jnp.asarray, np.asarray], ids=["jax", "numpy"])  # both paths of each metric
@pytest.mark.parametrize("case", CASES)
def test_classwise_against_sklearn(case, array):
    rng = np.random.default_rng(1)
    k = 6
    y, p = _random_labels(rng, 300, k, **case)
    cm = M.confusion_matrix(array(y), array(p), k)
    assert isinstance(cm, jax.Array) == (array is jnp.asarray)  # NumPy in, NumPy out: nothing compiled
    labels = np.arange(k)
    np.testing.assert_array_equal(cm, skm.confusion_matrix(y, p, labels=labels))
    prec, rec, f1 = M.precision_recall_f1(cm)
    sp, sr, sf, _ = skm.precision_recall_fscore_support(y, p, labels=labels, zero_division=0)
    np.testing.assert_allclose(prec, sp, atol=1e-6)
    np.testing.assert_allclose(rec, sr, atol=1e-6)
    np.testing.assert_allclose(f1, sf, atol=1e-6)
    assert float(M.accuracy(cm)) == pytest.approx(skm.accuracy_score(y, p))
    assert float(M.macro_f1(cm)) == pytest.approx(
        skm.f1_score(y, p, labels=labels, average="macro", zero_division=0), abs=1e-6)
    with np.errstate(all="ignore"):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sk_bal = skm.balanced_accuracy_score(y, p)
    assert float(M.balanced_accuracy(cm)) == pytest.approx(sk_bal, abs=1e-6)
    for v in (M.balanced_accuracy(cm), M.degree_of_bias(cm), M.precision_std(cm), M.macro_f1(cm)):
        assert np.isfinite(float(v))


def test_metrics_are_jittable():
    y = jnp.array([0, 1, 2, 2, 1])
    p = jnp.array([0, 2, 2, 1, 1])
    f = jax.jit(lambda y, p: M.degree_of_bias(M.confusion_matrix(y, p, 3)))
    assert np.isfinite(float(f(y, p)))
    g = jax.jit(M.type1conf_matrix)
    assert g(M.confusion_matrix(y, p, 3)).shape == (3, 3)


def test_type1conf_by_hand():
    # rows = true: class 0 has 10 samples, 2 predicted as 1; class 1 has 5 samples, 1 predicted as 0.
    cm = np.array([[8, 2, 0], [1, 4, 0], [0, 0, 0]])
    # P(1|0) = 2/10, P(0|1) = 1/5 -> type1conf(0, 1) = 0.2
    assert float(M.type1conf(cm, 0, 1)) == pytest.approx(0.2)
    assert float(M.type1conf(cm, 1, 0)) == pytest.approx(0.2)
    # class 2 has no samples: P(.|2) = 0 by convention, never NaN
    assert float(M.type1conf(cm, 0, 2)) == 0.0
    assert np.all(np.isfinite(M.type1conf_matrix(cm)))


def test_type2conf_against_brute_force():
    rng = np.random.default_rng(2)
    n, k = 200, 5
    t = (rng.random((n, k)) < 0.35).astype(np.float32)
    p = np.where(rng.random((n, k)) < 0.8, t, 1 - t).astype(np.float32)
    m = np.asarray(M.type2conf_matrix(t, p))
    for a, b in itertools.permutations(range(k), 2):
        def rate(a, b):
            cond = (t[:, a] == 1) & (t[:, b] == 0)
            return np.mean((p[cond, a] == 1) & (p[cond, b] == 1)) if cond.any() else 0.0
        assert m[a, b] == pytest.approx(0.5 * (rate(a, b) + rate(b, a)), abs=1e-6)
    assert np.allclose(np.diag(m), 0)


def test_cd_and_top_lists():
    err = np.array([[0, .5, .1, .0], [.5, 0, .3, .2], [.1, .3, 0, .05], [.0, .2, .05, 0]])
    assert float(M.confusion_disparity(err, 0, 2, 1)) == pytest.approx(0.2)
    pairs = M.top_pairs(err, 2)
    assert [p["classes"] for p in pairs] == [[0, 1], [1, 2]]
    trip = M.top_triplets(err, 50)
    best = trip[0]
    a, b, c = best["classes"]
    assert best["value"] == pytest.approx(abs(err[a, c] - err[b, c]))
    assert err[a, c] >= err[b, c]  # A is the positive target class
    brute = max(abs(err[x, z] - err[y, z]) for x, y, z in itertools.permutations(range(4), 3))
    assert best["value"] == pytest.approx(brute)
    assert len(trip) == 4 * 3  # 4 anchors x C(3, 2) pairs


@pytest.mark.parametrize("ties", [False, True])
def test_auroc_and_average_precision_against_sklearn(ties):
    rng = np.random.default_rng(3)
    n, k = 150, 4
    y = rng.integers(0, k, n)
    scores = rng.random((n, k))
    if ties:  # multiples of 1/8 are exact in float32 and float64, so the ties are the same for both
        scores = np.round(scores * 8) / 8
    scores[np.arange(n), y] += 0.25
    au = np.asarray(M.auroc_ovr(jnp.asarray(y), jnp.asarray(scores), k))
    np.testing.assert_allclose(M.auroc_ovr(y, scores, k), au, atol=1e-6)  # the NumPy path
    for c in range(k):
        assert au[c] == pytest.approx(skm.roc_auc_score(y == c, scores[:, c]), abs=1e-6)
        ap = float(M.binary_average_precision(y == c, scores[:, c]))
        assert ap == pytest.approx(skm.average_precision_score(y == c, scores[:, c]), abs=1e-6)
    yml = (rng.random((n, k)) < 0.4).astype(np.float32)
    assert float(M.mean_average_precision(yml, scores)) == pytest.approx(
        skm.average_precision_score(yml, scores, average="macro"), abs=1e-6)


def test_undefined_auroc_is_half_not_nan():
    y = np.zeros(10, int)
    au = np.asarray(M.auroc_ovr(jnp.asarray(y), jnp.asarray(np.random.default_rng(0).random((10, 3))), 3))
    np.testing.assert_allclose(au, 0.5)


# Confusion matrices of Sharma n.d. ("Class wise AUROC, DI, and confusion matrix"), in
# the order of its average-metrics table rows they reproduce: DOB and precision std as printed there.
CM_004 = {
    "LSTMCNN + ResNet": ([[172, 2, 4, 38, 0], [6, 539, 0, 3, 24], [5, 2, 56, 10, 0], [26, 1, 4, 141, 4],
                          [4, 47, 0, 5, 67]], 0.128, 0.083),
    "LSTMCNN + ShuffleNet": ([[173, 16, 0, 0, 27], [6, 557, 0, 0, 9], [0, 0, 50, 22, 1], [6, 0, 31, 132, 7],
                              [17, 1, 1, 3, 101]], 0.096, 0.127),
    "LSTMCNN + ResNet + MTL": ([[182, 20, 0, 0, 14], [5, 563, 1, 1, 2], [0, 0, 55, 15, 3],
                                [2, 2, 22, 132, 18], [15, 3, 5, 5, 95]], 0.088, 0.110),
    "LSTMCNN + ShflNet + MTL": ([[194, 1, 0, 6, 15], [2, 557, 0, 1, 12], [1, 0, 0, 72, 0],
                                 [12, 0, 0, 157, 7], [8, 8, 0, 2, 105]], 0.364, 0.348),
}


@pytest.mark.parametrize("name", list(CM_004))
def test_dob_and_precision_std_reproduce_004(name):
    cm, dob, pstd = CM_004[name]
    assert float(M.degree_of_bias(np.array(cm))) == pytest.approx(dob, abs=6e-4)
    assert float(M.precision_std(np.array(cm))) == pytest.approx(pstd, abs=6e-4)


def test_summarize_keys_and_values(rng):
    y = rng.integers(0, 3, 50)
    logits = rng.normal(size=(50, 3))
    s = M.summarize(y, logits, 3)
    assert s["accuracy"] == pytest.approx(skm.accuracy_score(y, logits.argmax(1)))
    assert set(s["per_class"]) == {"precision", "recall", "f1", "auroc"}


def test_the_numpy_and_jax_paths_of_the_diagnosis_numbers_agree(rng):
    """Issue 26: NumPy inputs give every diagnosis number in NumPy on the host (no compilation), JAX inputs
    in one compiled program; the two agree (float64 vs float32)."""
    y = rng.integers(0, 7, 400)
    logits = rng.normal(size=(400, 7)).astype(np.float32) + 2 * np.eye(7, dtype=np.float32)[y]
    host = M._single_label_arrays(y, logits, 7)
    device = M._single_label_arrays(jnp.asarray(y), jnp.asarray(logits), 7)
    assert set(host) == set(device)
    for key in host:
        assert isinstance(host[key], (np.ndarray, np.generic)), key
        np.testing.assert_allclose(np.asarray(host[key], np.float64), np.asarray(device[key], np.float64),
                                   rtol=1e-5, atol=1e-6, err_msg=key)
    assert M.summarize(y, logits, 7)["accuracy"] == pytest.approx(float(np.mean(logits.argmax(1) == y)))
