"""``repair-jax irepair``: I-REPAIR and its baselines on repair problems drawn from a run's pool
(Henriksen et al. 2022, Sec. 5). Writes DIR/irepair.json (``{"runs": [...]}``) and
DIR/summary.md atomically (:func:`repair_jax.repair.protocol.write_irepair_result`)."""

from __future__ import annotations

from repair_jax.cli.common import add_config_flags, add_out
from repair_jax.errors import UserError, require_at_least


def configure(p) -> None:
    from repair_jax.repair.irepair import CORRECT_LOSSES, INFLUENCE_VARIANTS, IRepairConfig

    p.add_argument("--run", required=True, help="run directory written by `repair-jax train`")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--class", dest="class_", default=None, help="the class to repair (index or name)")
    g.add_argument("--classes", nargs="+", default=None, help="several classes (a multi-class repair set)")
    p.add_argument("--repair-size", type=int, required=True, help="misclassified inputs per class (K)")
    p.add_argument("--correct-size", type=int, default=40, help="|C|, uniform over classes")
    add_config_flags(p, IRepairConfig, ["gamma", "epsilon", "margin", "ub", "lr", "correct_loss", "influence"],
        correct_loss={"choices": list(CORRECT_LOSSES)}, influence={"choices": list(INFLUENCE_VARIANTS)})
    p.add_argument("--baseline", default=None, choices=["retrain", "random", "mm"],
                   help="also run this baseline on the same problems")
    p.add_argument("--lock-p", type=float, default=0.5, help="locking probability of --baseline random")
    p.add_argument("--mm-epsilon", type=float, default=None, help="L-inf bound of MM repair (default: none)")
    p.add_argument("--seeds", type=int, default=5, help="number of seeds (problems), 0..seeds-1")
    add_out(p, "output directory (irepair.json, summary.md)")


def check_flags(args):
    """The validated :class:`IRepairConfig` of the flags, checked with the counts before any run is loaded."""
    from repair_jax.repair.irepair import IRepairConfig

    for flag in ("seeds", "ub", "repair_size", "correct_size"):
        require_at_least(f"--{flag.replace('_', '-')}", getattr(args, flag), 1)
    if not 0 <= args.lock_p <= 1:
        raise UserError(f"--lock-p must lie in [0, 1], got {args.lock_p}")
    if args.class_ is None and not args.classes:
        raise UserError("give the class to repair with --class C or --classes C1 C2 ...")
    config = IRepairConfig(gamma=args.gamma, epsilon=args.epsilon, ub=args.ub, lr=args.lr,
                           margin=args.margin, correct_loss=args.correct_loss, influence=args.influence)
    config.validate()
    return config


def run(args) -> int:
    import sys

    from repair_jax.data import parse_class
    from repair_jax.progress import progress
    from repair_jax.repair.protocol import RepairContext, draw_problem, solve_problem, write_irepair_result
    from repair_jax.runs import load_run, read_run_info

    config = check_flags(args)
    names = read_run_info(args.run)["class_names"]
    classes = [parse_class(c, names) for c in (args.classes or [args.class_])]
    twice = sorted({names[c] for c in classes if classes.count(c) > 1})
    if twice:  # its misclassified inputs would enter the repair set twice
        raise UserError(f"--classes names class {', '.join(twice)} more than once")
    ctx = RepairContext.from_run(load_run(args.run))
    methods = ["irepair"] + ([args.baseline] if args.baseline else [])
    runs, notes = [], set()
    with progress(args.seeds * len(methods), "irepair", enabled=not args.no_progress) as bar:
        for seed in range(args.seeds):
            r_idx, c_idx, n = draw_problem(ctx, classes, args.repair_size, args.correct_size, seed)
            notes.update(n)
            for m in methods:
                rec = solve_problem(ctx, r_idx, c_idx, m, config, seed=seed, lock_p=args.lock_p,
                                    mm_epsilon=args.mm_epsilon)
                rec["group"] = args.repair_size
                runs.append(rec)
                bar.update(note=f"seed {seed} {m}")
    for n in sorted(notes):
        sys.stderr.write(f"note: {n}\n")
    table = write_irepair_result(args.out, runs, run_path=args.run, classes=classes, notes=notes,
                                 baseline=args.baseline, force=args.force)
    print(table)
    print(f"-> {args.out}/irepair.json")
    return 0
