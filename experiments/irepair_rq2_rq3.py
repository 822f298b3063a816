"""RQ ii and RQ iii of 001_67555029b287879f.txt Sec. 5.

RQ ii: influence locking against random locking with probability p in {0.1, 0.3, 0.5, 0.7, 0.9}
(Fig. 1b, |R| = 8), and the correct-set influence loss: output magnitude against cross-entropy
(|R| in {1, 2, 4, 8}). RQ iii: the margin stopping rule (Fig. 1c): I-REPAIR and retraining with
softmax margins delta. Accuracy drop on the test split, 95% CIs, t-test p-values.

    python experiments/irepair_rq2_rq3.py --part locking --seeds 3
    python experiments/irepair_rq2_rq3.py --part loss --seeds 3
    python experiments/irepair_rq2_rq3.py --part margin --seeds 3
    python experiments/irepair_rq2_rq3.py --smoke
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments import irepair_common as common  # noqa: E402
from repair_jax.errors import exits_on_user_error


@exits_on_user_error("irepair_rq2_rq3")
def main(argv=None) -> int:
    p = common.parser(__doc__.splitlines()[0], "experiments/results/irepair")
    p.add_argument("--part", choices=["locking", "loss", "margin"], default="locking")
    p.add_argument("--gamma", type=float, default=1.0)
    p.add_argument("--probabilities", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7, 0.9])
    p.add_argument("--sizes", type=int, nargs="+", default=None)
    p.add_argument("--margins", type=float, nargs="+", default=[0.0, 0.1, 0.3, 0.5])
    args = p.parse_args(argv)
    if args.sizes is None:
        args.sizes = {"locking": [8], "loss": [1, 2, 4, 8], "margin": [4, 8]}[args.part]
    if args.smoke:
        args.sizes, args.seeds, args.probabilities, args.margins, args.lr = [1], 2, [0.5], [0.0, 0.3], 1e-3
    from repair_jax.repair.protocol import run_jobs, summary_table

    ctx, classes, cfg = common.setup(args)
    jobs = []
    for seed in range(args.seeds):
        for k in args.sizes:
            for c in classes:
                job = dict(classes=[c], repair_size=k, correct_size=args.correct_size, seed=seed)
                tag = f"{k}/{c}/{seed}"
                if args.part == "locking":
                    jobs.append({**job, "group": k, "key": f"irepair/{tag}", "method": "irepair", "config": cfg})
                    for pr in args.probabilities:
                        jobs.append({**job, "group": k, "key": f"random{pr}/{tag}", "method": "random",
                                     "lock_p": pr, "config": cfg})
                elif args.part == "loss":
                    for loss in ("magnitude", "cross_entropy"):
                        jobs.append({**job, "group": f"{k}, C loss {loss}", "key": f"{loss}/{tag}",
                                     "method": "irepair", "config": dataclasses.replace(cfg, correct_loss=loss)})
                else:
                    for m in args.margins:
                        c_m = dataclasses.replace(cfg, margin=m)
                        jobs.append({**job, "group": f"{k}, margin {m:g}", "key": f"irepair{m}/{tag}",
                                     "method": "irepair", "config": c_m})
                        jobs.append({**job, "group": f"{k}, margin {m:g}", "key": f"retrain{m}/{tag}",
                                     "method": "retrain", "config": c_m})
    name = f"rq_{args.part}"
    runs = run_jobs(ctx, jobs, Path(args.out) / f"{name}.jsonl")
    baseline = {"locking": "irepair", "loss": None, "margin": "retrain"}[args.part]
    header = (f"RQ {'iii' if args.part == 'margin' else 'ii'} ({args.part}) on {ctx.dataset.name}: classes "
              f"{classes}, {args.seeds} seeds, |R| {args.sizes}, |C| = {args.correct_size}, gamma {args.gamma}, "
              f"RMSprop lr {args.lr}, ub {args.ub}; accuracy before {ctx.accuracy_before:.4f}; drop in "
              "percentage points.")
    table = summary_table(runs, baseline=baseline)
    if args.part == "loss":  # t-test of the two correct-set losses at each |R|
        from repair_jax.repair.protocol import t_test_p
        drops = lambda k, loss: [100 * r["accuracy_drop"] for r in runs
                                 if r["requested_size"] == k and r["correct_loss"] == loss]
        table += "\n\n" + "\n".join(
            f"|R| = {k}: p (magnitude vs cross-entropy) = {t_test_p(drops(k, 'magnitude'), drops(k, 'cross_entropy')):.3g}"
            for k in args.sizes)
    common.finish(args, name, runs, table, header)
    return 0


if __name__ == "__main__":
    sys.exit(main())
