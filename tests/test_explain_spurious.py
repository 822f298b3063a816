"""Spurious contamination functions on real digits ("tagged / striped / textured digits", synthetic
variants) and the Sec. 4.2.1 measures against the SSIM definition."""

import numpy as np
import pytest

from repair_jax.errors import UserError
from repair_jax.explain import add_signal, ccm, contaminate, explanation_ssim, fam_gt, k_ssd, spurious_score


def test_signals_change_only_their_mask(digits):
    x = digits.test.x[:30]
    for signal in ("tag", "stripe", "texture"):
        xs, mask = add_signal(signal, x)
        changed = np.abs(xs - x).max(-1) > 0
        assert mask.shape == x.shape[:3] and not changed[mask == 0].any(), signal
        assert xs.min() >= 0 and xs.max() <= 1
    xs, mask = add_signal("tag", x)
    assert np.all(xs[:, :2, :2] == 1) and mask[:, :2, :2].all() and mask.sum() == 30 * 4
    xs, mask = add_signal("texture", x)
    assert 0 < np.abs(xs - x).max() <= 0.04 + 1e-7  # low amplitude: not visible
    assert np.all(x.max(-1)[mask > 0] < 0.1)  # only on the background
    with pytest.raises(UserError, match="unknown spurious signal"):
        add_signal("blur", x)


def test_contaminate_touches_the_aligned_class_only(digits):
    x, y = digits.train.x[:100], digits.train.y[:100]
    xc, mask = contaminate("stripe", x, y, aligned_class=3)
    touched = np.abs(xc - x).reshape(100, -1).max(1) > 0
    assert np.array_equal(touched, y == 3) and np.array_equal(mask.reshape(100, -1).max(1) > 0, y == 3)


def test_spurious_score_definition_4_2_1(digits):
    x = digits.test.x[:50]
    follows_tag = lambda b: np.where(b[:, 0, 0, 0] > 0.99, 7, 1)  # predicts 7 exactly when tagged
    ignores_tag = lambda b: np.full(len(b), 1)
    assert spurious_score(follows_tag, x, "tag", 7) == 1.0
    assert spurious_score(ignores_tag, x, "tag", 7) == 0.0
    with pytest.raises(UserError, match="undefined"):
        spurious_score(lambda b: np.full(len(b), 7), x, "tag", 7)


def _ssim_one_window(a, b, data_range=1.0):
    """SSIM (Wang et al. 2004) of two 7x7 images as one 7x7 window with sample covariances."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ma, mb = a.mean(), b.mean()
    va, vb = a.var(ddof=1), b.var(ddof=1)
    cov = ((a - ma) * (b - mb)).sum() / (a.size - 1)
    return ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2))


def test_explanation_ssim_against_the_definition_and_the_measures():
    rng = np.random.default_rng(0)
    a, b = rng.random((3, 7, 7, 1)), rng.random((3, 7, 7, 1))
    norm = lambda m: np.abs(m[..., 0]) / np.abs(m[..., 0]).max()
    expected = [_ssim_one_window(norm(p), norm(q)) for p, q in zip(a, b)]
    mean, sem = explanation_ssim(a, b)
    assert mean == pytest.approx(np.mean(expected), rel=1e-6)
    assert sem == pytest.approx(np.std(expected, ddof=1) / np.sqrt(3), rel=1e-6)
    masks = (rng.random((3, 7, 7)) > 0.7).astype(np.float32)
    assert k_ssd(masks[..., None] * 5.0, masks) == (pytest.approx(1.0), pytest.approx(0.0))
    assert fam_gt(a, masks)[0] < 0.5 and ccm(a, a)[0] == pytest.approx(1.0)
    with pytest.raises(UserError, match="differ in shape"):
        explanation_ssim(a, b[:2])


def test_cascading_randomization_top_layer_down_and_rank_correlation():
    from scipy import stats

    from repair_jax.explain import cascading_randomization, rank_correlation

    trained = {"Conv_0": 0, "Conv_1": 1, "Dense_0": 2}
    fresh = {"Conv_0": 10, "Conv_1": 11, "Dense_0": 12}
    steps = cascading_randomization(trained, fresh)
    assert [name for name, _ in steps] == ["Dense_0", "Conv_1", "Conv_0"]
    assert [p for _, p in steps] == [{"Conv_0": 0, "Conv_1": 1, "Dense_0": 12},
                                    {"Conv_0": 0, "Conv_1": 11, "Dense_0": 12}, fresh]
    assert trained == {"Conv_0": 0, "Conv_1": 1, "Dense_0": 2}  # not modified
    with pytest.raises(UserError, match="same model"):
        cascading_randomization(trained, {"Dense_0": 1})
    rng = np.random.default_rng(1)
    a, b = rng.random((4, 5, 5, 1)), rng.random((4, 5, 5, 1))
    mean, sem = rank_correlation(a, b)
    ref = [stats.spearmanr(p.ravel(), q.ravel())[0] for p, q in zip(a, b)]
    assert mean == pytest.approx(np.mean(ref)) and sem == pytest.approx(np.std(ref, ddof=1) / 2)
    assert rank_correlation(a, 2 * a + 1)[0] == pytest.approx(1.0)


def test_ks_test_and_identical_class_metric():
    from scipy import stats

    from repair_jax.explain import distributions_differ, identical_class_metric

    rng = np.random.default_rng(2)
    a, b = rng.normal(size=40), rng.normal(loc=2.0, size=40)
    stat, p, rejected = distributions_differ(a, b)
    ref = stats.ks_2samp(a, b)
    assert (stat, p) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue)) and rejected
    assert not distributions_differ(a, a)[2]
    labels = np.array([0, 1, 1, 2, 1, 0])
    assert identical_class_metric(np.array([1, 2, 0, 4, 3, 5]), labels, 1, 2) == 1.0
    assert identical_class_metric(np.array([1, 2, 0, 4, 3, 5]), labels, 1, 4) == 0.75
    with pytest.raises(UserError, match="top must be"):
        identical_class_metric(np.arange(6), labels, 1, 0)


def test_signal_names_carry_their_size_or_strength():
    """``tag(S)`` is an S-pixel square, ``texture(A)`` adds A on the background checkerboard; the bare names keep
    the defaults; a malformed name is one UserError."""
    from repair_jax.explain import parse_signal, signal_mask

    images = np.zeros((2, 28, 28, 1), np.float32)
    assert parse_signal("tag") == ("tag", None) and parse_signal("tag(6)") == ("tag", 6.0)
    assert signal_mask("tag(6)", images)[0].sum() == 36 and signal_mask("tag", images)[0].sum() == 16
    assert signal_mask("tag(6)", images)[0, :6, :6].all()
    x, mask = add_signal("texture(0.12)", images)
    np.testing.assert_allclose(x[..., 0], 0.12 * mask)
    np.testing.assert_allclose(add_signal("texture", images)[0].max(), 0.04)
    for bad in ("blur", "tag(", "tag()", "tag(1.5)", "texture(2)", "texture(-1)", "stripe(3)"):
        with pytest.raises(UserError):
            parse_signal(bad)


def test_label_independent_signals_carry_no_label():
    """Each signal lands on its own random fraction of the images, the same share in every class (so a model
    cannot read the label from it), reproducibly per seed; the labels are untouched by construction."""
    from repair_jax.explain import label_independent_signals

    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 1, size=(4000, 14, 14, 1)).astype(np.float32)  # no background: texture changes nothing
    x[:, :3, :3] = 0.0
    y = np.repeat(np.arange(4), 1000)
    out = label_independent_signals(("tag(3)",), x, 0.3, seed=1)
    tagged = (out[:, :3, :3, 0] == 1).all(axis=(1, 2))
    shares = [tagged[y == c].mean() for c in range(4)]
    assert all(abs(s - 0.3) < 0.05 for s in shares), shares
    np.testing.assert_array_equal(out[~tagged], x[~tagged])
    np.testing.assert_array_equal(out, label_independent_signals(("tag(3)",), x, 0.3, seed=1))
    assert not np.array_equal(out, label_independent_signals(("tag(3)",), x, 0.3, seed=2))
    with pytest.raises(UserError):
        label_independent_signals(("tag",), x, 0.0, seed=0)


def test_normal_model_with_label_independent_signals_in_the_study(tmp_path):
    """``normal_signal_fraction`` set: the normal model trains on the signals at random (its data differ from the
    clean split, the labels do not); None keeps the clean split; out-of-range fractions and bad signals are refused."""
    import dataclasses

    from repair_jax.experiment import load_config
    from repair_jax.studies.explain_spurious import normal_training_set, study_dataset

    config = load_config("experiments/configs/explain_spurious_table4_1_conditions.py", smoke=True)
    assert config.normal_signal_fraction > 0
    ds = study_dataset(config.train)
    mixed = normal_training_set(config, ds, seed=0)
    assert not np.array_equal(mixed.train.x, ds.train.x)
    np.testing.assert_array_equal(mixed.train.y, ds.train.y)
    assert normal_training_set(dataclasses.replace(config, normal_signal_fraction=None), ds, 0) is ds
    for bad in (dataclasses.replace(config, normal_signal_fraction=1.5), dataclasses.replace(config, normal_signal_fraction=0.0),
                dataclasses.replace(config, signals=("tag(x)",))):
        with pytest.raises(UserError):
            bad.validate()
