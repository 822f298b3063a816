"""Loaders (sklearn digits, IDX files, TFDS data_source mock, npz), splits and batching."""

import gzip
import struct

import numpy as np
import pytest

from repair_jax.data import (
    DEBIAN_FASHION_MNIST, SPLITS, class_subset_batches, find_fashion_mnist_dir, load_dataset,
    parse_class, parse_class_tuple, read_idx, shuffled_batches, stratified_partition, weighted_batches,
)
from repair_jax.errors import UserError


def _write_idx(path, arr, gz=False):
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}
    header = bytes([0, 0, codes[arr.dtype], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def test_digits_split_is_deterministic_disjoint_and_stratified(digits):
    again = load_dataset("digits", seed=0)
    other = load_dataset("digits", seed=1)
    for s in SPLITS:
        np.testing.assert_array_equal(digits.split(s).x, again.split(s).x)
    assert not np.array_equal(digits.train.y, other.train.y)
    assert sum(len(digits.split(s)) for s in SPLITS) == 1797
    flat = {s: {x.tobytes() for x in digits.split(s).x} for s in SPLITS}
    # sklearn digits has a few exact duplicate images; splits must not share *indices*, which we
    # check through the counts, and the overlap of byte strings must stay tiny.
    assert len(flat["train"] & flat["test"]) <= 5
    for s in SPLITS:
        counts = np.bincount(digits.split(s).y, minlength=10)
        assert counts.min() > 0 and counts.max() - counts.min() <= max(3, 0.15 * counts.mean())
    assert digits.input_shape == (8, 8, 1) and digits.train.x.dtype == np.float32
    assert 0.0 <= digits.train.x.min() and digits.train.x.max() <= 1.0


def test_stratified_partition_covers_everything():
    y = np.repeat(np.arange(4), [10, 20, 30, 40])
    parts = stratified_partition(y, [0.5, 0.25, 0.25], seed=3)
    allidx = np.concatenate(parts)
    assert sorted(allidx.tolist()) == list(range(100))
    assert abs(len(parts[0]) - 50) <= 2
    with pytest.raises(UserError):
        stratified_partition(y, [0.5, 0.6], seed=0)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_reader_on_written_files(tmp_path, gz):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (7, 5, 4)).astype(np.uint8)
    labels = rng.integers(0, 10, 7).astype(np.uint8)
    floats = rng.normal(size=(3, 2)).astype(np.float32)
    suffix = ".gz" if gz else ""
    _write_idx(tmp_path / f"a{suffix}", imgs, gz)
    _write_idx(tmp_path / f"b{suffix}", labels, gz)
    _write_idx(tmp_path / f"c{suffix}", floats, gz)
    np.testing.assert_array_equal(read_idx(tmp_path / f"a{suffix}"), imgs)
    np.testing.assert_array_equal(read_idx(tmp_path / f"b{suffix}"), labels)
    np.testing.assert_array_equal(read_idx(tmp_path / f"c{suffix}"), floats)


def test_idx_reader_rejects_corrupt_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(UserError, match="magic"):
        read_idx(tmp_path / "bad")
    arr = np.zeros((4, 3), np.uint8)
    _write_idx(tmp_path / "trunc", arr)
    raw = (tmp_path / "trunc").read_bytes()
    (tmp_path / "trunc").write_bytes(raw[:-2])
    with pytest.raises(UserError, match="data bytes"):
        read_idx(tmp_path / "trunc")


def test_system_data_directory_is_searched_last_and_can_be_hidden(tmp_path, monkeypatch, fashion_mnist_idx_dir):
    monkeypatch.delenv("REPAIR_JAX_DATA", raising=False)
    monkeypatch.setenv("REPAIR_JAX_SYSTEM_DATA", str(fashion_mnist_idx_dir.parent))  # a base holding the files
    assert find_fashion_mnist_dir() is None  # neither the base nor base/fashion-mnist holds them
    monkeypatch.setenv("REPAIR_JAX_SYSTEM_DATA", str(fashion_mnist_idx_dir))
    assert find_fashion_mnist_dir() == fashion_mnist_idx_dir
    assert find_fashion_mnist_dir(tmp_path) == fashion_mnist_idx_dir  # tmp_path has no files: falls through
    monkeypatch.setenv("REPAIR_JAX_SYSTEM_DATA", "")  # none: what the suite runs with
    assert find_fashion_mnist_dir() is None
    with pytest.raises(UserError, match="not prepared"):  # then TFDS, which has no prepared data either
        load_dataset("fashion_mnist", seed=0, data_dir=str(tmp_path))


def test_fashion_mnist_from_a_written_idx_directory(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 240), ("t10k", 50)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)).astype(np.uint8), True)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.tile(np.arange(10, dtype=np.uint8), n // 10), True)
    monkeypatch.setenv("REPAIR_JAX_DATA", str(tmp_path))
    ds = load_dataset("fashion_mnist", seed=0, data_dir=str(tmp_path))
    assert len(ds.test) == 50 and len(ds.train) + len(ds.val) + len(ds.pool) == 240
    assert ds.class_names[0] == "T-shirt/top" and ds.input_shape == (28, 28, 1)


@pytest.mark.real_data
def test_debian_fashion_mnist_files():
    """The real Fashion-MNIST (Debian package dataset-fashion-mnist): run by `make test-real-data` only."""
    assert find_fashion_mnist_dir() is not None, (
        f"no Fashion-MNIST IDX files in $REPAIR_JAX_DATA or {DEBIAN_FASHION_MNIST}: "
        "`apt-get install dataset-fashion-mnist` first")
    ds = load_dataset("fashion_mnist", seed=0)
    assert len(ds.test) == 10_000
    assert len(ds.train) + len(ds.val) + len(ds.pool) == 60_000
    assert np.bincount(ds.test.y).tolist() == [1000] * 10
    assert ds.class_names[9] == "Ankle boot"


def test_tfds_data_source_with_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE):
        ds = load_dataset("mnist", seed=0)
        assert ds.input_shape == (28, 28, 1) and ds.num_classes == 10
        assert len(ds.test) == 40 and len(ds.train) + len(ds.val) + len(ds.pool) == 40
        c = load_dataset("cifar10", seed=0)
        assert c.input_shape == (32, 32, 3)


def test_npz_loader_and_bad_arrays(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((100, 4, 4)).astype(np.float32)
    y = np.repeat(np.arange(4), 25)
    np.savez(tmp_path / "ok.npz", x=x, y=y, class_names=np.array(["a", "b", "c", "d"]))
    ds = load_dataset(f"npz:{tmp_path / 'ok.npz'}")
    assert ds.class_names == ("a", "b", "c", "d") and ds.input_shape == (4, 4, 1)
    x[3, 1, 1] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=y)
    with pytest.raises(UserError, match="NaN"):
        load_dataset(f"npz:{tmp_path / 'nan.npz'}")
    np.savez(tmp_path / "short.npz", x=x[:10], y=y)
    with pytest.raises(UserError, match="labels"):
        load_dataset(f"npz:{tmp_path / 'short.npz'}")
    with pytest.raises(UserError, match="not found"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")
    with pytest.raises(UserError, match="unknown dataset"):
        load_dataset("imagenet")


def test_digits_multilabel_is_built_from_real_digits():
    ds = load_dataset("digits_multilabel", seed=0)
    assert ds.multilabel and ds.train.y.shape[1] == 10 and ds.input_shape == (16, 16, 1)
    counts = ds.train.y.sum(1)
    assert set(np.unique(counts)) == {2.0, 3.0}
    base = load_dataset("digits", seed=0)
    # every non-empty quadrant is one of the real training digits
    train_digits = {d.tobytes() for d in base.train.x}
    q = ds.train.x[0]
    quads = [q[:8, :8], q[:8, 8:], q[8:, :8], q[8:, 8:]]
    filled = [t for t in quads if t.any()]
    assert len(filled) == counts[0] and all(t.tobytes() in train_digits for t in filled)


def test_batching_helpers(rng):
    batches = list(shuffled_batches(103, 10, rng))
    assert len(batches) == 10 and all(len(b) == 10 for b in batches)
    assert len(np.unique(np.concatenate(batches))) == 100
    labels = np.repeat(np.arange(5), 200)
    drawn = np.concatenate(list(class_subset_batches(labels, [1, 3], 5, 64, 20, rng)))
    assert set(np.unique(labels[drawn])) == {1, 3}
    w = np.array([1.0, 0.1, 0.1, 0.1, 0.1])
    drawn = np.concatenate(list(weighted_batches(labels, w, 500, 20, rng)))
    share0 = np.mean(labels[drawn] == 0)
    assert share0 == pytest.approx(1 / 1.4, abs=0.02)
    with pytest.raises(UserError):
        next(weighted_batches(labels, np.zeros(5), 4, 1, rng))


def test_class_parsing():
    names = ("cat", "dog", "bird")
    assert parse_class("Dog", names) == 1 and parse_class("2", names) == 2
    assert parse_class_tuple(("cat", "bird"), names, 2) == (0, 2) == parse_class_tuple((0, "Bird"), names, 2)
    with pytest.raises(UserError, match="as a sequence"):  # "A,B" is the command line's, split in repair_jax.cli
        parse_class_tuple("cat,bird", names, 2)
    with pytest.raises(UserError, match="out of range"):
        parse_class("7", names)
    with pytest.raises(UserError, match="distinct"):
        parse_class_tuple(("cat", "0"), names, 2)
    with pytest.raises(UserError, match="unknown class"):
        parse_class("horse", names)


def test_npz_with_no_examples_or_fractional_labels_is_refused(tmp_path):
    """Issue 12 point 5: an empty npz and float labels (today truncated silently) are one clear error;
    whole-number float labels are read exactly."""
    x = np.random.default_rng(0).random((40, 3, 3)).astype(np.float32)
    y = np.repeat(np.arange(4), 10)
    np.savez(tmp_path / "empty.npz", x=x[:0], y=y[:0])
    with pytest.raises(UserError, match="holds no examples"):
        load_dataset(f"npz:{tmp_path / 'empty.npz'}")
    np.savez(tmp_path / "frac.npz", x=x, y=y + 0.7)
    with pytest.raises(UserError, match="whole class indices"):
        load_dataset(f"npz:{tmp_path / 'frac.npz'}")
    np.savez(tmp_path / "frac_test.npz", x_train=x, y_train=y, x_test=x, y_test=y + 0.5)
    with pytest.raises(UserError, match="whole class indices"):
        load_dataset(f"npz:{tmp_path / 'frac_test.npz'}")
    np.savez(tmp_path / "whole.npz", x=x, y=y.astype(np.float64))
    ds = load_dataset(f"npz:{tmp_path / 'whole.npz'}")
    assert ds.train.y.dtype == np.int32 and sorted(np.unique(ds.train.y)) == [0, 1, 2, 3]


def test_train_limit_below_the_class_count_is_refused():
    with pytest.raises(UserError, match="smaller than the 10 classes"):
        load_dataset("digits", train_limit=9)
    ds = load_dataset("digits", train_limit=10)
    assert sorted(ds.train.y.tolist()) == list(range(10))


def test_unprepared_tfds_data_is_one_clear_line(tmp_path):
    """Issue 12 point 5: not the TFDS exception's type name ("; KeyError") but what to do."""
    with pytest.raises(UserError) as e:
        load_dataset("mnist", data_dir=str(tmp_path))
    msg = str(e.value)
    assert "not prepared" in msg and "tfds build mnist" in msg and "KeyError" not in msg and "\n" not in msg


def test_digits_read_without_scikit_learn_are_scikit_learns():
    """data.digits_arrays reads scikit-learn's digits file itself (a command's start does not import
    scikit-learn); the arrays are load_digits' own."""
    from sklearn.datasets import load_digits

    from repair_jax.data import digits_arrays

    images, target = digits_arrays()
    d = load_digits()
    np.testing.assert_array_equal(images, d.images)
    np.testing.assert_array_equal(target, d.target)
