"""The one experiment driver: a paper table is a config, one function runs any config (big_vision's shape).

A config module (``experiments/configs/<paper>_<table>.py``) defines ``get_config(smoke=False)``
returning a frozen dataclass instance that holds the table's data set, model, recipe, targets rule,
grids and seeds; ``smoke=True`` shrinks sizes and never changes the code path. The dataclass type is
defined in the library next to the function that runs it, registered with :func:`runner`::

    @dataclasses.dataclass(frozen=True)
    class NoisyLabelsStudy: ...

    @runner(NoisyLabelsStudy)
    def run_noisy_labels(config, out: Path, *, force: bool, progress: bool) -> dict: ...

:func:`run_experiment` writes ``OUT/experiment.json`` (the whole config, the command, the machine,
the date, the wall time) and refuses to resume into a directory that holds another configuration
(one line naming the first differing field) unless ``force``; a config type's ``validate()``, where it
has one, runs before anything is written. A study is its cells, one function that runs a cell into a
record, and a report from the records: :func:`run_cells` is the one resumable loop over the cells (a log
bound to the config), :func:`repair_jax.runs.trained_run` the one train-or-reuse step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from repair_jax.errors import UserError
from repair_jax.io import ResumableJsonl, check_output_dir, first_difference, read_json, to_jsonable, write_json
from repair_jax.progress import progress as progress_bar

Runner = Callable[..., dict]
_RUNNERS: dict[type, Runner] = {}
EXPERIMENT_JSON = "experiment.json"
CONFIGS_DIR = Path("experiments") / "configs"


_AFTER_RUN: list[Callable[[Path, type], Any]] = []


def after_run(hook: Callable[[Path, type], Any]) -> Callable[[Path, type], Any]:
    """Registers ``hook(out, config_type)``, called by :func:`run_experiment` after every runner (a floor above
    the driver adds its step this way, as runners are registered)."""
    if hook not in _AFTER_RUN:
        _AFTER_RUN.append(hook)
    return hook


def runner(config_type: type) -> Callable[[Runner], Runner]:
    """Registers ``fn(config, out, *, force, progress) -> summary dict`` as the runner of ``config_type``."""
    def register(fn: Runner) -> Runner:
        _RUNNERS[config_type] = fn
        return fn
    return register


def config_paths(configs_dir: str | Path = CONFIGS_DIR) -> list[Path]:
    """The config files of a directory (every ``*.py`` but ``__init__.py``), sorted by name."""
    return sorted(p for p in Path(configs_dir).glob("*.py") if p.name != "__init__.py")


def resolve_config(spec: str, configs_dir: str | Path = CONFIGS_DIR) -> Path:
    """A config given as a file path or as a name in ``configs_dir`` -> its file."""
    path = Path(spec)
    if path.suffix == ".py" and path.is_file():
        return path
    named = Path(configs_dir) / f"{spec}.py"
    if named.is_file():
        return named
    known = ", ".join(p.stem for p in config_paths(configs_dir)) or "none found"
    raise UserError(f"no experiment config {spec!r} (a .py file, or a name in {configs_dir}: {known})")


def load_config(spec: str, smoke: bool = False, configs_dir: str | Path = CONFIGS_DIR):
    """Imports a config file by path (no ``sys.path`` edits) and returns ``get_config(smoke=smoke)``."""
    path = resolve_config(spec, configs_dir)
    module_spec = importlib.util.spec_from_file_location(f"repair_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as e:
        raise UserError(f"{path}:{e.lineno}: the config file is not valid Python ({e.msg})") from None
    except Exception as e:  # the config file's own code failed (a bad import, a NameError, ...)
        raise UserError(f"{path}: the config file failed to load: {type(e).__name__}: {e}") from None
    if not hasattr(module, "get_config"):
        raise UserError(f"{path} defines no get_config(smoke=False)")
    try:
        config = module.get_config(smoke=smoke)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{path}: get_config(smoke={smoke}) failed: {type(e).__name__}: {e}") from None
    if not dataclasses.is_dataclass(config) or type(config) not in _RUNNERS:
        raise UserError(f"{path}: get_config returned {type(config).__name__}, which no runner is registered for")
    return config


def config_record(config: Any) -> dict:
    """The JSON form of a config: its type's qualified name and every field (nested dataclasses too)."""
    cls = type(config)
    return {"type": f"{cls.__module__}.{cls.__qualname__}", "fields": to_jsonable(dataclasses.asdict(config))}


def machine_record() -> dict:
    import jax

    return {"host": platform.node(), "processor": platform.machine(), "python": platform.python_version(),
            "jax": jax.__version__, "devices": [str(d) for d in jax.devices()]}


def _check_out(out: Path, record: dict, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"output path exists and is not a directory: {out}")
    check_output_dir(out, force, kind="resumable")  # not under a file, and a place this user can create files in
    path = out / EXPERIMENT_JSON
    if force or not path.exists():
        if out.exists() and any(p.name != LOCK for p in out.iterdir()) and not path.exists() and not force:
            raise UserError(f"{out} is not empty and holds no {EXPERIMENT_JSON}: choose another output directory or pass force")
        return
    old = upgraded_record(read_json(path, "experiment record").get("config", {}), record)
    field = first_difference(old, record)
    if field is not None:
        raise UserError(f"{out} holds another configuration ({field} differs): choose another output "
                        "directory or pass force to restart it")


# Config types that moved with the studies (issue 28): a results directory written before names the old module.
MOVED_MODULES = {
    "repair_jax.repair.experiments": ("repair_jax.studies.wr", "repair_jax.studies.irepair"),
    "repair_jax.guiding.experiments": ("repair_jax.studies.guiding",),
    "repair_jax.influence.experiments": ("repair_jax.studies.influence",),
    "repair_jax.influence.lds_study": ("repair_jax.studies.influence_lds",),
    "repair_jax.explain.tables": ("repair_jax.studies.explain_tables",),
    "repair_jax.explain.study": ("repair_jax.studies.explain_spurious",),
    "repair_jax.explain.sanity": ("repair_jax.studies.explain_sanity",),
    "repair_jax.bias.study": ("repair_jax.studies.bias",),
    "repair_jax.bias.multimodal_study": ("repair_jax.studies.bias_multimodal",),
    "repair_jax.robustness.study": ("repair_jax.studies.robustness",),
}


def upgraded_record(old: Any, new: Any) -> Any:
    """An older config record in today's terms, for comparison with ``new``: a config type named by the module
    it moved from takes its new name; a config type that changed its fields since declares how an old record's
    fields read today, a classmethod ``upgrade_fields(old_fields: dict) -> dict`` (e.g. flat training fields
    nested into one ``train``, :func:`nested_train`), applied here; and a field added since with the default
    ``None`` (which keeps the old behaviour, e.g. ``TrainConfig.init_seed``) is filled in."""
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):  # e.g. a study's `models`
        return [upgraded_record(o, n) for o, n in zip(old, new)]
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return old
    old = dict(old)
    if isinstance(old.get("type"), str) and isinstance(new.get("type"), str):
        module, name = old["type"].rsplit(".", 1)
        if new["type"] in {f"{m}.{name}" for m in MOVED_MODULES.get(module, ())}:
            old["type"] = new["type"]
        upgrade = getattr(_config_types().get(old["type"]), "upgrade_fields", None)
        if upgrade is not None and isinstance(old.get("fields"), dict):
            old["fields"] = upgrade(old["fields"])
    out = {k: upgraded_record(v, new.get(k)) for k, v in old.items()}
    for k, v in new.items():
        if k not in out and v is None:
            out[k] = None
    return out


def upgraded_header(config_type: type) -> Callable[[Any, Any], Any]:
    """:func:`upgraded_record` for a resumable log whose header is a ``config_type`` instance's fields only
    (``dataclasses.asdict(config)``): ``upgrade(old_fields, new_fields) -> old_fields in today's terms``."""
    name = f"{config_type.__module__}.{config_type.__qualname__}"
    return lambda old, new: upgraded_record({"type": name, "fields": old}, {"type": name, "fields": new})["fields"]


def _config_types() -> dict[str, type]:
    return {f"{c.__module__}.{c.__qualname__}": c for c in _RUNNERS}


def nested_train(fields: dict, moved: Sequence[str], **implied: Any) -> dict:
    """An old record's ``fields`` for a config type whose training recipe became one ``train`` field, a
    :class:`~repair_jax.train.TrainConfig` (issue 28): the flat fields ``moved`` (those present) over
    ``implied`` (what the old code gave the rest of the TrainConfig it built, where not TrainConfig's
    default) become ``train``'s record. A record that has ``train`` already is returned as it is."""
    from repair_jax.train import TrainConfig

    if not isinstance(fields, dict) or "train" in fields:
        return fields
    train = TrainConfig(**{**implied, **{k: fields[k] for k in moved if k in fields}})
    return {**{k: v for k, v in fields.items() if k not in moved}, "train": to_jsonable(dataclasses.asdict(train))}


def run_cells(log_path: str | Path, header: Any, cells: Sequence[tuple], run_cell: Callable[[tuple], dict], *,
              key: Callable[[dict], tuple], force: bool, progress: bool, label: str,
              note: Callable[[tuple], str] = lambda cell: " ".join(map(str, cell)),
              config_type: type | None = None) -> list[dict]:
    """The studies' one resumable loop: ``run_cell(cell) -> record`` for every cell of ``cells`` (tuples, in
    order) whose record is not yet in the log at ``log_path``; each record is appended as soon as it is done (a
    killed study loses only the cell in progress) and ``key(record)`` must give its cell back. The log is bound
    to ``header`` (the study's config, :class:`repair_jax.io.ResumableJsonl`): a log of another configuration is
    refused, one written before the studies moved is upgraded first (:func:`upgraded_record`; a header that is
    a config's fields only, ``dataclasses.asdict(config)``, names its ``config_type`` so that the type's
    ``upgrade_fields`` applies, :func:`upgraded_header`). Returns the records in the order of ``cells``."""
    upgrade = upgraded_record if config_type is None else upgraded_header(config_type)
    log = ResumableJsonl(log_path, header, key=key, force=force, upgrade=upgrade)
    with progress_bar(len(cells), label, enabled=progress) as bar:
        for cell in cells:
            if cell not in log:
                log.append(run_cell(cell))
            bar.update(note=note(cell))
    return [log[cell] for cell in cells]


class SharedStep:
    """A one-entry cache for what consecutive cells share (a data set per seed, the normal model per seed):
    ``shared(arg)`` calls ``build(arg)`` only when ``arg`` differs from the last call's."""

    def __init__(self, build: Callable[[Any], Any]):
        self.build, self.arg, self.value, self.filled = build, None, None, False

    def __call__(self, arg: Any) -> Any:
        if not self.filled or arg != self.arg:
            self.value, self.arg, self.filled = None, arg, False  # free the old value before building the next
            self.value, self.filled = self.build(arg), True
        return self.value


def run_experiment(config: Any, out: str | Path, *, force: bool = False, progress: bool = True,
                   command: str | None = None) -> dict:
    """Runs (or resumes) ``config`` into ``out``; returns the runner's summary."""
    fn = _RUNNERS.get(type(config))
    if fn is None:
        raise UserError(f"no runner is registered for {type(config).__name__}")
    out = Path(out)
    record = config_record(config)
    _check_out(out, record, force)
    if hasattr(config, "validate"):  # every option is checked before anything is written
        config.validate()
    out.mkdir(parents=True, exist_ok=True)
    with out_lock(out):
        return _run_locked(fn, config, out, record, force, progress, command)


def _run_locked(fn, config, out: Path, record: dict, force: bool, progress: bool, command: str | None) -> dict:
    earlier = [] if force else earlier_segments(out / EXPERIMENT_JSON)
    started = _dt.datetime.now(_dt.timezone.utc)
    meta = {"config": record, "command": command or " ".join(sys.argv), "machine": machine_record(),
            "started": started.isoformat(timespec="seconds")}
    write_json(out / EXPERIMENT_JSON, {**meta, "finished": None, "segments": earlier})
    t0 = time.perf_counter()
    summary = fn(config, out, force=force, progress=progress)
    for hook in _AFTER_RUN:  # e.g. repair_jax.studies.preconditions: OUT/preconditions.json
        hook(out, type(config))
    finished = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    segments = earlier + [{"started": meta["started"], "finished": finished, "wall_s": round(time.perf_counter() - t0, 1)}]
    write_json(out / EXPERIMENT_JSON, {**meta, "finished": finished, "segments": segments,
                                       "wall_s": round(sum(s["wall_s"] or 0.0 for s in segments), 1)})
    return summary


LOCK = ".lock"


@contextlib.contextmanager
def out_lock(out: Path):
    """Holds ``OUT/.lock`` (the process id) while a run writes ``out``: a second run of the same OUT is refused
    while the first is alive (two writers would interleave one log); a lock whose process is gone is taken over."""
    path = out / LOCK
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        holder = _lock_holder(path)
        if holder is not None and holder != os.getpid():
            raise UserError(f"{out} is being written by process {holder}; wait for it to finish or stop it") from None
        fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY)
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _lock_holder(path: Path) -> int | None:
    """The live process holding a lock file, None for a stale or unreadable one."""
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
    except (ValueError, OSError):
        return None
    return pid


def earlier_segments(path: Path) -> list[dict]:
    """The run segments an ``experiment.json`` records (a resumed run adds one; ``wall_s`` is their sum): each
    ``{"started", "finished", "wall_s"}``, ``finished`` and ``wall_s`` None for a segment that was stopped."""
    if not path.is_file():
        return []
    old = json.loads(path.read_text())
    if "segments" in old:
        return list(old["segments"]) + ([] if old.get("finished") else [
            {"started": old["started"], "finished": None, "wall_s": None}])
    return [{"started": old.get("started"), "finished": old.get("finished"), "wall_s": old.get("wall_s")}]


def default_out(spec: str, smoke: bool = False, configs_dir: str | Path = CONFIGS_DIR) -> Path:
    """Where a config's results go by default: ``experiments/results/<name>`` (smoke: ``runs/smoke/<name>``)."""
    name = resolve_config(spec, configs_dir).stem
    return (Path("runs") / "smoke" if smoke else Path("experiments") / "results") / name


def run_config(spec: str, *, smoke: bool = False, out: str | Path | None = None, force: bool = False,
               progress: bool = True, command: str | None = None, configs_dir: str | Path = CONFIGS_DIR) -> dict:
    """The whole ``experiment`` command: load ``spec`` (a config file or a name in ``configs_dir``) at full
    or smoke size and run it into ``out`` (default :func:`default_out`); returns the runner's summary."""
    config = load_config(spec, smoke=smoke, configs_dir=configs_dir)
    target = Path(out) if out is not None else default_out(spec, smoke, configs_dir)
    return run_experiment(config, target, force=force, progress=progress, command=command)
