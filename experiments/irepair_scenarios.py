"""RQ i of 001_67555029b287879f.txt Sec. 5: I-REPAIR against retraining.

Scenario 1 (Fig. 1a): single-class repair sets of size K in {1, 2, 4, 8, 16, 32} for every class
(all misclassified inputs when a class has fewer), |C| = 40 uniform over classes, many seeds.
Scenario 2 (Fig. 1d): repair sets spread over 1..10 classes with K in {1, 2, 4} per class (the
classes of a problem drawn at random per seed). Accuracy drop on the test split with 95% CIs and
two-sample t-test p-values (I-REPAIR vs retraining).

    python experiments/irepair_scenarios.py --scenario 1 --sizes 1 2 4 8 --seeds 3
    python experiments/irepair_scenarios.py --scenario 2 --num-classes 1 2 5 10 --seeds 3
    python experiments/irepair_scenarios.py --smoke
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments import irepair_common as common  # noqa: E402
from repair_jax.errors import exits_on_user_error


@exits_on_user_error("irepair_scenarios")
def main(argv=None) -> int:
    p = common.parser(__doc__.splitlines()[0], "experiments/results/irepair")
    p.add_argument("--scenario", type=int, choices=[1, 2], default=1)
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help="K per class (default 1 2 4 8 16 32 for scenario 1, 1 2 4 for scenario 2)")
    p.add_argument("--num-classes", type=int, nargs="+", default=list(range(1, 11)),
                   help="scenario 2: how many classes a repair set spans")
    p.add_argument("--gamma", type=float, default=1.0, help="001 uses 2 for the ResNet")
    args = p.parse_args(argv)
    if args.sizes is None:
        args.sizes = [1, 2, 4, 8, 16, 32] if args.scenario == 1 else [1, 2, 4]
    if args.smoke:
        args.sizes, args.seeds, args.num_classes, args.lr = [1, 2], 2, [1, 2], 1e-3
    from repair_jax.repair.protocol import run_jobs, summary_table

    ctx, classes, cfg = common.setup(args)
    jobs = []
    for seed in range(args.seeds):
        for k in args.sizes:
            if args.scenario == 1:
                problems = [([c], k, f"{k}/{c}") for c in classes]
            else:
                rng = np.random.default_rng(1000 + seed)
                problems = [(sorted(rng.choice(classes, size=min(m, len(classes)), replace=False).tolist()),
                             k, f"{k}/m{m}") for m in args.num_classes]
            for cls, kk, tag in problems:
                group = kk if args.scenario == 1 else f"{len(cls)} classes x {kk}"
                job = dict(classes=cls, repair_size=kk, correct_size=args.correct_size, seed=seed, group=group)
                jobs.append({**job, "key": f"irepair/{tag}/{seed}", "method": "irepair", "config": cfg})
                jobs.append({**job, "key": f"retrain/{tag}/{seed}", "method": "retrain",
                             "config": dataclasses.replace(cfg, gamma=1.0)})
    name = f"scenario{args.scenario}"
    runs = run_jobs(ctx, jobs, Path(args.out) / f"{name}.jsonl")
    header = (f"Scenario {args.scenario} on {ctx.dataset.name}: classes {classes}, {args.seeds} seeds, "
              f"K {args.sizes}, |C| = {args.correct_size}, gamma {args.gamma}, RMSprop lr {args.lr}, "
              f"ub {args.ub}; accuracy before {ctx.accuracy_before:.4f}; drop in percentage points.")
    common.plot(args, name, runs, {"retrain": lambda r: r["method"] == "retrain",
                                   f"I-REPAIR gamma={args.gamma:g}": lambda r: r["method"] == "irepair"},
                f"{ctx.dataset.name}: scenario {args.scenario} ({args.seeds} seeds)")
    common.finish(args, name, runs, summary_table(runs, baseline="retrain"), header)
    return 0


if __name__ == "__main__":
    sys.exit(main())
