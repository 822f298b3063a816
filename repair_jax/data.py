"""Real data sets, deterministic 4-way splits, and the batching helpers.

Every data set is loaded through a real loader with no network needed at run time:
scikit-learn's embedded ``digits`` (the default), Fashion-MNIST from IDX files (Debian's
``dataset-fashion-mnist`` or a user directory), TFDS ``data_source`` (array_record, no TensorFlow)
for ``mnist``/``cifar10``/``cifar100``/``fashion_mnist`` and ``npz:PATH`` for a user's own arrays.
``digits_multilabel`` is a *synthetic* multi-label set built on top of the real digits.

Splits follow Henriksen et al. 2022, Sec. 5 "Setup": train / validation / repair pool / test.
Images are float32 NHWC in [0, 1]; single-label targets are int32 class indices, multi-label
targets are float32 multi-hot vectors.
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import os
import struct
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from repair_jax.errors import UserError
from repair_jax.imbalance import ImbalanceSpec, make_imbalanced

SPLITS = ("train", "val", "pool", "test")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
# The system directory searched last for IDX files (Debian's dataset-fashion-mnist by default); set
# to an empty string to search none (the test suite does: no test reads data installed on the machine).
SYSTEM_DATA_ENV = "REPAIR_JAX_SYSTEM_DATA"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")
# Fractions of the canonical training split kept for validation and the repair pool (Henriksen et al. 2022, Sec. 5:
# 5k + 5k of 60k); data sets without a canonical test split also give TEST_FRACTION to the test set.
VAL_FRACTION = 1 / 12
POOL_FRACTION = 1 / 12
TEST_FRACTION = 0.2


@dataclasses.dataclass(frozen=True)
class Split:
    """One split: ``x`` (N, H, W, C) float32 and ``y`` (N,) int32 or (N, K) float32 multi-hot."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, idx: np.ndarray) -> "Split":
        return Split(self.x[idx], self.y[idx])

    def batch(self, idx: np.ndarray | None = None) -> dict[str, np.ndarray]:
        if idx is None:
            return {"x": self.x, "y": self.y}
        return {"x": self.x[idx], "y": self.y[idx]}


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    class_names: tuple[str, ...]
    train: Split
    val: Split
    pool: Split
    test: Split
    multilabel: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise UserError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        return getattr(self, name)

    def class_index(self, spec: str | int) -> int:
        """A class given by index or by name (case-insensitive) -> its index."""
        return parse_class(spec, self.class_names)

    @classmethod
    def from_arrays(cls, train: tuple, test: tuple, *, val: tuple | None = None, pool: tuple | None = None,
                    class_names: Sequence[str] | None = None, multilabel: bool = False,
                    name: str = "arrays") -> "Dataset":
        """A data set of the user's own arrays and split, each split an ``(x, y)`` pair: ``x`` (N, ...)
        float inputs as the model takes them (not rescaled), ``y`` (N,) class indices or (N, K)
        multi-hot with ``multilabel``. A missing ``val`` / ``pool`` is empty; ``class_names``
        default to "0", "1", ... over the classes the labels use."""
        empty = lambda x: (np.zeros((0, *np.shape(x)[1:]), np.float32), np.zeros((0,), np.int32))
        parts = {"train": train, "test": test, "val": val if val is not None else empty(train[0]),
                 "pool": pool if pool is not None else empty(train[0])}
        if class_names is None:
            ys = [np.asarray(p[1]) for p in parts.values() if len(p[1])]
            k = ys[0].shape[1] if multilabel else int(max(int(y.max()) for y in ys)) + 1
            class_names = tuple(str(c) for c in range(k))
        splits = {}
        for s, (x, y) in parts.items():
            x = np.asarray(x, np.float32)
            y = np.asarray(y, np.float32) if multilabel else whole_labels(y, f"{s} labels")
            if multilabel and len(y) == 0:
                y = np.zeros((0, len(class_names)), np.float32)
            check_arrays(x, y, len(class_names), multilabel, f"{s} split")
            splits[s] = Split(x, y)
        shapes = {s: sp.x.shape[1:] for s, sp in splits.items()}
        if len(set(shapes.values())) != 1:
            raise UserError(f"the splits' inputs differ in shape: {shapes}")
        if not len(splits["train"]):
            raise UserError("the train split is empty")
        return cls(name, tuple(str(c) for c in class_names), splits["train"], splits["val"], splits["pool"],
                   splits["test"], multilabel)


def parse_class(spec: str | int, class_names: Sequence[str]) -> int:
    k = len(class_names)
    if isinstance(spec, (int, np.integer)):
        idx = int(spec)
    else:
        s = str(spec).strip()
        lowered = [c.lower() for c in class_names]
        if s.lower() in lowered:
            return lowered.index(s.lower())
        try:
            idx = int(s)
        except ValueError:
            raise UserError(f"unknown class {s!r}; classes are {', '.join(class_names)}") from None
    if not 0 <= idx < k:
        raise UserError(f"class index {idx} out of range [0, {k - 1}]")
    return idx


def parse_class_tuple(spec: Sequence, class_names: Sequence[str], size: int) -> tuple[int, ...]:
    """A pair ``(A, B)`` or triplet ``(A, B, C)`` of classes by index or name -> distinct class indices (the
    command line's ``"A,B"`` is split by :mod:`repair_jax.cli.parsing`)."""
    if isinstance(spec, str):
        raise UserError(f"give the classes as a sequence, e.g. ('T-shirt/top', 'Shirt') or (0, 6), got {spec!r}")
    items = list(spec)
    if len(items) != size:
        kind = {2: "pair", 3: "triplet"}.get(size, f"{size}-tuple")
        raise UserError(f"a {kind} needs {size} classes, got {len(items)} in {spec!r}")
    idx = tuple(parse_class(i, class_names) for i in items)
    if len(set(idx)) != size:
        raise UserError(f"classes must be distinct, got {spec!r}")
    return idx


# ----------------------------------------------------------------------------- validation

def check_arrays(x: np.ndarray, y: np.ndarray, num_classes: int, multilabel: bool, what: str) -> None:
    if x.shape[0] != y.shape[0]:
        raise UserError(f"{what}: {x.shape[0]} inputs but {y.shape[0]} labels")
    if x.ndim < 2:
        raise UserError(f"{what}: inputs must have shape (N, ...), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise UserError(f"{what}: inputs contain NaN or inf")
    if multilabel:
        if y.ndim != 2 or y.shape[1] != num_classes:
            raise UserError(f"{what}: multi-label targets must be (N, {num_classes}), got {y.shape}")
    else:
        if y.ndim != 1:
            raise UserError(f"{what}: labels must be (N,), got {y.shape}")
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise UserError(f"{what}: labels outside [0, {num_classes - 1}]")


def whole_labels(y: np.ndarray, what: str) -> np.ndarray:
    """Single-label targets as int32; float labels must be whole numbers (never truncated)."""
    y = np.asarray(y)
    if y.dtype.kind in "biu":
        return y.astype(np.int32)
    if y.dtype.kind != "f":
        raise UserError(f"{what}: labels must be class indices, got dtype {y.dtype}")
    bad = ~np.isfinite(y) | (y != np.round(y))
    if np.any(bad):
        raise UserError(f"{what}: labels must be whole class indices, got {y.ravel()[np.argmax(bad.ravel())]!r} "
                        f"({int(bad.sum())} of {y.size} labels are not whole numbers)")
    return y.astype(np.int32)


def _as_images(x: np.ndarray) -> np.ndarray:
    """(N, H, W) or (N, H, W, C) integers/floats -> float32 NHWC in [0, 1] (uint8 scaled by 255)."""
    x = np.asarray(x)
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    x = x.astype(np.float32) / scale
    if x.ndim == 3:
        x = x[..., None]
    return x


# ----------------------------------------------------------------------------- splitting

def stratified_partition(labels: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Splits indices 0..N-1 into len(fractions) disjoint parts, stratified by ``labels``.

    Deterministic in ``seed``. ``labels`` may be (N,) ints or (N, K) multi-hot (stratified by the
    lowest present class). Each part is returned sorted.
    """
    fractions = np.asarray(fractions, dtype=np.float64)
    if np.any(fractions < 0) or not np.isclose(fractions.sum(), 1.0):
        raise UserError(f"split fractions must be non-negative and sum to 1, got {fractions.tolist()}")
    strata = labels if labels.ndim == 1 else np.argmax(labels > 0, axis=1)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for c in np.unique(strata):
        idx = rng.permutation(np.flatnonzero(strata == c))
        bounds = np.round(np.cumsum(fractions) * len(idx)).astype(int)
        start = 0
        for p, stop in enumerate(bounds):
            parts[p].append(idx[start:stop])
            start = stop
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, int) for p in parts]


def four_way_split(x, y, seed, x_test=None, y_test=None, val_fraction=VAL_FRACTION,
                   pool_fraction=POOL_FRACTION, test_fraction=TEST_FRACTION):
    """train / val / pool / test. With a canonical test set it is kept as the test split and the
    rest is cut from the training data; otherwise all four are cut from (x, y)."""
    if x_test is None:
        fr = [1 - val_fraction - pool_fraction - test_fraction, val_fraction, pool_fraction, test_fraction]
        tr, va, po, te = stratified_partition(y, fr, seed)
        return tuple(Split(x[i], y[i]) for i in (tr, va, po, te))
    fr = [1 - val_fraction - pool_fraction, val_fraction, pool_fraction]
    tr, va, po = stratified_partition(y, fr, seed)
    return Split(x[tr], y[tr]), Split(x[va], y[va]), Split(x[po], y[po]), Split(x_test, y_test)


def flip_labels(y: np.ndarray, fraction: float, num_classes: int,
                seed: int | np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Label noise (Adebayo 2022, Sec. 5.3 and 6.5): switches ``fraction`` of the labels to a uniformly drawn
    *other* class; (noisy y (N,) int32, flipped mask (N,) bool). ``seed``: an int, or a generator that
    successive calls draw from in turn."""
    rng = np.random.default_rng(seed)
    n = len(y)
    idx = rng.choice(n, int(round(fraction * n)), replace=False)
    y_noisy = np.asarray(y).copy()
    y_noisy[idx] = (y_noisy[idx] + rng.integers(1, num_classes, len(idx))) % num_classes
    mask = np.zeros(n, bool)
    mask[idx] = True
    return y_noisy.astype(np.int32), mask


# ----------------------------------------------------------------------------- IDX files

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (the MNIST format, optionally gzipped) into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise UserError(f"cannot read IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise UserError(f"not an IDX file (bad magic number): {path}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"truncated IDX header: {path}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise UserError(f"IDX file {path} holds {len(raw) - header} data bytes, header says {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def find_fashion_mnist_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """``data_dir``, else ``$REPAIR_JAX_DATA``, else the system directory (``$REPAIR_JAX_SYSTEM_DATA``
    if set, an empty value meaning none; by default Debian's directory); also tries a ``fashion-mnist``
    subdirectory of each. Returns the first holding all four IDX files."""
    candidates = []
    system = os.environ.get(SYSTEM_DATA_ENV, str(DEBIAN_FASHION_MNIST))
    for base in (data_dir, os.environ.get("REPAIR_JAX_DATA"), system):
        if base:
            candidates += [Path(base), Path(base) / "fashion-mnist"]
    for d in candidates:
        stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte")
        if all(_find_idx(d, s) for s in stems):
            return d
    return None


def load_idx_dir(directory: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    xtr = read_idx(_find_idx(directory, "train-images-idx3-ubyte"))
    ytr = read_idx(_find_idx(directory, "train-labels-idx1-ubyte"))
    xte = read_idx(_find_idx(directory, "t10k-images-idx3-ubyte"))
    yte = read_idx(_find_idx(directory, "t10k-labels-idx1-ubyte"))
    return xtr, ytr.astype(np.int32), xte, yte.astype(np.int32)


# ----------------------------------------------------------------------------- TFDS

def load_tfds_arrays(name: str, split: str, data_dir: str | None = None,
                     label_key: str = "label") -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Reads a whole TFDS split through ``tfds.data_source`` (array_record; no TensorFlow)."""
    import tensorflow_datasets as tfds

    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # TFDS warns about missing dataset_info.json before failing; the error says it
    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception:  # TFDS raises several types (KeyError, FileNotFoundError, ...) for "not prepared"
        raise UserError(f"TFDS data set {name!r} ({split}) is not prepared under "
                        f"{data_dir or os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets')}: run "
                        f"`tfds build {name}` with network access first, or pass data_dir") from None
    finally:
        absl.setLevel(level)
    n = len(source)
    first = source[0]
    xs = np.empty((n,) + np.asarray(first["image"]).shape, dtype=np.uint8)
    ys = np.empty((n,), dtype=np.int32)
    for i in range(n):
        rec = source[i]
        xs[i] = np.asarray(rec["image"])
        ys[i] = int(rec[label_key])
    names = tuple(source.dataset_info.features[label_key].names)
    return xs, ys, names


# ----------------------------------------------------------------------------- loaders

def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (images (1797, 8, 8) float64 in [0, 16], labels (1797,)): the file
    ``sklearn/datasets/data/digits.csv.gz`` that ``sklearn.datasets.load_digits`` reads, read the same
    way (64 pixel columns, then the label) without importing scikit-learn (which imports SciPy: about
    2 s of a command's start); ``load_digits`` itself when the file is not where scikit-learn keeps it."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    path = Path(next(iter(spec.submodule_search_locations or ())), "datasets", "data", "digits.csv.gz") if spec else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        d = load_digits()
        return d.images, d.target
    data = np.loadtxt(path, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


def _load_digits(seed: int) -> Dataset:
    images, target = digits_arrays()
    x = (images.astype(np.float32) / 16.0)[..., None]
    y = target.astype(np.int32)
    tr, va, po, te = four_way_split(x, y, seed)
    return Dataset("digits", tuple(str(i) for i in range(10)), tr, va, po, te)


def compose_multilabel(split: Split, n: int, rng: np.random.Generator, num_classes: int = 10,
                       min_items: int = 2, max_items: int = 3) -> Split:
    """Places 2-3 digits of distinct classes from ``split`` into the quadrants of a 2x2 canvas.

    The multi-hot target lists the classes present. Synthetic, built on real digits.
    """
    h, w, c = split.x.shape[1:]
    xs = np.zeros((n, 2 * h, 2 * w, c), np.float32)
    ys = np.zeros((n, num_classes), np.float32)
    by_class = [np.flatnonzero(split.y == k) for k in range(num_classes)]
    present = [k for k in range(num_classes) if len(by_class[k])]
    for i in range(n):
        m = rng.integers(min_items, max_items + 1)
        classes = rng.choice(present, size=m, replace=False)
        slots = rng.choice(4, size=m, replace=False)
        for k, s in zip(classes, slots):
            j = rng.choice(by_class[k])
            r0, c0 = (s // 2) * h, (s % 2) * w
            xs[i, r0:r0 + h, c0:c0 + w] = split.x[j]
            ys[i, k] = 1.0
    return Split(xs, ys)


def _load_digits_multilabel(seed: int) -> Dataset:
    base = _load_digits(seed)
    rng = np.random.default_rng(seed + 10_000)
    parts = [compose_multilabel(base.split(s), 2 * len(base.split(s)), rng) for s in SPLITS]
    return Dataset("digits_multilabel", base.class_names, *parts, multilabel=True)


def _load_fashion_mnist(seed: int, data_dir: str | None) -> Dataset:
    d = find_fashion_mnist_dir(data_dir)
    if d is not None:
        xtr, ytr, xte, yte = load_idx_dir(d)
        names = FASHION_MNIST_CLASSES
    else:
        xtr, ytr, names = load_tfds_arrays("fashion_mnist", "train", data_dir)
        xte, yte, _ = load_tfds_arrays("fashion_mnist", "test", data_dir)
    tr, va, po, te = four_way_split(_as_images(xtr), ytr, seed, _as_images(xte), yte)
    return Dataset("fashion_mnist", tuple(names), tr, va, po, te)


def _load_tfds(name: str, seed: int, data_dir: str | None) -> Dataset:
    xtr, ytr, names = load_tfds_arrays(name, "train", data_dir)
    xte, yte, _ = load_tfds_arrays(name, "test", data_dir)
    tr, va, po, te = four_way_split(_as_images(xtr), ytr, seed, _as_images(xte), yte)
    return Dataset(name, tuple(names), tr, va, po, te)


def _load_npz(path: str, seed: int) -> Dataset:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"npz file not found: {p}")
    try:
        z = np.load(p, allow_pickle=False)
        keys = set(z.files)
    except Exception as e:
        raise UserError(f"cannot read npz file {p}: {e}") from None
    if {"x_train", "y_train"} <= keys:
        x, y = z["x_train"], z["y_train"]
    elif {"x", "y"} <= keys:
        x, y = z["x"], z["y"]
    else:
        raise UserError(f"{p} must hold arrays x_train, y_train (and optionally x_test, y_test) or x, y")
    multilabel = y.ndim == 2
    if x.shape[0] == 0 or y.size == 0:
        raise UserError(f"{p} holds no examples")
    if not multilabel:
        y = whole_labels(y, str(p))
    k = y.shape[1] if multilabel else int(y.max()) + 1
    if "class_names" in keys:
        names = tuple(str(s) for s in z["class_names"])
        k = len(names)
    else:
        names = tuple(str(i) for i in range(k))
    x = _as_images(x)
    y = y.astype(np.float32 if multilabel else np.int32)
    check_arrays(x, y, k, multilabel, str(p))
    if "x_test" in keys and "y_test" in keys:
        xte = _as_images(z["x_test"])
        yte = z["y_test"] if multilabel else whole_labels(z["y_test"], f"{p} (test)")
        yte = yte.astype(y.dtype)
        check_arrays(xte, yte, k, multilabel, f"{p} (test)")
        parts = four_way_split(x, y, seed, xte, yte)
    else:
        parts = four_way_split(x, y, seed)
    return Dataset(f"npz:{p}", names, *parts, multilabel=multilabel)


def map_batched(fn: Callable, inputs, batch_size: int = 512):
    """``fn`` over ``inputs`` (an array or a pytree of arrays with a common first axis) in fixed-size
    chunks, the last one zero-padded so a jitted ``fn`` compiles once; the outputs (a pytree of arrays
    with the same first axis) are trimmed and concatenated as NumPy arrays."""
    import jax  # here: loading a data set needs no jax (the CLI's quick commands)

    leaves, treedef = jax.tree_util.tree_flatten(inputs)
    n = leaves[0].shape[0]
    if n == 0:
        raise UserError("cannot predict on an empty set of inputs")
    bs = min(batch_size, n)
    outs = []
    for i in range(0, n, bs):
        chunk = [np.asarray(v[i:i + bs]) for v in leaves]
        pad = bs - chunk[0].shape[0]
        chunk = [np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)]) if pad else v for v in chunk]
        out = fn(jax.tree_util.tree_unflatten(treedef, chunk))
        outs.append(jax.tree_util.tree_map(lambda o: np.asarray(o)[:bs - pad], out))
    return jax.tree_util.tree_map(lambda *parts: np.concatenate(parts), *outs)


DATASETS = ("digits", "digits_multilabel", "fashion_mnist", "mnist", "cifar10", "cifar100", "npz:PATH")


def load_dataset(name: str, seed: int = 0, data_dir: str | None = None,
                 train_limit: int | None = None, imbalance: str | ImbalanceSpec | None = None) -> Dataset:
    """Loads a data set by name with its deterministic 4-way split for ``seed``.

    ``train_limit`` keeps a stratified subset of that many training examples (for CPU runs).
    ``imbalance`` (e.g. ``"longtail(100)"``, see :mod:`repair_jax.imbalance`) reduces the training split to a
    level of distribution bias of Pradhan et al. 2020 (:func:`~repair_jax.imbalance.make_imbalanced`); the
    data set is then named ``NAME:LEVEL``.
    """
    if imbalance is not None:
        return make_imbalanced(load_dataset(name, seed, data_dir, train_limit), imbalance, seed)
    if name == "digits":
        ds = _load_digits(seed)
    elif name == "digits_multilabel":
        ds = _load_digits_multilabel(seed)
    elif name == "fashion_mnist":
        ds = _load_fashion_mnist(seed, data_dir)
    elif name in ("mnist", "cifar10", "cifar100"):
        ds = _load_tfds(name, seed, data_dir)
    elif name.startswith("npz:"):
        ds = _load_npz(name[4:], seed)
    else:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    for s in SPLITS:
        sp = ds.split(s)
        check_arrays(sp.x, sp.y, ds.num_classes, ds.multilabel, f"{ds.name} {s} split")
    total = sum(len(ds.split(s)) for s in SPLITS)
    for s in ("train", "val", "test"):  # training validates on val and reports on test (the pool may be empty)
        if len(ds.split(s)) == 0:
            raise UserError(f"{ds.name}: the {s} split is empty ({total} examples of {ds.num_classes} classes, split "
                            f"{', '.join(f'{t} {len(ds.split(t))}' for t in SPLITS)} by seed {seed}); give more "
                            "examples per class")
    if train_limit is not None and train_limit < ds.num_classes:
        raise UserError(f"train limit {train_limit} is smaller than the {ds.num_classes} classes of {ds.name}: "
                        "a stratified subset needs at least one example per class")
    if train_limit is not None and train_limit < len(ds.train):
        keep, _ = stratified_partition(ds.train.y, [train_limit / len(ds.train), 1 - train_limit / len(ds.train)], seed)
        ds = dataclasses.replace(ds, train=ds.train.subset(keep))
    return ds


# ----------------------------------------------------------------------------- batching

def shuffled_batches(n: int, batch_size: int, rng: np.random.Generator,
                     drop_last: bool = True) -> Iterator[np.ndarray]:
    """One epoch of index batches over 0..n-1 in a fresh random order."""
    if batch_size <= 0:
        raise UserError(f"batch size must be positive, got {batch_size}")
    perm = rng.permutation(n)
    stop = n - n % batch_size if (drop_last and n >= batch_size) else n
    for i in range(0, stop, batch_size):
        yield perm[i:i + batch_size]


def example_weights(labels: np.ndarray, class_weights: np.ndarray) -> np.ndarray:
    """Per-example sampling weight from per-class weights; multi-label: max over present classes."""
    class_weights = np.asarray(class_weights, dtype=np.float64)
    if labels.ndim == 1:
        return class_weights[labels]
    return np.max(np.where(labels > 0, class_weights[None, :], 0.0), axis=1)


def weighted_batches(labels: np.ndarray, class_weights: np.ndarray, batch_size: int,
                     num_batches: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """``num_batches`` index batches drawn with replacement, P(i) proportional to its class weight.

    A class subset sampler is this with weight 1 on the subset and 0 elsewhere
    (see :func:`class_subset_batches`).
    """
    w = example_weights(labels, class_weights)
    if np.any(w < 0) or w.sum() <= 0:
        raise UserError("class weights must be non-negative and select at least one example")
    p = w / w.sum()
    for _ in range(num_batches):
        yield rng.choice(len(labels), size=batch_size, replace=True, p=p)


def class_subset_batches(labels: np.ndarray, classes: Sequence[int], num_classes: int, batch_size: int,
                         num_batches: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Batches drawn only from examples of ``classes`` (uniform over those examples)."""
    cw = np.zeros(num_classes)
    cw[list(classes)] = 1.0
    return weighted_batches(labels, cw, batch_size, num_batches, rng)
