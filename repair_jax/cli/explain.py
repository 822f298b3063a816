"""``repair-jax explain``: attributions of one example of a trained run (Adebayo 2022, Ch. 3.2; Sharma n.d., GradCAM).

``repair-jax explain --run RUN --index I [--split test] [--methods all|grad,ig,...] --out DIR``
writes ``DIR/attributions.npz``, ``DIR/summary.json`` and ``DIR/attributions.png``.
"""

from __future__ import annotations

import argparse


def configure(p: argparse.ArgumentParser) -> None:
    from repair_jax.cli.common import add_out
    from repair_jax.data import SPLITS
    from repair_jax.explain import ATTRIBUTIONS, SEGMENTATIONS

    p.add_argument("--run", required=True, help="run directory (from `repair-jax train`)")
    p.add_argument("--index", type=int, required=True, help="index of the example in --split")
    p.add_argument("--split", default="test", choices=SPLITS, help="split holding the example")
    p.add_argument("--methods", default="all",
                   help=f"'all' or a comma-separated list of {', '.join(ATTRIBUTIONS)}")
    p.add_argument("--target", type=int, default=None, help="class to explain (default: the predicted class)")
    p.add_argument("--layer", default=None,
                   help="GradCAM layer, a flax module path such as Conv_3 (default: the last convolution)")
    p.add_argument("--steps", type=int, default=50, help="Integrated Gradients steps")
    p.add_argument("--samples", type=int, default=50,
                   help="SmoothGrad / VarGrad / Expected Gradients samples (LIME: 1000, KernelSHAP: 2048)")
    p.add_argument("--segments", default="patches", choices=SEGMENTATIONS,
                   help="LIME / KernelSHAP segments: a 4 x 4 grid of patches or about 16 SLIC superpixels")
    add_out(p, "output directory (attributions.npz, summary.json, attributions.png)")


def run(args) -> int:
    from repair_jax.explain.pipeline import explain_run

    s = explain_run(args.run, args.index, args.out, split=args.split, methods=args.methods, target=args.target,
                    layer=args.layer, steps=args.steps, samples=args.samples, segments=args.segments,
                    force=args.force, progress=not args.no_progress)
    print(f"{s['split']} #{s['index']}: label {s['label']}, predicted {s['predicted']}, "
          f"explaining class {s['target']} ({s['target_name']})")
    for name, m in s["methods"].items():
        extra = f", IG completeness gap {m['completeness_gap']:+.2e}" if "completeness_gap" in m else ""
        print(f"  {name:15s} sum {m['sum']:+.4g}  |sum| {m['abs_sum']:.4g}  ({m['seconds']:.2f} s){extra}")
    if s["skipped"]:
        print(f"  skipped (no convolutional layer): {', '.join(s['skipped'])}")
    print(f"-> {args.out}/attributions.npz, summary.json, attributions.png")
    return 0
