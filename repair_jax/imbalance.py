"""Imbalance builders for a training split: balanced, linear and long-tailed class counts.

Pradhan et al. 2020, Sec. 3 "Datasets" (Fig. 1): three levels of distribution bias (Balanced,
Linear Imbalance, Long-Tailed), the long tail built as in Cui et al. (2019), ``n_i = n_max * lambda^i``.
Only the training split is reduced; validation, repair pool and test stay as loaded (balanced).

A level is written as a spec string: ``balanced``, ``linear(R)``, ``longtail(R)`` (R = imbalance
ratio n_max / n_min >= 1) or ``longtail(lambda=L)`` with L in (0, 1]; an optional ``order=random``
(or ``order=3-1-0-...``) assigns the counts to a permuted class order. It is a data-set option:
``load_dataset("fashion_mnist", imbalance="longtail(100)")``. The reduced data set is named ``BASE:SPEC``
(e.g. ``fashion_mnist:longtail(100)``), and a :class:`~repair_jax.train.TrainConfig` whose ``dataset`` is such a
name loads it again (:func:`split_imbalance_name`), so ``run.json`` records the level.
"""

from __future__ import annotations

import dataclasses
import math
import re

from typing import TYPE_CHECKING

import numpy as np

from repair_jax.errors import UserError

if TYPE_CHECKING:  # annotations only: repair_jax.data builds on this module
    from repair_jax.data import Dataset

_SPEC = re.compile(r"^\s*(balanced|linear|longtail)\s*(?:\((.*)\))?\s*$")


@dataclasses.dataclass(frozen=True)
class ImbalanceSpec:
    """A level of distribution bias. ``ratio`` = n_max / n_min; ``order`` None (class index order),
    ``"random"`` (a permutation drawn from the seed) or a tuple of class indices, head first."""

    kind: str = "balanced"
    ratio: float = 1.0
    order: str | tuple[int, ...] | None = None

    def __str__(self) -> str:
        args = [] if self.kind == "balanced" else [f"{self.ratio:g}"]
        if self.order is not None:
            order = self.order if isinstance(self.order, str) else "-".join(map(str, self.order))
            args.append(f"order={order}")
        return f"{self.kind}({','.join(args)})" if args else self.kind


def _parse_order(value: str) -> str | tuple[int, ...]:
    if value == "random":
        return "random"
    try:
        return tuple(int(v) for v in value.split("-"))
    except ValueError:
        raise UserError(f"imbalance order must be 'random' or class indices joined by '-', got {value!r}") from None


def _parse_ratio(kind: str, key: str | None, value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise UserError(f"imbalance {kind}: {value!r} is not a number") from None
    if key == "lambda":
        if kind != "longtail":
            raise UserError(f"lambda applies to longtail only, not {kind}")
        if not 0 < v <= 1:
            raise UserError(f"longtail lambda must be in (0, 1], got {v:g}")
        return v  # converted to a ratio once the number of classes is known
    if not (v >= 1 and math.isfinite(v)):
        raise UserError(f"imbalance ratio must be a finite number >= 1, got {v:g}")
    return v


def parse_imbalance(spec: str | ImbalanceSpec) -> ImbalanceSpec:
    """``"longtail(100)"`` / ``"linear(10,order=random)"`` / ``"balanced"`` -> :class:`ImbalanceSpec`.

    ``longtail(lambda=L)`` is kept as ``ratio = -L`` until the class count is known (see
    :func:`class_counts`). Bad specs raise :class:`UserError`.
    """
    if isinstance(spec, ImbalanceSpec):
        return spec
    m = _SPEC.match(str(spec))
    if m is None:
        raise UserError(f"bad imbalance spec {spec!r}; use balanced, linear(RATIO) or longtail(RATIO)")
    kind, inner = m.group(1), (m.group(2) or "").strip()
    ratio, order = 1.0, None
    for i, part in enumerate(p.strip() for p in inner.split(",") if p.strip()):
        key, _, value = part.rpartition("=")
        key = key.strip() or None
        if key == "order":
            order = _parse_order(value.strip())
        elif key in (None, "ratio", "lambda") and i == 0:
            if kind == "balanced":
                raise UserError("balanced takes no ratio")
            r = _parse_ratio(kind, key, value.strip())
            ratio = -r if key == "lambda" else r
        else:
            raise UserError(f"bad imbalance argument {part!r} in {spec!r}")
    if kind != "balanced" and ratio == 1.0 and not inner:
        raise UserError(f"{kind} needs an imbalance ratio, e.g. {kind}(10)")
    return ImbalanceSpec(kind, ratio, order)


def longtail_counts(n_max: int, num_classes: int, ratio: float) -> np.ndarray:
    """Cui et al. (2019), cited in Pradhan et al. 2020, Sec. 3 "Datasets": ``n_i = floor(n_max * lambda^i)``,
    ``lambda = ratio^(-1 / (K - 1))`` so that n_{K-1} = n_max / ratio. (K,) int64."""
    lam = ratio ** (-1.0 / max(num_classes - 1, 1))
    return np.floor(n_max * lam ** np.arange(num_classes) + 1e-9).astype(np.int64)


def linear_counts(n_max: int, num_classes: int, ratio: float) -> np.ndarray:
    """Pradhan et al. 2020, Fig. 1 "Linear Imbalance": counts fall linearly from ``n_max`` (head, class 0) to
    ``n_max / ratio`` (tail, class K-1). (K,) int64."""
    steps = np.arange(num_classes) / max(num_classes - 1, 1)
    return np.floor(n_max - steps * (n_max - n_max / ratio) + 1e-9).astype(np.int64)


def class_counts(spec: str | ImbalanceSpec, n_max: int, num_classes: int) -> np.ndarray:
    """Training examples per position (head first) of the level ``spec``; every count >= 1."""
    spec = parse_imbalance(spec)
    if spec.kind == "balanced":
        counts = np.full(num_classes, n_max, np.int64)
    else:
        ratio = spec.ratio
        if ratio < 0:  # longtail(lambda=L): ratio = L^-(K-1)
            ratio = (-ratio) ** (-(num_classes - 1))
        fn = longtail_counts if spec.kind == "longtail" else linear_counts
        counts = fn(n_max, num_classes, ratio)
    if counts.min() < 1:
        raise UserError(f"{spec} leaves a class with no training example (n_max = {n_max}); lower the ratio")
    return counts


def class_order(spec: ImbalanceSpec, num_classes: int, seed: int) -> np.ndarray:
    """The classes from head to tail: index order, a seeded permutation, or the given tuple."""
    if spec.order is None:
        return np.arange(num_classes)
    if spec.order == "random":
        return np.random.default_rng([seed, 3]).permutation(num_classes)
    order = np.asarray(spec.order)
    if sorted(order.tolist()) != list(range(num_classes)):
        raise UserError(f"imbalance order must list each of the {num_classes} classes once, got {spec.order}")
    return order


def imbalanced_indices(labels: np.ndarray, num_classes: int, spec: str | ImbalanceSpec, seed: int,
                       n_max: int | None = None) -> np.ndarray:
    """Sorted indices of a subset of ``labels`` (N,) with the class counts of ``spec``.

    ``n_max`` defaults to the smallest class size present (every class can then supply its count).
    Which examples are kept is drawn from ``seed``; the same seed gives the same subset.
    """
    spec = parse_imbalance(spec)
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise UserError("imbalance builders need single-label targets (N,)")
    available = np.bincount(labels, minlength=num_classes)
    if n_max is None:
        n_max = int(available.min())
    counts = class_counts(spec, n_max, num_classes)
    order = class_order(spec, num_classes, seed)
    rng = np.random.default_rng([seed, 1])
    keep = []
    for position, c in enumerate(order):
        if counts[position] > available[c]:
            raise UserError(f"class {c} has {available[c]} training examples, {spec} needs {counts[position]}")
        keep.append(rng.permutation(np.flatnonzero(labels == c))[:counts[position]])
    return np.sort(np.concatenate(keep))


def make_imbalanced(dataset: Dataset, spec: str | ImbalanceSpec, seed: int = 0,
                    n_max: int | None = None) -> Dataset:
    """``dataset`` with its training split reduced to the level ``spec``; named ``NAME:SPEC``."""
    spec = parse_imbalance(spec)
    if dataset.multilabel:
        raise UserError(f"{dataset.name} is multi-label; imbalance levels need single-label data")
    keep = imbalanced_indices(dataset.train.y, dataset.num_classes, spec, seed, n_max)
    return dataclasses.replace(dataset, name=f"{dataset.name}:{spec}", train=dataset.train.subset(keep))


def split_imbalance_name(name: str) -> tuple[str, ImbalanceSpec | None]:
    """``"fashion_mnist:longtail(100)"`` -> ``("fashion_mnist", spec)``; a name with no level
    suffix -> ``(name, None)``. :meth:`repair_jax.train.TrainConfig.load_dataset` calls it, so a run's
    recorded ``BASE:SPEC`` name loads the same data again."""
    base, sep, suffix = name.rpartition(":")
    if sep and re.fullmatch(r"\s*(balanced|linear|longtail)\s*(\(.*\))?\s*", suffix):
        return base, parse_imbalance(suffix)
    return name, None
