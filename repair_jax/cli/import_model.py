"""``repair-jax import``: a user's own trained model as a run directory (:func:`repair_jax.runs.import_run`).

The model is named by its factory (``pkg.module:function``, importable from the working directory or
an installed package, returning a flax NNX or linen module) and its weights by a checkpoint (an orbax
checkpoint directory or a flax msgpack file). The run is checked by one forward pass; every other
subcommand (diagnose, explain, influence, repair, irepair, ...) then takes it with ``--run``.
"""

from __future__ import annotations

from repair_jax.cli.common import add_out, json_object, seed_type


def configure(p) -> None:
    from repair_jax.data import DATASETS

    p.add_argument("--model", required=True,
                   help="the model's factory, pkg.module:function (returns an NNX or linen module, or a "
                        "repair_jax Classifier such as from_apply_fn(fn, params))")
    p.add_argument("--model-kwargs", default="{}", help="JSON keyword arguments of the factory")
    p.add_argument("--checkpoint", required=True, help="the trained weights: an orbax checkpoint directory or a flax msgpack file")
    p.add_argument("--dataset", default="digits", help=f"the data the model classifies: one of {', '.join(DATASETS)}")
    p.add_argument("--data-dir", default=None, help="where the data set's files are (TFDS / IDX data sets)")
    p.add_argument("--seed", type=seed_type("--seed"), default=0, help="the seed of the train/val/pool/test split")
    p.add_argument("--features", default="auto",
                   help="the penultimate features: 'auto' (input of the last dense layer), a layer path, or 'none'")
    add_out(p, "the run directory to write (run.json, checkpoint.msgpack)")


def run(args) -> int:
    from repair_jax.runs import import_run

    kwargs = json_object("--model-kwargs", args.model_kwargs)
    features = None if args.features == "none" else args.features
    info = import_run(args.model, args.checkpoint, args.out, dataset=args.dataset, model_kwargs=kwargs,
                      data_dir=args.data_dir, seed=args.seed, features=features, force=args.force)
    acc = info.get("test_accuracy", info.get("test_map"))
    print(f"imported {args.model} ({info['model_kind']}, {info['num_classes']} classes, features: "
          f"{info['features'] or 'none'}): test accuracy {acc:.4f}")
    print(f"-> {args.out}")
    return 0
