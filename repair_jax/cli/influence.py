"""``repair-jax influence``: rank the training points of a run by their influence on one test
point's loss (Adebayo 2022, Eq. 3.1/6.2), on each of several test points' losses (``--test-index 3,17,42`` or
``--test-index all``: one fitted Hessian, one block solve; scores.npy (M, N)), on a group disparity
metric of the test set (Eq. 6.4), or on the soft confusion of a class pair (``--pair A,B``: type1conf)
or triplet (``--triplet A,B,C``: cd), Zhong et al. 2022, Sec. 2.2.

A thin layer over :func:`repair_jax.influence.workflow.influence_run` (which documents the files
written, the damping rule and the float32 underflow check): parse, validate, call, print. Exit
codes: 0 done; 2 bad input; 3 the inverse-HVP solve did not converge for some test point (results are still written,
marked ``"converged": false`` in summary.json and "NOT CONVERGED" in the plot) unless
``--allow-inexact`` is given.
"""

from __future__ import annotations

import sys

from repair_jax.errors import UserError

EXIT_NOT_CONVERGED = 3


def configure(p) -> None:
    from repair_jax.cli.common import add_out
    from repair_jax.influence.methods import FIT_METHODS, INFLUENCE_METHODS
    from repair_jax.influence.workflow import DEFAULT_RELATIVE_DAMPING, METHODS, SPLITS
    from repair_jax.metrics import GROUP_DISPARITY_METRICS

    p.add_argument("--run", required=True, help="run directory written by `repair-jax train`")
    add_out(p, "output directory (influence.json, scores.npy, summary.json, influence.png)")
    p.add_argument("--test-index", default=None,
                   help="index of the test point (target: its loss); several as 3,17,42 or a whole split as all "
                        f"({', '.join(FIT_METHODS)}: one fit, one block solve; scores.npy is then (M, N), one row "
                        "per index)")
    p.add_argument("--split", default="test", choices=SPLITS, help="where the test point/group lives")
    p.add_argument("--method", default="cg", choices=METHODS,
                   help="influence method: " + "; ".join(f"{n}: {INFLUENCE_METHODS[n].description}" for n in METHODS))
    p.add_argument("--top", type=int, default=20, help="how many training points to list in influence.json "
                                                       "(all scores go to scores.npy)")
    p.add_argument("--metric", default=None, choices=GROUP_DISPARITY_METRICS,
                   help="target a group disparity metric of the test split instead of one test loss")
    p.add_argument("--group", default=None,
                   help="the test group for --metric: label=C (true class C), pred=C (predicted class C), "
                        "intensity>T or intensity<T (mean pixel intensity threshold), or all")
    p.add_argument("--positive", default=None,
                   help="positive class (index or name); required by --metric fpr/fnr, used by brier on binary data")
    p.add_argument("--pair", default=None,
                   help="target the soft type1conf of classes A,B (indices or names) on the split instead of one "
                        "test loss (Zhong et al. 2022, Sec. 2.2.1)")
    p.add_argument("--triplet", default=None,
                   help="target the soft confusion disparity cd(A, B, C) = |type1conf(A,C) - type1conf(B,C)| "
                        "of classes A,B,C on the split (Zhong et al. 2022, Sec. 2.2.2)")
    p.add_argument("--damping", type=float, default=None,
                   help="absolute damping added to the Hessian (H + damping I); default: relative, see "
                        "--relative-damping")
    p.add_argument("--relative-damping", type=float, default=None,
                   help=f"damping = this x the largest eigenvalue of H (power iteration); the default "
                        f"({DEFAULT_RELATIVE_DAMPING}) makes H + damping I's condition number at most ~"
                        f"{1 / DEFAULT_RELATIVE_DAMPING:.0f} where H is positive semi-definite; raise it when the "
                        "solve does not converge (e.g. an undertrained model)")
    p.add_argument("--tol", type=float, default=None,
                   help="solver tolerance on the relative residual (default: cg 1e-4 in float32, 1e-5 with --x64; "
                        "1e-4 lissa/explicit)")
    p.add_argument("--max-iter", type=int, default=None,
                   help="CG iterations / LiSSA steps (default: 1000 cg, 5000 lissa)")
    p.add_argument("--scale", type=float, default=None,
                   help="LiSSA scale (default: 1.1 x the largest eigenvalue of H + damping I)")
    p.add_argument("--chunk-size", type=int, default=512, help="examples per jitted chunk")
    p.add_argument("--x64", action="store_true",
                   help="compute in float64 (the whole computation runs under jax.enable_x64); use it when float32 "
                        "underflows, e.g. for a confidently classified test point (the run warns)")
    p.add_argument("--allow-inexact", action="store_true",
                   help=f"exit 0 even when the solve did not converge (otherwise exit {EXIT_NOT_CONVERGED})")


def _options(args) -> dict:
    """The library's typed options of the flags (the strings parsed by :mod:`repair_jax.cli.parsing`)."""
    from repair_jax.cli.parsing import parse_classes, parse_group, parse_test_indices

    return dict(test_index=parse_test_indices(args.test_index), split=args.split, method=args.method, top=args.top,
                metric=args.metric, group=parse_group(args.group), positive=args.positive, damping=args.damping,
                relative_damping=args.relative_damping, tol=args.tol, max_iter=args.max_iter, scale=args.scale,
                chunk_size=args.chunk_size, pair=parse_classes("--pair", args.pair, 2),
                triplet=parse_classes("--triplet", args.triplet, 3))


def run(args) -> int:
    from repair_jax.influence.workflow import validate_influence_args

    options = _options(args)
    if options["metric"] is not None and options["group"] is None:
        raise UserError("--metric needs a group definition: pass --group (e.g. label=3 or intensity>0.3)")
    validate_influence_args(**options)
    from repair_jax.influence.workflow import influence_run

    # x64: influence_run computes inside jax.enable_x64 (scoped: callers of main() in-process keep float32)
    s = influence_run(args.run, args.out, x64=args.x64, force=args.force, progress=not args.no_progress, **options)
    t, solver = s["target"], s["solver"]
    if t["kind"] == "test_loss":
        what = f"loss of {t['split']} point {t['test_index']}"
    elif t["kind"] == "test_losses":
        what = f"losses of {len(t['test_indices'])} {t['split']} points"
    elif t["kind"] == "group_disparity":
        what = f"{t['metric']} of group {t['group']} ({t['group_size']} points)"
    else:
        what = f"soft {t['metric']} of classes {','.join(t['class_names'])} on the {t['split']} split"
    residual = f", relative residual {solver['residual']:.3g}" if "residual" in solver else ""
    print(f"influence of {s['num_train']} training points on the {what} ({solver['method']} in {s['dtype']}, "
          f"{solver['status']}{residual}, {s['seconds']:.1f}s)")
    listing = ([(f"test {p['test_index']} ", p) for p in s["per_test_point"][:5]] if "per_test_point" in s
               else [("", s)])
    for prefix, entry in listing:
        for name in ("most_harmful", "most_helpful"):
            top = ", ".join(f"#{d['train_index']} ({d['score']:+.3g})" for d in entry[name][:5])
            print(f"  {prefix}{name.replace('_', ' ')}: {top}")
    print(f"-> {args.out}/influence.json, scores.npy")
    for w in s["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    if not s["converged"] and not args.allow_inexact:
        print(_not_converged(solver, args.out), file=sys.stderr)
        return EXIT_NOT_CONVERGED
    return 0


def _not_converged(solver: dict, out) -> str:
    """The one-line error of a solve with a column that did not converge (naming the test points)."""
    bad = [c["test_index"] for c in solver.get("columns", []) if not c["converged"] and "test_index" in c]
    which = f" for test points {bad[:10]}{'...' if len(bad) > 10 else ''}" if len(solver.get("columns", [])) > 1 else ""
    if "suggested_relative_damping" in solver:
        fix = f"--relative-damping {solver['suggested_relative_damping']:.3g} should converge"
    elif "suggested_damping" in solver:
        fix = f"--damping {solver['suggested_damping']:.3g} should converge"
    else:
        fix = "raise --relative-damping" if solver["status"] == "diverged" else "raise --max-iter or --relative-damping"
    return (f"repair-jax influence: error: the {solver['method']} solve {solver['status'].replace('_', ' ')}{which} "
            f"(relative residual {solver['residual']:.3g} > tol {solver['tol']:.3g}); results in {out} are "
            f"marked NOT CONVERGED ({fix}, or pass --allow-inexact to accept them)")
