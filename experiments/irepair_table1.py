"""RQ iv / Table 1 of 001_67555029b287879f.txt Sec. 5: single-class repair on the FC 2x256 network,
retraining vs I-REPAIR (gamma in {0.01, 0.05, 0.1, 0.5, 1}) vs MM repair, |R| in {1, 2, 4, 8},
learning rate 1e-4, accuracy drop on the test split (mean over classes and seeds, 95% CI, two-sample
t-test p-values against retraining).

    python experiments/irepair_table1.py --seeds 3          # Fashion-MNIST FC 2x256 (cached run)
    python experiments/irepair_table1.py --smoke
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments import irepair_common as common  # noqa: E402
from repair_jax.errors import exits_on_user_error


@exits_on_user_error("irepair_table1")
def main(argv=None) -> int:
    p = common.parser(__doc__.splitlines()[0], "experiments/results/irepair")
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--gammas", type=float, nargs="+", default=[0.01, 0.05, 0.1, 0.5, 1.0])
    p.add_argument("--mm-epsilons", type=float, nargs="*", default=[1.0, 5.0],
                   help="MM repair L-inf bounds (001 uses 1 and 5)")
    args = p.parse_args(argv)
    if args.smoke:
        args.sizes, args.gammas, args.seeds, args.mm_epsilons = [1, 2], [1.0], 2, [1.0]
        args.lr = 1e-3
    from repair_jax.repair.irepair import IRepairConfig
    from repair_jax.repair.protocol import run_jobs, summary_table

    ctx = common.context(args)
    base = IRepairConfig(ub=args.ub, lr=args.lr)
    jobs, classes = [], common.classes(args, ctx)
    for seed in range(args.seeds):  # seeds outermost: a cut-short sweep still covers every size
        for k in args.sizes:
            for c in classes:
                job = dict(classes=[c], repair_size=k, correct_size=args.correct_size, seed=seed, group=k)
                jobs.append({**job, "key": f"retrain/{k}/{c}/{seed}", "method": "retrain", "config": base})
                for g in args.gammas:
                    jobs.append({**job, "key": f"irepair{g}/{k}/{c}/{seed}", "method": "irepair",
                                 "config": dataclasses.replace(base, gamma=g)})
                for e in args.mm_epsilons:
                    jobs.append({**job, "key": f"mm{e}/{k}/{c}/{seed}", "method": "mm", "mm_epsilon": e,
                                 "config": base})
    runs = run_jobs(ctx, jobs, Path(args.out) / "table1.jsonl")
    header = (f"Table 1 analogue on {ctx.dataset.name} ({'smoke' if args.smoke else 'FC 2x256'}): "
              f"single-class repair, classes {classes}, {args.seeds} seeds, "
              f"|C| = {args.correct_size}, RMSprop lr {args.lr}, ub {args.ub}; accuracy before repair "
              f"{ctx.accuracy_before:.4f}; drop in percentage points on the test split.")
    methods = {"retrain": lambda r: r["method"] == "retrain"}
    methods.update({f"I-REPAIR gamma={g:g}": (lambda r, g=g: r["method"] == "irepair" and r["gamma"] == g)
                    for g in args.gammas})
    methods.update({f"MM eps={e:g}": (lambda r, e=e: r["method"] == "mm" and r["mm_epsilon"] == e)
                    for e in args.mm_epsilons})
    common.plot(args, "table1", runs, methods, f"{ctx.dataset.name}: single-class repair ({args.seeds} seeds)")
    common.finish(args, "table1", runs, summary_table(runs, baseline="retrain"), header)
    return 0


if __name__ == "__main__":
    sys.exit(main())
