"""``repair-jax diagnose``: group-level errors of a trained run (:func:`repair_jax.diagnosis.diagnose_run`)."""

from __future__ import annotations

from repair_jax.cli.common import add_out
from repair_jax.errors import require_at_least


def configure(p) -> None:
    p.add_argument("--run", required=True, help="run directory written by `repair-jax train`")
    add_out(p, "output directory (diagnosis.json, confusion_matrix.png)")
    p.add_argument("--split", default="test", choices=["train", "val", "pool", "test"], help="split to diagnose")
    p.add_argument("--top", type=int, default=5, help="how many pairs/triplets to list")


def run(args) -> int:
    from repair_jax.diagnosis import diagnose_run, format_summary

    require_at_least("--top", args.top, 1)
    d = diagnose_run(args.run, args.out, args.split, args.top, force=args.force)
    print(format_summary(d))
    print(f"-> {args.out}/diagnosis.json")
    return 0
