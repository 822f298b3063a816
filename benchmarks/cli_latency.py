"""How fast the command line answers (issue 26 part 2): wall time of ``repair-jax diagnose``,
``repair-jax explain --methods grad`` and ``repair-jax influence --test-index 0,1,2 --method cg`` on a
digits MLP run, each in a new process, first (an empty compilation cache) and repeated (the cache the
first run filled: :mod:`repair_jax.compilation_cache`), against the floor ``python -c "import repair_jax"``.

* ``floor_s``: the median of 3 runs of ``import repair_jax`` in a new process;
* per command: ``first_s``, ``repeated_s``, both over the floor, and ``first_over_repeated``;
* ``fit_influence``: a new process trains the 64-32-10 MLP of :mod:`benchmarks.influence_fitted` (2,410
  parameters, 1,000 digits training points), then times its first ``fit_influence`` + ``scores`` of one test
  point (explicit, then CG) and, when dattri is installed (the ``bench`` extra), dattri's on the same
  weights; run twice: with an empty compilation cache and with the one the first run filled (a restarted
  notebook). ``ours_over_dattri`` < 1: ours is faster.

Goals (``goals``): ``diagnose`` under 2x the floor; a repeated ``influence`` at least 2x faster than its
first run; a first ``fit_influence`` no slower than dattri's. Each run gets its own cache directory
(``REPAIR_JAX_COMPILATION_CACHE``), removed at the end; nothing of the user's cache is read or written.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _env(cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")
           and not k.startswith("JAX_PERSISTENT_CACHE")}
    env.update(REPAIR_JAX_COMPILATION_CACHE=str(cache), TQDM_DISABLE="1", PYTHONPATH=str(ROOT))
    return env


def _timed_run(argv: list[str], env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr[-2000:]}")
    return seconds, p.stdout


_FIT_SCRIPT = r"""
import json, time, importlib.util
import jax
from repair_jax.compilation_cache import enable_compilation_cache
enable_compilation_cache()
from benchmarks.influence_fitted import _setup, _first, _dattri_scores, RELATIVE_DAMPING
from repair_jax.influence import fit_influence
from repair_jax.influence.workflow import FLOAT32_CG_TOL
loss, params, train, test = _setup(1000, 1)
out = {}
for method in ("explicit", "cg"):
    t0 = time.perf_counter()
    fit = fit_influence(loss, params, train, method=method, relative_damping=RELATIVE_DAMPING, chunk_size=None,
                        tol=FLOAT32_CG_TOL if method == "cg" else None)
    scores, r = fit.scores(_first(test, 1))
    jax.block_until_ready(scores)
    row = {"ours_s": time.perf_counter() - t0, "iterations": int(r.iterations.max())}
    if importlib.util.find_spec("dattri") is not None:
        t0 = time.perf_counter()
        _dattri_scores(params, train, _first(test, 1), method, fit.damping, row["iterations"])
        row["dattri_s"] = time.perf_counter() - t0
        row["ours_over_dattri"] = row["ours_s"] / row["dattri_s"]
    out[method] = row
print(json.dumps(out))
"""


def run(quick: bool = False) -> dict:
    py = sys.executable
    tmp = Path(tempfile.mkdtemp(prefix="cli_latency_"))
    try:
        return _run(py, tmp, quick)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(py: str, tmp: Path, quick: bool) -> dict:
    env = _env(tmp / "cache")
    cli = [py, "-m", "repair_jax"]
    run_dir = tmp / "run"
    _timed_run([*cli, "train", "--dataset", "digits", "--model", "mlp", "--model-kwargs", '{"hidden": [32]}',
                "--epochs", "3" if quick else "30", "--lr", "0.01", "--out", str(run_dir), "--no-progress"],
               _env(tmp / "train_cache"))  # its own cache: the commands below start from an empty one
    floor = statistics.median(_timed_run([py, "-c", "import repair_jax"], env)[0] for _ in range(3))
    commands = {
        "diagnose": ["diagnose", "--run", str(run_dir)],
        "explain_grad": ["explain", "--run", str(run_dir), "--index", "0", "--methods", "grad"],
        # --allow-inexact: a quick run's undertrained model may stop as diverged (exit 3); its status is recorded
        "influence_cg_3_points": ["influence", "--run", str(run_dir), "--test-index", "0,1,2", "--method", "cg",
                                  "--allow-inexact"],
    }
    out: dict = {"setup": {"run": "MLP 64-32-10 on digits (repair-jax train)", "floor": "python -c 'import repair_jax'",
                           "cache": "a fresh REPAIR_JAX_COMPILATION_CACHE directory per benchmark run"},
                 "floor_s": floor}
    for name, args in commands.items():
        times = [_timed_run([*cli, *args, "--out", str(tmp / f"{name}_{i}"), "--no-progress"], env)[0]
                 for i in range(2)]
        out[name] = {"first_s": times[0], "repeated_s": times[1], "first_over_floor": times[0] / floor,
                     "repeated_over_floor": times[1] / floor, "first_over_repeated": times[0] / times[1]}
    summary = json.loads((tmp / "influence_cg_3_points_0" / "summary.json").read_text())
    out["influence_cg_3_points"].update(status=summary["status"], iterations=summary["solver"]["iterations"])
    fit_env = _env(tmp / "fit_cache")
    fit = {}
    for when in ("empty_cache", "warm_cache"):
        _, stdout = _timed_run([py, "-c", _FIT_SCRIPT], fit_env)
        fit[when] = json.loads(stdout.strip().splitlines()[-1])
    out["fit_influence_first_call"] = fit
    ratios = [fit[w][m].get("ours_over_dattri") for w in fit for m in fit[w]]
    out["goals"] = {
        "diagnose_under_2x_floor": {"first": out["diagnose"]["first_over_floor"] < 2,
                                    "repeated": out["diagnose"]["repeated_over_floor"] < 2},
        "repeated_influence_2x_faster": out["influence_cg_3_points"]["first_over_repeated"] >= 2,
        "first_fit_influence_no_slower_than_dattri": (
            {w: {m: fit[w][m]["ours_over_dattri"] <= 1 for m in fit[w]} for w in fit}
            if all(r is not None for r in ratios) else "dattri not installed (pip install -e .[bench])"),
    }
    return out
