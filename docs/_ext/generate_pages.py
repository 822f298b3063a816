"""Sphinx extension: pages generated from committed files, so nothing in the docs is typed by hand
that a result file already holds.

At ``builder-inited`` it writes (all under ``docs/_generated/``, ignored by git):

* ``results.md``: one section per ``experiments/results/<name>/``, showing its Markdown tables, its
  figures and, from ``experiment.json``, the config, command, machine and date that produced it;
* ``benchmarks.md``: one section per ``benchmarks/results/*.json`` with the machine, the date, every
  figure as a table, and a plot for each series (a list of records with a numeric x); first, "GPU against
  CPU": each time and rate of a ``<name>_gpu.json`` (the accelerator suite, ``benchmarks/gpu.py``) next to the
  same figure of ``<name>.json`` and their ratio;
* ``notebooks/*.ipynb``: copies of ``notebooks/`` that MyST-NB executes during the build at smoke
  size (``REPAIR_JAX_SMOKE=1``).
"""

from __future__ import annotations

import json
import re
import os
import shutil
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1]
ROOT = DOCS.parent
OUT = DOCS / "_generated"


def _flatten(obj, prefix=""):
    """(dotted key, scalar) pairs of a JSON value; lists of records are left to :func:`_series`."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flatten(v, f"{prefix}{k}.")
    elif isinstance(obj, list) and obj and all(isinstance(v, dict) for v in obj):
        return
    elif isinstance(obj, list):
        yield prefix[:-1], ", ".join(_fmt(v) for v in obj)
    else:
        yield prefix[:-1], _fmt(obj)


def _series(obj, prefix=""):
    """(dotted key, list of records) for every list of dicts inside a JSON value."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _series(v, f"{prefix}{k}.")
    elif isinstance(obj, list) and obj and all(isinstance(v, dict) for v in obj):
        yield prefix[:-1], obj


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|")


def _table(headers, rows) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _plot_series(name: str, key: str, records: list[dict]) -> str | None:
    """A line plot of every numeric column against the first numeric one; None if it has no such pair."""
    cols = [k for k, v in records[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(cols) < 2 or len(records) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = cols[0]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for c in cols[1:]:
        ax.plot([r.get(x) for r in records], [r.get(c) for r in records], "o-", label=c)
    ax.set_xlabel(x)
    ax.set_title(f"{name}: {key}", fontsize=9)
    if max(r.get(x, 0) or 0 for r in records) / max(min(r.get(x, 1) or 1 for r in records), 1e-12) > 50:
        ax.set_xscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fname = f"bench_{name}_{key.replace('.', '_')}.png"
    fig.savefig(OUT / fname, dpi=110)
    plt.close(fig)
    return fname


SIZE_KEYS = ("n", "n_train", "batch", "test_points")  # a time is compared only where these agree


def _figure_kind(key: str) -> str | None:
    """``rate`` (per second), ``time`` (seconds or ms, also per 1,000 points) or None for a dotted figure key."""
    parts = key.split(".")
    last = parts[-1]
    if last.endswith(("per_s", "per_second")):
        return "rate"
    if last.endswith(("_s", "_ms", "seconds", "seconds_incl_compile")) or "_s_per_" in last or (
            len(parts) > 1 and parts[-2].endswith("_s")):
        return "time"
    return None


def gpu_against_cpu(cpu: dict, gpu: dict) -> list[list]:
    """Rows (figure, CPU, GPU, speed-up) of every time or rate in both figure dicts: speed-up CPU time / GPU
    time, or GPU rate / CPU rate; where a size of the same record (:data:`SIZE_KEYS`) or the data set
    differs, the speed-up cell says so instead."""
    c, g = dict(_flatten_raw(cpu)), dict(_flatten_raw(gpu))
    if any(k.endswith("dataset") and k in g and c[k] != g[k] for k in c):
        differ = "; ".join(f"data set {c[k]} (CPU) vs {g[k]} (GPU)" for k in c
                           if k.endswith("dataset") and k in g and c[k] != g[k])
    else:
        differ = None
    rows = []
    for key, cv in c.items():
        kind, gv = _figure_kind(key), g.get(key)
        if kind is None or isinstance(cv, bool) or not isinstance(cv, (int, float)) or not isinstance(
                gv, (int, float)) or isinstance(gv, bool):
            continue
        prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
        sizes = [f"{k} {c[prefix + k]} (CPU) vs {g[prefix + k]} (GPU)" for k in SIZE_KEYS
                 if prefix + k in c and prefix + k in g and c[prefix + k] != g[prefix + k]]
        if differ or sizes:
            ratio = "not comparable: " + (differ or "; ".join(sizes))
        elif kind == "time":
            ratio = f"{cv / gv:.3g}x" if gv else "-"
        else:
            ratio = f"{gv / cv:.3g}x" if cv else "-"
        rows.append([key, cv, gv, ratio])
    return rows


def _flatten_raw(obj, prefix=""):
    """(dotted key, value) of every scalar of a JSON value, the values unformatted."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flatten_raw(v, f"{prefix}{k}.")
    elif not isinstance(obj, list):
        yield prefix[:-1], obj


def gpu_section() -> str:
    results = ROOT / "benchmarks" / "results"
    parts = ["\n## GPU against CPU\n\nEach time and rate of a `<name>_gpu.json` (`make gpu`, see [Running on GPU](../gpu.md)) "
             "next to the same figure of `<name>.json` (the 2-core CPU): speed-up = CPU time / GPU time, or GPU "
             "rate / CPU rate. Figures of one file only, and parts that did not run, are in their own sections "
             "below.\n"]
    for path in sorted(results.glob("*_gpu.json")):
        cpu_path = results / (path.stem[:-len("_gpu")] + ".json")
        gpu = json.loads(path.read_text())
        if not cpu_path.is_file():
            continue
        cpu = json.loads(cpu_path.read_text())
        device = gpu.get("device_kind") or ", ".join(gpu.get("machine", {}).get("devices", []))
        head = f"\n**{path.stem[:-len('_gpu')]}**: GPU {device} ({gpu.get('date', '?')}), CPU {cpu.get('date', '?')}"
        if gpu.get("status", "ok") != "ok":
            parts.append(f"{head}: the GPU part {gpu['status']}: {gpu.get('reason', '').splitlines()[0]}\n")
            continue
        rows = gpu_against_cpu(cpu.get("figures", {}), gpu.get("figures", {}))
        parts.append(f"{head}\n\n" + (_table(["figure", "CPU", "GPU", "speed-up"], rows) if rows else
                                       "no figure in both files\n"))
    return "".join(parts)


def benchmarks_page() -> str:
    parts = ["# Benchmarks\n", "Generated from `benchmarks/results/*.json` (written by `make bench` / "
             "`python -m benchmarks`). Each figure is a ratio or time measured in one run on the machine named.\n",
             gpu_section()]
    for path in sorted((ROOT / "benchmarks" / "results").glob("*.json")):
        d = json.loads(path.read_text())
        name = path.stem
        m = d.get("machine", {})
        parts.append(f"\n## {name}\n\n`{path.relative_to(ROOT)}` - {d.get('date', '?')}, "
                     f"devices {', '.join(m.get('devices', []))}, {m.get('cpu_count', '?')} CPUs, "
                     f"JAX {m.get('jax_version', '?')}, wall time {_fmt(d.get('wall_time', '?'))} s"
                     f"{', quick mode' if d.get('quick') else ''}.\n")
        flat = list(_flatten(d.get("figures", {})))
        if flat:
            parts.append("\n" + _table(["figure", "value"], flat))
        for key, records in _series(d.get("figures", {})):
            headers = list(records[0])
            parts.append(f"\n**{key}**\n\n" + _table(headers, [[r.get(h, "") for h in headers] for r in records]))
            img = _plot_series(name, key, records)
            if img:
                parts.append(f"\n![{name} {key}]({img})\n")
    return "".join(parts)


def _experiment_meta(directory: Path) -> str:
    path = directory / "experiment.json"
    if not path.is_file():
        readme = directory / "README.md"
        return readme.read_text() + "\n" if readme.is_file() else ""
    e = json.loads(path.read_text())
    m = e.get("machine") or {}
    cfg = e.get("config", {})
    machine = (f"{m.get('host', '?')} ({', '.join(m.get('devices', []))}), JAX {m.get('jax', '?')}" if m
               else "not recorded (written before the driver recorded machines)")
    note = f"- note: {e['note']}\n" if e.get("note") else ""
    produced = "".join(f"  - `{c}`\n" for c in e.get("produced_by") or [])
    return (f"- command: `{e.get('command', '?')}`\n- config: `{cfg.get('type', '?')}`\n"
            f"- machine: {machine}\n"
            f"- date: {e.get('finished') or e.get('started') or 'not recorded'}, wall time {e.get('wall_s', '?')} s\n"
            + (f"- produced by:\n{produced}" if produced else "") + note + "\n"
            f"<details><summary>full config</summary>\n\n```json\n{json.dumps(cfg.get('fields', {}), indent=1)}\n```\n\n</details>\n")


def results_page() -> str:
    parts = ["# Results\n", "Generated from the committed result files under `experiments/results/`; "
             "regenerating a result regenerates its section. Run any of them with "
             "`python -m experiments.run CONFIG` (see the experiments page). Which source table each result "
             "reproduces, and whether its preconditions hold: [reproduction status](../reproduction.md).\n"]
    for directory in sorted(p for p in (ROOT / "experiments" / "results").iterdir() if p.is_dir()):
        parts.append(f"\n## {directory.name}\n\n" + _experiment_meta(directory))
        for md in sorted(directory.rglob("*.md")):
            if md.name == "README.md":
                continue
            rel = md.relative_to(directory)
            text = re.sub(r"^#{1,6} ", "#### ", md.read_text(), flags=re.M)  # every heading under ### rel
            parts.append(f"\n### {rel}\n\n{text}\n")
        for png in sorted(directory.rglob("*.png"))[:12]:
            target = OUT / "results_img" / directory.name / png.relative_to(directory)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(png, target)
            parts.append(f"\n```{{figure}} results_img/{directory.name}/{png.relative_to(directory)}\n"
                         f":width: 420px\n\n{png.relative_to(directory)}\n```\n")
    return "".join(parts)


def generate(app=None) -> None:
    OUT.mkdir(exist_ok=True)
    (OUT / "benchmarks.md").write_text(benchmarks_page())
    (OUT / "results.md").write_text(results_page())
    nb_dir = OUT / "notebooks"
    nb_dir.mkdir(exist_ok=True)
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        shutil.copyfile(nb, nb_dir / nb.name)
    os.environ["REPAIR_JAX_SMOKE"] = "1"


_LITERAL = re.compile(r"(``.+?``)")


def escape_bars(app, what, name, obj, options, lines):
    """Docstrings write absolute values and norms as ``|x|``; reStructuredText reads ``|x|`` as a
    substitution. Escape every ``|`` outside inline literals (autodoc and autosummary both use this)."""
    for i, line in enumerate(lines):
        parts = _LITERAL.split(line)
        lines[i] = "".join(p if p.startswith("``") else p.replace("|", "\\|") for p in parts)


def check_api_complete(app, exception):
    """Every public function and class of every ``repair_jax`` module stands in its module's
    autosummary page; a missing one is a warning (an error under ``-W``)."""
    import importlib
    import inspect
    import pkgutil

    from sphinx.util import logging

    if exception is not None:
        return
    import repair_jax
    pages = DOCS / "_autosummary"
    for info in pkgutil.walk_packages(repair_jax.__path__, "repair_jax."):
        module = importlib.import_module(info.name)
        page = pages / f"{info.name}.rst"
        text = page.read_text() if page.is_file() else ""
        for name, obj in vars(module).items():
            public = not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
            if public and obj.__module__ == info.name and not re.search(rf"^\s+{name}$", text, re.M):
                logging.getLogger(__name__).warning(f"API reference misses {info.name}.{name}")


def setup(app):
    app.connect("builder-inited", generate)
    app.connect("build-finished", check_api_complete)
    app.connect("autodoc-process-docstring", escape_bars)
    return {"version": "1", "parallel_read_safe": True}
