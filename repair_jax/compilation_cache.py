"""JAX's persistent compilation cache for the command line and the experiment driver.

A compiled XLA program is kept on disk, keyed by the computation, its shapes, the JAX version and the
device, so a repeated command (or a restarted notebook that calls :func:`enable_compilation_cache`)
loads it instead of compiling again. ``repair-jax`` and ``python -m experiments.run`` turn it on by
default; a library user opts in with :func:`enable_compilation_cache`.

- The directory: ``$REPAIR_JAX_COMPILATION_CACHE`` if set, else ``$XDG_CACHE_HOME/repair_jax/xla``
  (``~/.cache/repair_jax/xla``). ``REPAIR_JAX_COMPILATION_CACHE=off`` (or ``0`` or empty) disables it.
- JAX's own settings win: with ``JAX_COMPILATION_CACHE_DIR`` set (or ``jax_compilation_cache_dir``
  already configured in this process) nothing is changed.
- Every program is cached however quick its compilation (JAX's default caches only those over 1 s;
  a CLI run compiles dozens of small ones), unless ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` says
  otherwise. JAX does not bound the directory's size (its LRU eviction needs the ``filelock`` package,
  not a dependency): delete the directory to reclaim the space; it is rebuilt as programs compile.

Results are unchanged: a cache hit returns the executable the same computation compiles to.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV = "REPAIR_JAX_COMPILATION_CACHE"
OFF = ("", "0", "off", "false", "no")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "repair_jax" / "xla"


def cache_dir_setting() -> Path | None:
    """The directory :func:`enable_compilation_cache` uses, or ``None`` when disabled by ``$REPAIR_JAX_COMPILATION_CACHE``."""
    value = os.environ.get(ENV)
    if value is None:
        return default_cache_dir()
    return None if value.strip().lower() in OFF else Path(value).expanduser()


def enable_compilation_cache() -> Path | None:
    """Turns on JAX's persistent compilation cache (see the module docstring); returns the directory
    in use (``None``: disabled). A directory that cannot be created leaves the cache off, with one line
    on stderr: the command runs as before, only without reusing compiled programs."""
    import jax

    if os.environ.get("JAX_COMPILATION_CACHE_DIR") or jax.config.jax_compilation_cache_dir:
        return Path(jax.config.jax_compilation_cache_dir or os.environ["JAX_COMPILATION_CACHE_DIR"])
    path = cache_dir_setting()
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK):
            raise PermissionError("not writable")
    except OSError as e:
        sys.stderr.write(f"note: compilation cache off: cannot use {path} ({e.strerror or e}); set {ENV} to "
                         f"another directory or to off\n")
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path
