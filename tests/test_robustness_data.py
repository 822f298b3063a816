"""Imbalance builders (Pradhan et al. 2020, Sec. 3 "Datasets"), the cyclical learning rate and the standard augmentation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from repair_jax.data import load_dataset
from repair_jax.errors import UserError
from repair_jax.robustness import (
    class_counts, deepaugment, imbalanced_indices, make_imbalanced, parse_imbalance, random_flips, rotate,
    split_imbalance_name, standard_augment, triangular_cyclical_lr,
)


def test_longtail_counts_match_cifar_lt():
    # Cui et al. 2019 / Cao et al. 2019 CIFAR-10-LT and CIFAR-100-LT at imbalance ratio 100.
    c10 = class_counts("longtail(100)", 5000, 10)
    assert c10.tolist() == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    c100 = class_counts("longtail(100)", 500, 100)
    assert c100[0] == 500 and c100[-1] == 5 and c100.sum() == 10847
    assert np.all(np.diff(c100) <= 0)


def test_longtail_lambda_and_linear_counts():
    assert class_counts("longtail(lambda=0.5)", 512, 10).tolist() == [512 >> i for i in range(10)]
    assert class_counts("linear(10)", 100, 10).tolist() == list(range(100, 0, -10))
    assert class_counts("linear(2)", 9, 4).tolist() == [9, 7, 6, 4]  # 9 - i * 1.5, floored
    assert class_counts("balanced", 7, 3).tolist() == [7, 7, 7]
    assert class_counts("longtail(1)", 7, 3).tolist() == [7, 7, 7]


@pytest.mark.parametrize("spec", ["longtail(0.5)", "longtail(lambda=1.5)", "longtail(lambda=0)",
                                  "linear(abc)", "zipf(3)", "balanced(3)", "longtail", "linear(-2)",
                                  "longtail(10,order=a-b)", "longtail(10,foo=1)", "linear(lambda=0.5)"])
def test_bad_specs(spec):
    with pytest.raises(UserError):
        parse_imbalance(spec)


def test_spec_round_trip_and_name_split():
    assert str(parse_imbalance("longtail( 100 )")) == "longtail(100)"
    assert str(parse_imbalance("linear(10,order=random)")) == "linear(10,order=random)"
    assert str(parse_imbalance("longtail(10,order=2-0-1)")) == "longtail(10,order=2-0-1)"
    assert split_imbalance_name("fashion_mnist:longtail(100)")[1] == parse_imbalance("longtail(100)")
    assert split_imbalance_name("npz:/tmp/a.npz") == ("npz:/tmp/a.npz", None)
    assert split_imbalance_name("digits:balanced")[0] == "digits"
    assert split_imbalance_name("npz:linear.npz") == ("npz:linear.npz", None)  # a file name, not a level
    ds = load_dataset("digits", seed=0, imbalance="linear(5)")  # imbalance is a data-set option
    assert ds.name == "digits:linear(5)" and ds.test.y.shape == load_dataset("digits", seed=0).test.y.shape
    from repair_jax.train import TrainConfig  # a run's recorded BASE:LEVEL name loads the same data again

    again = TrainConfig(dataset="digits:linear(5)").load_dataset()
    np.testing.assert_array_equal(again.train.y, ds.train.y)
    with pytest.raises(UserError, match="unknown dataset"):  # load_dataset itself parses no level out of a name
        load_dataset("digits:linear(5)", seed=0)
    with pytest.raises(UserError):
        split_imbalance_name("digits:longtail(0.1)")


def test_make_imbalanced_on_digits():
    ds = load_dataset("digits", seed=0)
    n_max = int(np.bincount(ds.train.y).min())
    lt = make_imbalanced(ds, "longtail(10)", seed=0)
    assert lt.name == "digits:longtail(10)"
    np.testing.assert_array_equal(np.bincount(lt.train.y, minlength=10), class_counts("longtail(10)", n_max, 10))
    for split in ("val", "pool", "test"):  # only the training split is reduced
        np.testing.assert_array_equal(lt.split(split).y, ds.split(split).y)
    again = make_imbalanced(ds, "longtail(10)", seed=0)
    np.testing.assert_array_equal(again.train.x, lt.train.x)
    other = imbalanced_indices(ds.train.y, 10, "longtail(10)", seed=1)
    assert not np.array_equal(other, imbalanced_indices(ds.train.y, 10, "longtail(10)", seed=0))
    # every kept example is a real training example
    keep = imbalanced_indices(ds.train.y, 10, "longtail(10)", seed=0)
    np.testing.assert_array_equal(ds.train.x[keep], lt.train.x)


def test_class_order():
    ds = load_dataset("digits", seed=0)
    counts = class_counts("linear(4)", 50, 10)
    rnd = make_imbalanced(ds, "linear(4,order=random)", seed=3, n_max=50)
    got = np.bincount(rnd.train.y, minlength=10)
    order = np.argsort(-got, kind="stable")
    np.testing.assert_array_equal(got[order], counts)
    assert not np.array_equal(order, np.arange(10))
    fixed = make_imbalanced(ds, "linear(4,order=9-8-7-6-5-4-3-2-1-0)", seed=0, n_max=50)
    np.testing.assert_array_equal(np.bincount(fixed.train.y, minlength=10), counts[::-1])
    with pytest.raises(UserError):
        make_imbalanced(ds, "linear(4,order=0-1)", seed=0)
    with pytest.raises(UserError):  # more than the class has
        make_imbalanced(ds, "balanced", seed=0, n_max=10_000)


def test_triangular_cyclical_lr_formula():
    base, top, s = 1e-4, 1e-2, 5
    lr = triangular_cyclical_lr(base, top, s)
    for t in range(31):
        cycle = np.floor(1 + t / (2 * s))
        x = abs(t / s - 2 * cycle + 1)
        assert float(lr(t)) == pytest.approx(base + (top - base) * max(0.0, 1 - x), rel=1e-6)
    # the same triangle built from optax's linear schedules
    up_down = optax.join_schedules([optax.linear_schedule(base, top, s), optax.linear_schedule(top, base, s)], [s])
    for t in range(2 * s):
        assert float(lr(t + 4 * s)) == pytest.approx(float(up_down(t)), rel=1e-5)
    with pytest.raises(UserError):
        triangular_cyclical_lr(1e-2, 1e-3, 5)


def test_flips_and_rotation():
    x = jnp.asarray(load_dataset("digits").train.x[:16])
    y = jax.jit(random_flips)(jax.random.PRNGKey(0), x)
    for a, b in zip(np.asarray(x), np.asarray(y)):  # each image is one of its four flips
        assert any(np.array_equal(b, f) for f in (a, a[:, ::-1], a[::-1], a[::-1, ::-1]))
    assert not np.array_equal(np.asarray(x), np.asarray(y))
    np.testing.assert_allclose(rotate(x, jnp.zeros(16)), x, atol=1e-6)
    # 90 degrees counter-clockwise equals numpy's rot90 on the (H, W) axes
    np.testing.assert_allclose(rotate(x, jnp.full(16, 90.0)), np.rot90(np.asarray(x), 1, axes=(1, 2)), atol=1e-5)
    aug = jax.jit(standard_augment(15.0))
    np.testing.assert_array_equal(aug(jax.random.PRNGKey(1), x), aug(jax.random.PRNGKey(1), x))
    with pytest.raises(UserError):
        standard_augment(-1.0)


def test_deepaugment_hook():
    x = jnp.asarray(load_dataset("digits").train.x[:16])
    invert = lambda key, x: 1.0 - x  # stands in for a user's pretrained image-to-image network
    np.testing.assert_allclose(deepaugment(invert, 1.0)(jax.random.PRNGKey(0), x), 1.0 - x)
    np.testing.assert_allclose(deepaugment(invert, 0.0)(jax.random.PRNGKey(0), x), x)
    half = np.asarray(deepaugment(invert, 0.5)(jax.random.PRNGKey(0), x))
    each = [np.allclose(h, 1 - a) or np.allclose(h, a) for h, a in zip(half, np.asarray(x))]
    assert all(each)
    with pytest.raises(UserError):
        deepaugment(invert, 1.5)


def test_cifar100_lt_through_tfds_on_mock_data():
    """CIFAR-100-LT (Pradhan et al.'s (2020) data set) loads through TFDS like any other: on TFDS's mock CIFAR-100 (random
    32x32x3 images, 3,000 per split), the long-tailed training split has Cui et al.'s class counts and the
    test split is untouched. The ratio is 5, not 100: the mock data has ~25 images per class."""
    from repair_jax.studies.wr import data_source

    with data_source(3000):
        base = load_dataset("cifar100", seed=0)
        lt = load_dataset("cifar100", seed=0, imbalance="longtail(5)")
    assert base.input_shape == (32, 32, 3) and base.num_classes == 100
    n_max = int(np.bincount(base.train.y, minlength=100).min())
    np.testing.assert_array_equal(np.bincount(lt.train.y, minlength=100), class_counts("longtail(5)", n_max, 100))
    np.testing.assert_array_equal(lt.test.y, base.test.y)
