"""``repair-jax irepair``: I-REPAIR and its baselines on repair problems drawn from a run's pool
(001_67555029b287879f.txt Sec. 5). Writes DIR/irepair.json (``{"runs": [...]}``) and
DIR/summary.md atomically."""

from __future__ import annotations

from repair_jax.errors import UserError


def configure(p) -> None:
    p.add_argument("--run", required=True, help="run directory written by `repair-jax train`")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--class", dest="class_", default=None, help="the class to repair (index or name)")
    g.add_argument("--classes", nargs="+", default=None, help="several classes (a multi-class repair set)")
    p.add_argument("--repair-size", type=int, required=True, help="misclassified inputs per class (K)")
    p.add_argument("--correct-size", type=int, default=40, help="|C|, uniform over classes")
    p.add_argument("--gamma", type=float, default=1.0)
    p.add_argument("--epsilon", type=float, default=1e-8, help="epsilon of the influence score")
    p.add_argument("--margin", type=float, default=0.0, help="softmax margin delta for 'repaired' (RQ iii)")
    p.add_argument("--ub", type=int, default=5000, help="iteration bound")
    p.add_argument("--lr", type=float, default=1e-4, help="RMSprop learning rate")
    p.add_argument("--correct-loss", default="magnitude", choices=["magnitude", "cross_entropy"])
    p.add_argument("--influence", default="mean", choices=["mean", "mean_abs"],
                   help="Algorithm 1 as in the paper (mean) or per-example mean absolute gradients")
    p.add_argument("--baseline", default=None, choices=["retrain", "random", "mm"],
                   help="also run this baseline on the same problems")
    p.add_argument("--lock-p", type=float, default=0.5, help="locking probability of --baseline random")
    p.add_argument("--mm-epsilon", type=float, default=None, help="L-inf bound of MM repair (default none)")
    p.add_argument("--seeds", type=int, default=5, help="number of seeds (problems), 0..seeds-1")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    p.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    import sys

    from tqdm.auto import tqdm

    from repair_jax.io import atomic_dir, write_json, write_text
    from repair_jax.repair.irepair import IRepairConfig
    from repair_jax.repair.protocol import RepairContext, draw_problem, solve_problem, summary_table
    from repair_jax.runs import load_run

    if args.seeds <= 0:
        raise UserError(f"--seeds must be positive, got {args.seeds}")
    config = IRepairConfig(gamma=args.gamma, epsilon=args.epsilon, ub=args.ub, lr=args.lr,
                           margin=args.margin, correct_loss=args.correct_loss, influence=args.influence)
    config.validate()
    ctx = RepairContext.from_run(load_run(args.run))
    ds = ctx.dataset
    if args.classes:
        classes = [ds.class_index(c) for c in args.classes]
    elif args.class_ is not None:
        classes = [ds.class_index(args.class_)]
    else:
        raise UserError("give the class to repair with --class C or --classes C1 C2 ...")
    methods = ["irepair"] + ([args.baseline] if args.baseline else [])
    runs, notes = [], set()
    bar = tqdm(total=args.seeds * len(methods), desc="irepair", disable=None if not args.no_progress else True)
    for seed in range(args.seeds):
        r_idx, c_idx, n = draw_problem(ctx, classes, args.repair_size, args.correct_size, seed)
        notes.update(n)
        for m in methods:
            rec = solve_problem(ctx, r_idx, c_idx, m, config, seed=seed, lock_p=args.lock_p,
                                mm_epsilon=args.mm_epsilon)
            rec["group"] = args.repair_size
            runs.append(rec)
            bar.update(1)
    bar.close()
    for n in sorted(notes):
        sys.stderr.write(f"note: {n}\n")
    table = summary_table(runs, baseline=args.baseline if args.baseline else None)
    with atomic_dir(args.out, overwrite=args.force) as tmp:
        write_json(tmp / "irepair.json", {"run": str(args.run), "classes": classes,
                                          "notes": sorted(notes), "runs": runs})
        write_text(tmp / "summary.md", table + "\n")
    print(table)
    print(f"-> {args.out}/irepair.json")
    return 0
