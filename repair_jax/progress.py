"""The one progress reporter for long work: a tqdm bar on a terminal, one line per finished item otherwise.

``progress(total, desc, enabled)`` returns an object with ``update(n=1, note="")``, ``add_total(n)``
and ``close()`` (also a context manager). On a terminal it is a tqdm bar; when stderr is not a
terminal (a log file, a CI job, a notebook's captured stream) it prints ``desc: i/total note`` once
per finished item, so a scripted run shows what it has done; ``enabled=False`` (``--no-progress``)
prints nothing.
"""

from __future__ import annotations

import sys
import time


class _Lines:
    """Plain-line progress: one line on stderr per finished item."""

    def __init__(self, total: int | None, desc: str, stream):
        self.total, self.desc, self.n, self.stream, self.t0 = total, desc, 0, stream, time.perf_counter()

    def update(self, n: int = 1, note: str = "") -> None:
        self.n += n
        total = f"/{self.total}" if self.total else ""
        extra = f" {note}" if note else ""
        self.stream.write(f"{self.desc}: {self.n}{total}{extra} ({time.perf_counter() - self.t0:.1f} s)\n")
        self.stream.flush()

    def add_total(self, n: int) -> None:
        self.total = (self.total or 0) + n

    def close(self) -> None:
        pass


class _Bar:
    def __init__(self, total: int | None, desc: str, leave: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, leave=leave)

    def update(self, n: int = 1, note: str = "") -> None:
        if note:
            self.bar.set_postfix_str(note, refresh=False)
        self.bar.update(n)

    def add_total(self, n: int) -> None:
        self.bar.total = (self.bar.total or 0) + n
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


class _Silent:
    def update(self, n: int = 1, note: str = "") -> None:
        pass

    def add_total(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class Progress:
    """Context-manager wrapper around one of the three reporters."""

    def __init__(self, impl):
        self._impl = impl

    def update(self, n: int = 1, note: str = "") -> None:
        self._impl.update(n, note)

    def add_total(self, n: int) -> None:
        self._impl.add_total(n)

    def close(self) -> None:
        self._impl.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(total: int | None = None, desc: str = "", enabled: bool = True, leave: bool = True,
             stream=None) -> Progress:
    """A progress reporter over ``total`` items (see the module docstring)."""
    stream = stream or sys.stderr
    if not enabled:
        return Progress(_Silent())
    if getattr(stream, "isatty", lambda: False)():
        return Progress(_Bar(total, desc, leave))
    return Progress(_Lines(total, desc, stream))


def track(iterable, desc: str = "", enabled: bool = True, total: int | None = None, leave: bool = True):
    """Iterates ``iterable`` reporting one step per item (the ``tqdm(iterable)`` idiom)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    with progress(total, desc, enabled, leave) as p:
        for item in iterable:
            yield item
            p.update()
