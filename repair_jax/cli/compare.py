"""``repair-jax compare RUN1 RUN2 [RUN...] --out DIR``: several runs side by side (Sharma n.d., "Average metrics" and
class-wise tables). A subcommand module: ``configure(parser)`` / ``run(args) -> int``."""

from __future__ import annotations


def configure(p) -> None:
    from repair_jax.cli.common import add_out
    from repair_jax.data import SPLITS

    p.add_argument("runs", nargs="+", help="run directories written by `repair-jax train`")
    add_out(p, "output directory (comparison.json, comparison.md, comparison.png, roc_*.png)")
    p.add_argument("--split", default="test", choices=SPLITS, help="split the runs are evaluated on")


def run(args) -> int:
    from repair_jax.bias.compare import COMPARISON_JSON, compare_runs, format_comparison

    record = compare_runs(args.runs, args.out, split=args.split, force=args.force)
    print(format_comparison(record), end="")
    print(f"-> {args.out}/{COMPARISON_JSON}")
    return 0
