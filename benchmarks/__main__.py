"""The one benchmark runner: ``python -m benchmarks [--only a,b] [--quick] [--out DIR]``.

Each benchmark writes ``DIR/<name>.json``: its figures (ratios measured in one run, ours vs a
baseline on the same machine), the machine and the JAX version. ``--gpu`` runs the accelerator suite
instead (:mod:`benchmarks.gpu`: ``DIR/<name>_gpu.json``), ``--gpu --rehearse`` the same at small sizes on
any backend.
"""

from __future__ import annotations

import importlib
import platform
import sys
import time
from pathlib import Path

from repair_jax.errors import exits_on_user_error

# name -> module (each has run(quick: bool) -> dict)
BENCHMARKS = {
    "train_throughput": "benchmarks.train_throughput",
    "irepair": "benchmarks.irepair",
    "hypergradient": "benchmarks.hypergradient",
    "per_example_grads": "benchmarks.per_example_grads",
    "cpu_convolution": "benchmarks.cpu_convolution",
    "influence": "benchmarks.influence",
    "influence_lds": "benchmarks.influence_lds",
    "influence_ekfac": "benchmarks.influence_ekfac",
    "influence_projection": "benchmarks.influence_projection",
    "weighted_repair": "benchmarks.weighted_repair",
    "explain": "benchmarks.explain",
    "robustness": "benchmarks.robustness",
    "bias": "benchmarks.bias",
    "cli_latency": "benchmarks.cli_latency",
}


def machine_info() -> dict:
    import jax

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": __import__("os").cpu_count(), "jax_version": jax.__version__,
            "devices": [str(d) for d in jax.devices()], "backend": jax.default_backend()}


def run_benchmarks(out: str | Path, only=None, quick: bool = False) -> dict:
    from repair_jax.errors import UserError
    from repair_jax.io import write_json

    names = only or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise UserError(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    results = {}
    for name in names:
        t0 = time.perf_counter()
        figures = importlib.import_module(BENCHMARKS[name]).run(quick=quick)
        record = {"benchmark": name, "quick": quick, "figures": figures, "machine": machine_info(),
                  "wall_time": time.perf_counter() - t0,
                  "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_json(Path(out) / f"{name}.json", record)
        print(f"{name}: {figures}")
        results[name] = record
    return results


@exits_on_user_error("benchmarks")
def main(argv=None) -> int:
    from repair_jax.cli.common import HelpFormatter, Parser

    p = Parser(prog="python -m benchmarks", description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    p.add_argument("--out", default=None, help="directory for the JSON figures (default benchmarks/results; "
                                                  "with --rehearse a fresh temporary directory)")
    p.add_argument("--only", default=None, help=f"comma-separated names (default: all of {', '.join(BENCHMARKS)}; "
                                                "with --gpu: of the suite's parts)")
    p.add_argument("--quick", action="store_true", help="small sizes (seconds, for smoke tests)")
    p.add_argument("--gpu", action="store_true", help="the accelerator suite (benchmarks/gpu.py): exit 2 unless "
                                                      "JAX's backend is a GPU or TPU")
    p.add_argument("--rehearse", action="store_true", help="with --gpu: the suite at small sizes on any backend")
    p.add_argument("--data-dir", default=None, help="with --gpu: the directory of the Fashion-MNIST IDX files "
                                                    "(default: $REPAIR_JAX_DATA, then Debian's)")
    p.add_argument("--budget", type=float, default=None, help="with --gpu: seconds for the whole suite "
                                                              "(default 450)")
    a = p.parse_args(argv)
    only = a.only.split(",") if a.only else None
    if not a.gpu:
        if a.rehearse or a.data_dir is not None or a.budget is not None:
            p.error("--rehearse, --data-dir and --budget go with --gpu")
        run_benchmarks(a.out or "benchmarks/results", only, a.quick)
        return 0
    from benchmarks.gpu import BUDGET_S, run_suite

    if a.quick:
        p.error("--quick does not go with --gpu (its small size is --rehearse)")
    records = run_suite(a.out, a.rehearse, only, a.data_dir, BUDGET_S if a.budget is None else a.budget)
    return 0 if all(r["status"] in ("ok", "skipped") for r in records.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
