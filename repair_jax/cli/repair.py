"""``repair-jax repair``: the Weighted Regularization study of one run (Zhong et al. 2022, Sec. 3-4)."""

from __future__ import annotations

from repair_jax.cli.common import add_config_flags, add_out, field_default
from repair_jax.errors import UserError, require_at_least


def configure(p) -> None:
    from repair_jax.repair import RepairConfig

    p.add_argument("--run", required=True, help="run directory written by `repair-jax train`")
    g = p.add_argument_group("targets (exactly one; classes by index or name)")
    g.add_argument("--pair", default=None, help="confused pair A,B")
    g.add_argument("--triplet", default=None, help="biased triplet A,B,C (C the anchor)")
    g.add_argument("--pairs", default=None, help="several pairs A,B;C,D")
    g.add_argument("--triplets", default=None, help="several triplets A,B,C;D,E,F")
    add_out(p, "output directory (a re-run with the same configuration resumes it)", kind="resumable")
    p.add_argument("--methods", default="all",
                   help="all (Zhong et al.'s (2022) WR methods), or a comma-separated subset of orig,orig-ft,w-aug,w-bn,w-os,w-loss,"
                        "w-dbr,i-drop (i-drop: fine-tune without the training points most harmful to the targets, "
                        "by influence; orig and orig-ft are always run: they are the baselines)")
    add_config_flags(p, RepairConfig, ["seeds"])
    p.add_argument("--epochs", type=int, default=None,
                   help="fine-tuning epochs (default: 1/5 of the run's training epochs, at least 1; Zhong et al. 2022, Sec. 4.1 "
                        "fine-tunes 60 of 300)")
    p.add_argument("--lr", type=float, default=None, help="fine-tuning learning rate (default: 0.1 x the run's)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the run's")
    p.add_argument("--rhos", default=",".join(str(r) for r in field_default(RepairConfig, "rhos")),
                   help="the rho grid (Zhong et al. 2022, Sec. 4.4)")
    add_config_flags(p, RepairConfig, ["lambda1", "lambda2", "lambda2_relative", "select_split"],
        select_split={"choices": ["val", "pool", "test"]})


def _floats(spec: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(s) for s in spec.split(",") if s.strip())
    except ValueError:
        raise UserError(f"{what} must be comma-separated numbers, got {spec!r}") from None


def repair_config_from_args(args, run):
    from repair_jax.repair import WR_METHODS, RepairConfig

    rc = run.config
    if args.methods == "all":
        methods = WR_METHODS
    else:
        methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        methods = tuple(dict.fromkeys(("orig", "orig-ft") + methods))
    cfg = RepairConfig(epochs=args.epochs if args.epochs is not None else max(1, rc.epochs // 5),
                       lr=args.lr if args.lr is not None else 0.1 * rc.lr,
                       batch_size=args.batch_size if args.batch_size is not None else rc.batch_size, optimizer=rc.optimizer,
                       schedule=rc.schedule, l2=rc.l2, seeds=args.seeds, methods=methods,
                       rhos=_floats(args.rhos, "--rhos"), lambda1=args.lambda1, lambda2=args.lambda2,
                       lambda2_relative=args.lambda2_relative, select_split=args.select_split)
    cfg.validate()
    return cfg


def check_flags(args) -> None:
    """The flags that need no run: counts and step sizes."""
    require_at_least("--seeds", args.seeds, 1)
    for flag in ("epochs", "batch_size"):
        if getattr(args, flag) is not None:
            require_at_least(f"--{flag.replace('_', '-')}", getattr(args, flag), 1)
    if args.lr is not None and not args.lr > 0:
        raise UserError(f"--lr must be > 0, got {args.lr}")


def check_distinct(targets) -> None:
    """No pair or triplet twice (a pair in either order; a triplet with A and B swapped)."""
    seen = {}
    for group in targets.groups:
        key = (frozenset(group[:2]), *group[2:])
        if key in seen:
            raise UserError(f"{seen[key]} and {group} are the same target given twice")
        seen[key] = group


def run(args) -> int:
    from repair_jax.cli.parsing import parse_targets
    from repair_jax.repair import format_table, run_study
    from repair_jax.runs import load_run, read_run_info

    check_flags(args)
    info = read_run_info(args.run)
    targets = parse_targets(args.pair, args.triplet, args.pairs, info["class_names"], args.triplets)
    check_distinct(targets)
    run_ = load_run(args.run)
    cfg = repair_config_from_args(args, run_)
    ds = run_.dataset()
    # --force restarts the study's own results log; nothing else in --out is deleted
    summary = run_study(run_.classifier(), ds, targets, args.out, cfg, progress=not args.no_progress,
                        force=args.force)
    print(format_table(summary))
    print(f"-> {args.out}/results.jsonl, summary.json, table.md")
    return 0
