"""Fingerprints that bind a resumable results log to the model and data it was computed from.

A resumed sweep must never report another model's or data set's numbers (issue 12, point 2): the
header of its :class:`repair_jax.io.ResumableJsonl` holds these fingerprints, so a different run or
data split in an old output directory is refused with the name of the differing field.
"""

from __future__ import annotations

import hashlib

import jax
import numpy as np


def array_sha256(*arrays) -> str:
    """SHA-256 over the shapes, dtypes and bytes of ``arrays`` (in order)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def model_identity(model) -> dict:
    """``{"module", "variables_sha256"}`` of a :class:`~repair_jax.classifier.Classifier`: the model's
    class name and every weight's name, shape and bytes.

    (The module's repr is not used: it may hold function addresses that differ between processes.)
    """
    leaves = jax.tree_util.tree_leaves_with_path(model.variables)
    names = "".join(jax.tree_util.keystr(p) for p, _ in leaves)
    return {"module": model.apply.name,
            "variables_sha256": hashlib.sha256(names.encode() + array_sha256(*[v for _, v in leaves]).encode())
            .hexdigest()}


def dataset_identity(dataset, splits=("train", "val", "pool", "test")) -> dict:
    """Name, classes and, per split, its size and the SHA-256 of its inputs and labels."""
    out = {"name": dataset.name, "class_names": list(dataset.class_names), "multilabel": bool(dataset.multilabel)}
    for s in splits:
        sp = dataset.split(s)
        out[s] = {"size": len(sp), "sha256": array_sha256(sp.x, sp.y)}
    return out
