"""Synthetic variants built on real data for the model-guiding evaluation (Adebayo 2022,
Sec. 5.3), each named as such:

- label noise: 20% of training labels switched to another class ("Detecting & Fixing Noisy
  Training Labels"), by :func:`repair_jax.data.flip_labels`;
- :func:`add_tag`: a small bright square patch (the "image tag" spurious signal), placed on a chosen
  fraction of one class in training and at random at test;
- :func:`class_attribute_table`: the class-level attribute tables in ``attributes/`` (CUB-style),
  giving per-sample concept annotations from the class names;
- :func:`audit_from_split`: an annotated audit set (labels, concepts, importance, confidence);
- :func:`credit_table`: a synthetic credit-limit table (income, asset, age, credit score, a
  sensitive attribute) with injected label noise and a spurious dependence (the lending example).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from repair_jax.errors import UserError
from repair_jax.guiding.formats import AuditSet, ConceptLibrary

ATTRIBUTES = Path(__file__).parent / "attributes"
TAG_CONCEPT = "tag"


def add_tag(x: np.ndarray, mask: np.ndarray, size: int = 4, value: float = 1.0) -> np.ndarray:
    """Copies ``x`` (N, H, W, C) and stamps a ``size`` x ``size`` square at the top-left on ``mask``."""
    x = np.array(x, copy=True)
    x[np.asarray(mask), 1:1 + size, 1:1 + size, :] = value
    return x


def tag_mask_for_class(y: np.ndarray, cls: int, fraction: float, seed: int, other_fraction: float = 0.0):
    """Which training points carry the tag: ``fraction`` of class ``cls``, ``other_fraction`` of the rest."""
    rng = np.random.default_rng(seed)
    u = rng.uniform(size=len(y))
    return np.where(np.asarray(y) == cls, u < fraction, u < other_fraction)


def class_attribute_table(dataset: str, class_names) -> tuple[tuple[str, ...], np.ndarray]:
    """(attribute names, (K, d) 0/1 table) from ``attributes/<dataset>.json``."""
    path = ATTRIBUTES / f"{dataset}.json"
    if not path.is_file():
        raise UserError(f"no class attribute table for {dataset!r}; tables: "
                        f"{', '.join(p.stem for p in ATTRIBUTES.glob('*.json'))}")
    spec = json.loads(path.read_text())
    names = tuple(spec["attributes"])
    table = np.zeros((len(class_names), len(names)), np.float32)
    for k, c in enumerate(class_names):
        for a in spec["classes"][str(c)]:
            table[k, names.index(a)] = 1.0
    return names, table


def concept_library(dataset: str, class_names, with_tag: bool = False) -> ConceptLibrary:
    names, _ = class_attribute_table(dataset, class_names)
    names = names + ((TAG_CONCEPT,) if with_tag else ())
    return ConceptLibrary(names, ("binary",) * len(names))


def audit_from_split(x, y, dataset: str, class_names, tag_mask=None, confidence: float = 1.0) -> AuditSet:
    """An audit set annotated from the class attribute table: a = attributes of the (clean) class
    (+ tag presence), s = +1 for the class's attributes and 0 for the tag (not relevant), c = confidence."""
    _, table = class_attribute_table(dataset, class_names)
    a = table[np.asarray(y)]
    s = a.copy()
    if tag_mask is not None:
        a = np.concatenate([a, np.asarray(tag_mask, np.float32)[:, None]], 1)
        s = np.concatenate([s, np.zeros((len(y), 1), np.float32)], 1)
    return AuditSet(np.asarray(x, np.float32), np.asarray(y, np.int32), a, s,
                    np.full(len(y), confidence, np.float32), "classification")


CREDIT_FEATURES = ("income", "asset", "age", "credit_score", "gender")
# the standard deviation of credit_table's true limit, the RMSE of the best constant prediction:
# Var(0.6 income + 0.3 asset + 0.4 credit_score + 0.1 e) = 0.36 + 0.09 + 2 x 0.6 x 0.3 x 0.5 + 0.16 + 0.01 = 0.80
# (income, asset, credit_score and e of unit variance, Cov(income, asset) = 0.5, credit_score independent of both)
CREDIT_LIMIT_STD = 0.8 ** 0.5


def credit_table(n: int, seed: int, noise_fraction: float = 0.1, spurious: float = 1.0):
    """Synthetic credit-limit table (standardised units): features (n, 5) in CREDIT_FEATURES order,
    the true limit 0.6 income + 0.3 asset + 0.4 credit_score, and the observed training label, which
    subtracts ``spurious`` for gender = 1 (a spurious dependence) and adds +-1.5 to ``noise_fraction``
    of the rows (label noise). Returns (X, y_true, y_observed, noisy mask)."""
    rng = np.random.default_rng(seed)
    income = rng.normal(size=n)
    asset = 0.5 * income + np.sqrt(0.75) * rng.normal(size=n)
    age = rng.normal(size=n)
    score = 0.3 * age + np.sqrt(0.91) * rng.normal(size=n)
    gender = (rng.uniform(size=n) < 0.3).astype(np.float64)
    X = np.stack([income, asset, age, score, gender], 1).astype(np.float32)
    y_true = (0.6 * income + 0.3 * asset + 0.4 * score + 0.1 * rng.normal(size=n)).astype(np.float32)
    y_obs = y_true - spurious * gender
    noisy = rng.uniform(size=n) < noise_fraction
    y_obs = y_obs + noisy * rng.choice([-1.5, 1.5], n)
    return X, y_true, y_obs.astype(np.float32), noisy
