"""The one benchmark runner: ``python -m benchmarks [--only a,b] [--quick] [--out DIR]``.

Each benchmark writes ``DIR/<name>.json``: its figures (ratios measured in one run, ours vs a
baseline on the same machine), the machine and the JAX version.
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
    p.add_argument("--out", default="benchmarks/results", help="directory for the JSON figures")
    p.add_argument("--only", default=None, help=f"comma-separated names (default: all of {', '.join(BENCHMARKS)})")
    p.add_argument("--quick", action="store_true", help="small sizes (seconds, for smoke tests)")
    a = p.parse_args(argv)
    run_benchmarks(a.out, a.only.split(",") if a.only else None, a.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
