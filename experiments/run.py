"""Runs one experiment config: ``python -m experiments.run CONFIG [--smoke] [--out DIR] [--force] [--no-progress]``.

CONFIG is a file of experiments/configs/ by name (``wr_fashion_mnist``) or a path to any config file
(``get_config(smoke=False)``). Results go to experiments/results/<name> (``--smoke``: runs/smoke/<name>);
an existing OUT is resumed when it holds the same config and refused otherwise (``--force`` restarts it).
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from repair_jax.cli.common import Parser
    from repair_jax.experiment import config_paths

    names = ", ".join(p.stem for p in config_paths()) or "none found"
    # Parser: a bad flag is one line on stderr and exit code 2, as in repair-jax
    p = Parser(prog="python -m experiments.run", description=__doc__.splitlines()[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("config", help=f"a config name ({names}) or a config file")
    p.add_argument("--smoke", action="store_true", help="the config at smoke size (seconds to minutes, digits)")
    # "%(default).0s" prints nothing; it stops the formatter from adding "(default: None)"
    p.add_argument("--out", default=None, help="output directory (default: experiments/results/CONFIG, "
                                               "with --smoke runs/smoke/CONFIG)%(default).0s")
    p.add_argument("--force", action="store_true", help="restart an OUT that holds another configuration")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or per-run lines")
    return p


def main(argv=None) -> int:
    from repair_jax.errors import UserError
    from repair_jax.experiment import run_config

    args = build_parser().parse_args(argv)
    command = " ".join(["python -m experiments.run", *(sys.argv[1:] if argv is None else argv)])
    from repair_jax.compilation_cache import enable_compilation_cache

    enable_compilation_cache()  # a repeated or resumed run reuses the programs compiled before
    try:
        summary = run_config(args.config, smoke=args.smoke, out=args.out, force=args.force,
                             progress=not args.no_progress, command=command)
    except UserError as e:
        sys.stderr.write(f"experiments.run: error: {e}\n")
        return 2
    if summary.get("report"):
        print(summary["report"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
