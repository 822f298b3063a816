"""``repair-jax guide``: model guiding (Adebayo 2022, Algorithm 1) on a trained run.

Writes ``OUT/guide.json`` (F_nl and F_spu with scores and suggested labels, concept fits, accuracy
of the original / carved / guided model before and after, the bilevel trace's summary, warnings),
``OUT/carving.npz`` (the concept basis and the carved and guided heads) and ``OUT/run/``, the guided
model as an ordinary run directory (its last Dense layer is the guided concept head), through
:func:`repair_jax.guiding.pipeline.write_guiding_result`.
"""

from __future__ import annotations

import sys
import warnings

from repair_jax.cli.common import add_config_flags, add_out
from repair_jax.errors import UserError


def configure(p) -> None:
    p.add_argument("--run", required=True, help="run directory written by `repair-jax train`")
    p.add_argument("--audit", required=True, help="audit set JSON (with its npz beside it)")
    p.add_argument("--concepts", required=True, help="concept library JSON")
    add_out(p, "output directory (guide.json, carving.npz, run/)")
    from repair_jax.guiding import BilevelConfig, GuidingConfig

    add_config_flags(p, BilevelConfig, ["gamma", "fi_weight", "l2"])
    add_config_flags(p, GuidingConfig, ["tau_nl", "tau_spu", "budget"])
    add_config_flags(p, BilevelConfig, ["outer_steps", "outer_lr", "inner_maxiter"])


def run(args) -> int:
    from repair_jax.guiding import BilevelConfig, GuidingConfig, LowerLevelNotConverged, load_audit, load_concepts
    from repair_jax.guiding.pipeline import guide_network, write_guiding_result
    from repair_jax.runs import load_run

    config = GuidingConfig(BilevelConfig(gamma=args.gamma, fi_weight=args.fi_weight, l2=args.l2,
                                         outer_steps=args.outer_steps, outer_lr=args.outer_lr,
                                         inner_maxiter=args.inner_maxiter),
                           tau_nl=args.tau_nl, tau_spu=args.tau_spu, budget=args.budget, carve_l2=args.l2)
    config.validate()
    library = load_concepts(args.concepts)
    r = load_run(args.run)
    if r.info.get("multilabel"):
        raise UserError("model guiding needs a single-label classifier; this run is multi-label")
    ds = r.dataset()
    audit = load_audit(args.audit, library, num_classes=ds.num_classes, input_shape=tuple(r.info["input_shape"]))
    if audit.task != "classification":
        raise UserError("the audit set of a classifier run must have task \"classification\"")
    state = r.state()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LowerLevelNotConverged)
        report, guided, result, carved = guide_network(
            state, r.variables, ds.train.x, ds.train.y, audit, library, config, ds.num_classes, ds.class_names,
            ds.test.x, ds.test.y, progress=not args.no_progress)
    msgs = [str(w.message) for w in caught if issubclass(w.category, LowerLevelNotConverged)]
    for msg in msgs:
        sys.stderr.write(f"repair-jax guide: warning: {msg}\n")
    report = {"run": str(args.run), "audit": str(args.audit), "concepts": report.pop("concepts"),
              "warnings": msgs, **report}
    write_guiding_result(args.out, report, guided, result, carved, r.info, args.run, force=args.force)
    m = report["metrics"]["test"]
    print(f"model guiding: {len(report['F_nl'])} points flagged as mislabelled, {len(report['F_spu'])} as relying "
          f"on a spurious signal (budget {args.budget})")
    print(f"test accuracy: original {m['original_accuracy']:.4f}, carved {m['carved_accuracy']:.4f}, "
          f"guided {m['guided_accuracy']:.4f} -> {args.out}/guide.json, {args.out}/run")
    return 0
