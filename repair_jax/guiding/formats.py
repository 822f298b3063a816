"""The concept library and the annotated audit set (Adebayo 2022, Sec. 5.2.1).

Concept library: ``concepts.json``::

    {"format": "repair_jax.concepts/1",
     "concepts": [{"name": "has_sleeves", "type": "binary"}, {"name": "income", "type": "scalar"}]}

Audit set: ``audit.json`` (metadata) next to ``audit.npz`` (arrays)::

    {"format": "repair_jax.audit/1", "arrays": "audit.npz", "task": "classification" | "regression",
     "concepts": ["has_sleeves", ...]}

``audit.npz`` holds ``x`` (m, ...) the inputs, ``y`` (m,) the expert labels (int class indices or
float targets), ``a`` (m, d) the concept values, ``s`` (m, d) the concept importance in {-1, 0, 1},
``c`` (m,) the expert's confidence in [0, 1]. Columns of ``a``/``s`` follow ``concepts`` of
audit.json, which must all be in the library; they are reordered to the library's order on load.
Every malformed file is a :class:`~repair_jax.errors.UserError` with one clear line.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from repair_jax.errors import UserError
from repair_jax.io import read_json, write_bytes_atomic, write_json

CONCEPTS_FORMAT = "repair_jax.concepts/1"
AUDIT_FORMAT = "repair_jax.audit/1"
CONCEPT_TYPES = ("binary", "scalar")


@dataclasses.dataclass(frozen=True)
class ConceptLibrary:
    """The expert's concept library I = {i_1, ..., i_d}: names and types (binary or scalar)."""

    names: tuple[str, ...]
    types: tuple[str, ...]

    def __post_init__(self):
        if len(self.names) == 0:
            raise UserError("the concept library is empty")
        if len(self.names) != len(self.types):
            raise UserError(f"concept library: {len(self.names)} names but {len(self.types)} types")
        if len(set(self.names)) != len(self.names):
            dup = sorted({n for n in self.names if self.names.count(n) > 1})
            raise UserError(f"concept library: duplicate concept names {', '.join(dup)}")
        for n, t in zip(self.names, self.types):
            if not isinstance(n, str) or not n:
                raise UserError(f"concept library: bad concept name {n!r}")
            if t not in CONCEPT_TYPES:
                raise UserError(f"concept library: concept {n!r} has type {t!r}; use binary or scalar")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def binary(self) -> np.ndarray:
        """(d,) bool: which concepts are binary."""
        return np.array([t == "binary" for t in self.types])

    def to_json(self) -> dict:
        return {"format": CONCEPTS_FORMAT,
                "concepts": [{"name": n, "type": t} for n, t in zip(self.names, self.types)]}


@dataclasses.dataclass(frozen=True)
class AuditSet:
    """D_a = {x~_i, y~_i, a~_i, s~_i, c_i}_{i=1}^m (Adebayo 2022, Sec. 5.2.1 "Audit Data Annotation")."""

    x: np.ndarray   # (m, ...) inputs
    y: np.ndarray   # (m,) int32 class or float32 target
    a: np.ndarray   # (m, d) concept values
    s: np.ndarray   # (m, d) concept importance in {-1, 0, 1}
    c: np.ndarray   # (m,) confidence in [0, 1]
    task: str = "classification"

    def __len__(self) -> int:
        return int(self.x.shape[0])


def _fail(path, msg):
    raise UserError(f"{path}: {msg}")


def parse_concepts(obj, path="concept library") -> ConceptLibrary:
    if not isinstance(obj, dict) or obj.get("format") != CONCEPTS_FORMAT:
        _fail(path, f"not a concept library (expected \"format\": \"{CONCEPTS_FORMAT}\")")
    items = obj.get("concepts")
    if not isinstance(items, list) or not items:
        _fail(path, "\"concepts\" must be a non-empty list")
    names, types = [], []
    for k, it in enumerate(items):
        if not isinstance(it, dict) or "name" not in it or "type" not in it:
            _fail(path, f"concept #{k} must be an object with \"name\" and \"type\"")
        names.append(it["name"])
        types.append(it["type"])
    try:
        return ConceptLibrary(tuple(names), tuple(types))
    except UserError as e:
        _fail(path, str(e))


def load_concepts(path: str | Path) -> ConceptLibrary:
    """Reads and validates a concept library JSON file."""
    return parse_concepts(read_json(path, "concept library"), path)


def save_concepts(path: str | Path, library: ConceptLibrary) -> None:
    write_json(path, library.to_json())


def validate_audit(audit: AuditSet, library: ConceptLibrary, num_classes: int | None = None,
                   input_shape: tuple | None = None, where: str = "audit set") -> AuditSet:
    """Checks shapes, ranges and finiteness; returns the audit set with canonical dtypes."""
    m, d = len(audit.x), len(library)
    if m == 0:
        _fail(where, "the audit set is empty")
    if audit.task not in ("classification", "regression"):
        _fail(where, f"task must be classification or regression, got {audit.task!r}")
    for name, arr, shape in (("y", audit.y, (m,)), ("a", audit.a, (m, d)), ("s", audit.s, (m, d)),
                             ("c", audit.c, (m,))):
        if tuple(np.shape(arr)) != shape:
            _fail(where, f"array {name!r} has shape {tuple(np.shape(arr))}, expected {shape}")
        if not np.all(np.isfinite(np.asarray(arr, np.float64))):
            _fail(where, f"array {name!r} contains NaN or inf")
    if not np.all(np.isfinite(audit.x)):
        _fail(where, "inputs contain NaN or inf")
    if input_shape is not None and tuple(audit.x.shape[1:]) != tuple(input_shape):
        _fail(where, f"inputs have shape {tuple(audit.x.shape[1:])}, the model expects {tuple(input_shape)}")
    if not np.all(np.isin(audit.s, (-1, 0, 1))):
        _fail(where, "concept importance s must take values in {-1, 0, 1}")
    if np.any(audit.c < 0) or np.any(audit.c > 1):
        _fail(where, "confidence c must lie in [0, 1]")
    binary = library.binary
    if np.any(~np.isin(audit.a[:, binary], (0, 1))):
        _fail(where, "binary concepts must have values 0 or 1 in a")
    y = audit.y
    if audit.task == "classification":
        if not np.all(np.asarray(y) == np.round(y)):
            _fail(where, "classification labels y must be integers")
        y = np.asarray(y).astype(np.int32)
        if num_classes is not None and (y.min() < 0 or y.max() >= num_classes):
            _fail(where, f"labels y must lie in [0, {num_classes - 1}]")
    else:
        y = np.asarray(y, np.float32)
    return AuditSet(np.asarray(audit.x, np.float32), y, np.asarray(audit.a, np.float32),
                    np.asarray(audit.s, np.float32), np.asarray(audit.c, np.float32), audit.task)


def load_audit(path: str | Path, library: ConceptLibrary, num_classes: int | None = None,
               input_shape: tuple | None = None) -> AuditSet:
    """Reads audit.json + its npz, maps its concept columns onto ``library`` and validates."""
    path = Path(path)
    meta = read_json(path, "audit set")
    if not isinstance(meta, dict) or meta.get("format") != AUDIT_FORMAT:
        _fail(path, f"not an audit set (expected \"format\": \"{AUDIT_FORMAT}\")")
    concepts = meta.get("concepts")
    if not isinstance(concepts, list) or not all(isinstance(c, str) for c in concepts):
        _fail(path, "\"concepts\" must be a list of concept names")
    missing = [c for c in concepts if c not in library.names]
    if missing:
        _fail(path, f"concepts not in the concept library: {', '.join(missing)}")
    absent = [c for c in library.names if c not in concepts]
    if absent:
        _fail(path, f"the audit set does not annotate the library's concepts: {', '.join(absent)}")
    if len(set(concepts)) != len(concepts):
        _fail(path, "duplicate concept names in \"concepts\"")
    arrays = path.parent / str(meta.get("arrays", "audit.npz"))
    if not arrays.is_file():
        _fail(path, f"arrays file not found: {arrays}")
    try:
        with np.load(arrays, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as e:
        _fail(arrays, f"cannot read npz ({type(e).__name__}: {e})")
    lacking = [k for k in ("x", "y", "a", "s", "c") if k not in data]
    if lacking:
        _fail(arrays, f"missing arrays {', '.join(lacking)}")
    order = [concepts.index(n) for n in library.names]
    a, s = data["a"], data["s"]
    if a.ndim != 2 or s.ndim != 2 or a.shape[1] != len(concepts) or s.shape[1] != len(concepts):
        _fail(arrays, f"a and s must have shape (m, {len(concepts)}), got {a.shape} and {s.shape}")
    audit = AuditSet(data["x"], data["y"], a[:, order], s[:, order], data["c"],
                     meta.get("task", "classification"))
    return validate_audit(audit, library, num_classes, input_shape, where=str(path))


def save_audit(path: str | Path, audit: AuditSet, library: ConceptLibrary) -> None:
    """Writes audit.json and, beside it, audit.npz (both atomically)."""
    import io as _io

    path = Path(path)
    npz = path.with_suffix(".npz")
    buf = _io.BytesIO()
    np.savez_compressed(buf, x=audit.x, y=audit.y, a=audit.a, s=audit.s, c=audit.c)
    write_bytes_atomic(npz, buf.getvalue())
    write_json(path, {"format": AUDIT_FORMAT, "arrays": npz.name, "task": audit.task,
                      "concepts": list(library.names)})
