"""The one results writer: atomic JSON / bytes files, append-only JSONL, resumable logs, atomic directories.

A result file is either absent or complete: every writer writes to a temporary file in the same
directory and renames it into place (``os.replace`` is atomic on POSIX). Files and directories get
the permissions of the user's umask (0666 / 0777 masked), like any file ``open`` creates.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Hashable, Iterator

import numpy as np

from repair_jax.errors import UserError


def to_jsonable(obj: Any) -> Any:
    """Converts numpy / JAX scalars and arrays (recursively) into plain JSON types."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "__array__") and not isinstance(obj, (str, bytes)):
        arr = np.asarray(obj)
        return arr.item() if arr.ndim == 0 else arr.tolist()
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def umask_mode(directory: bool = False) -> int:
    """The mode ``open`` / ``mkdir`` would give a new file (0666) or directory (0777) under the umask."""
    return (0o777 if directory else 0o666) & ~_umask()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, umask_mode())  # mkstemp creates 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Writes ``obj`` as indented JSON, atomically."""
    write_bytes_atomic(path, (json.dumps(to_jsonable(obj), indent=2) + "\n").encode())


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{what} is not valid JSON: {path} ({e.msg if hasattr(e, 'msg') else e})") from None


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Appends one complete line. A kill leaves at most a partial last line: ``read_jsonl`` ignores
    it and the next append first cuts it, so the new record starts a line of its own."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(to_jsonable(record)) + "\n").encode()
    with open(path, "a+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size:
            f.seek(size - 1)
            if f.read(1) != b"\n":  # torn tail from a kill: drop it
                f.seek(0)
                data = f.read()
                f.truncate(data.rfind(b"\n") + 1)
        f.seek(0, os.SEEK_END)
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Reads the complete lines of a JSONL file (a torn last line from a kill is ignored)."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def safe_filename(label: str) -> str:
    """A label as a file-name stem that needs no shell quoting: ``"w-os(0.1)"`` -> ``"w-os_0.1"``.
    Letters, digits, ``.``, ``-`` and ``_`` are kept; every other run of characters becomes one ``_``."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(label)).strip("_")
    return stem or "_"


def check_keeps_inputs(out: str | os.PathLike, inputs, flag: str = "--out") -> None:
    """Refuses an output path that is one of ``inputs`` or holds one of them (replacing it would
    delete the input, even with --force)."""
    o = Path(out).resolve()
    for inp in inputs:
        i = Path(inp).resolve()
        if i == o or o in i.parents:
            raise UserError(f"{flag} {out} would replace the input {inp}; choose another output directory")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yields a temporary sibling directory that is renamed to ``path`` only if the block succeeds.

    Without ``overwrite`` an existing non-empty ``path`` is an error; with it, the old directory is
    replaced only after the new one is complete. Parent directories it creates are removed again when
    the block fails (a refused input leaves no empty directory behind).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"output path exists and is not a directory: {path}")
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise UserError(f"output directory exists and is not empty: {path} (pass --force to replace it)")
    created = [p for p in (path.parent, *path.parent.parents) if not p.exists()]  # deepest first
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        os.chmod(tmp, umask_mode(directory=True))  # mkdtemp creates 0700
        yield tmp
    except BaseException:
        if "tmp" in locals():
            shutil.rmtree(tmp, ignore_errors=True)
        remove_empty_dirs(created)
        raise
    if path.exists():
        old = path.with_name(f".{path.name}.old.tmp")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def remove_empty_dirs(dirs) -> None:
    """Removes each of ``dirs`` (deepest first) that is empty; stops at the first that is not."""
    for d in dirs:
        try:
            os.rmdir(d)
        except OSError:
            return


# ----------------------------------------------------------------------------- resumable logs

RESUMABLE_HEADER = "resumable_config"


def first_difference(old: Any, new: Any, prefix: str = "") -> str | None:
    """The dotted name of the first field where two JSON values differ (``None`` if equal)."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            if k not in old or k not in new:
                return f"{prefix}{k}"
            d = first_difference(old[k], new[k], f"{prefix}{k}.")
            if d is not None:
                return d
        return None
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            d = first_difference(a, b, f"{prefix}{i}.")
            if d is not None:
                return d
        return None
    return None if old == new else (prefix[:-1] if prefix else "(value)")


def _lookup(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if isinstance(obj, dict):
            obj = obj.get(part, "<absent>")
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            return "<absent>"
    return obj


def cut_torn_tail(path: str | os.PathLike) -> None:
    """Cuts a partial last line (left by a kill mid-append) off a JSONL file, in place."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, "r+b") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


class ResumableJsonl:
    """An append-only results log bound to the whole configuration that produced it.

    Line 1 is ``{"resumable_config": CONFIG}``; every further line is one finished record. Opening an
    existing log with a different configuration is a :class:`UserError` naming the first differing
    field (a resumed sweep never reports another configuration's numbers); a log without that line
    (written by an older version) is refused too. ``force=True`` starts the log afresh. A torn last
    line from a kill is cut when the log is opened. ``key(record)`` identifies a run inside the sweep.

        log = ResumableJsonl(out / "results.jsonl", config, key=lambda r: (r["method"], r["rho"], r["seed"]))
        if k not in log: log.append(run(...))
    """

    def __init__(self, path: str | os.PathLike, config: dict, key: Callable[[dict], Hashable],
                 force: bool = False, upgrade: Callable[[Any, Any], Any] | None = None):
        self.path = Path(path)
        self.config = to_jsonable(config)
        self.key = key
        self.upgrade = upgrade  # (old header, new header) -> the old header in today's terms, before comparing
        self.records: dict[Hashable, dict] = {}
        if self.path.exists() and self.path.is_dir():
            raise UserError(f"results log path is a directory: {self.path}")
        if self.path.exists() and not force:
            self._resume()
        else:
            write_text(self.path, json.dumps({RESUMABLE_HEADER: self.config}) + "\n")

    def _resume(self) -> None:
        cut_torn_tail(self.path)
        lines = read_jsonl(self.path)
        if not lines or RESUMABLE_HEADER not in lines[0]:
            raise UserError(f"{self.path} was not written with its configuration (an older version or "
                            "another program): choose another output directory or pass --force to restart it")
        old = lines[0][RESUMABLE_HEADER]
        if self.upgrade is not None:
            old = self.upgrade(old, self.config)
        field = first_difference(old, self.config)
        if field is not None:
            raise UserError(f"{self.path} holds results of a different configuration: {field} is "
                            f"{_lookup(old, field)!r} there and {_lookup(self.config, field)!r} now; choose "
                            "another output directory or pass --force to restart it")
        for rec in lines[1:]:
            self.records[self.key(rec)] = rec

    def __contains__(self, key: Hashable) -> bool:
        return key in self.records

    def __getitem__(self, key: Hashable) -> dict:
        return self.records[key]

    def __len__(self) -> int:
        return len(self.records)

    def values(self) -> list[dict]:
        return list(self.records.values())

    def append(self, record: dict) -> dict:
        """Appends one finished record (durably) and returns it as stored (plain JSON types)."""
        rec = to_jsonable(record)
        append_jsonl(self.path, rec)
        self.records[self.key(rec)] = rec
        return rec


def _nearest_existing(path: Path) -> Path:
    for p in (path, *path.parents):
        if p.exists():
            return p
    return Path(".")


def check_output_dir(out: str | os.PathLike, force: bool, kind: str = "dir", inputs=(),
                     label: str = "output") -> None:
    """Checks an output directory before any work (``label`` names it in messages): not under a file, not an
    existing file, not one of (or a directory holding) ``inputs``, an existing non-empty directory of kind
    ``"dir"`` only with ``force``, and a place where this user can create files."""
    path = Path(out)
    base = _nearest_existing(path)
    if base != path and not base.is_dir():
        raise UserError(f"{label} {out} is under {base}, which is a file")
    if path.exists() and not path.is_dir():
        raise UserError(f"{label} {out} exists and is a file; a directory is expected")
    if kind == "dir" and path.is_dir() and any(path.iterdir()) and not force:
        raise UserError(f"{label} {out} exists and is not empty; pass --force to replace it")
    check_keeps_inputs(path, inputs, flag=label)
    probe_in = base if (kind == "resumable" or base != path) else _nearest_existing(path.parent)
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".repair-jax-probe.", dir=probe_in))
    except OSError as e:
        raise UserError(f"{label} {out}: cannot create files in {probe_in} ({e.strerror})") from None
