"""``repair-jax compare RUN1 RUN2 ... --out DIR``: several runs side by side (004 "Average metrics" and
class-wise tables). A subcommand module: ``configure(parser)`` / ``run(args) -> int``."""

from __future__ import annotations

HELP = "compare several runs side by side: average and class-wise metrics, DI, ROC curves"


def configure(p) -> None:
    p.add_argument("runs", nargs="+", help="run directories written by `repair-jax train`")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--split", default="test", choices=["train", "val", "pool", "test"])
    p.add_argument("--force", action="store_true", help="replace an existing output directory")


def run(args) -> int:
    from repair_jax.bias.compare import COMPARISON_JSON, compare_runs, format_comparison

    record = compare_runs(args.runs, args.out, split=args.split, force=args.force)
    print(format_comparison(record), end="")
    print(f"-> {args.out}/{COMPARISON_JSON}")
    return 0
