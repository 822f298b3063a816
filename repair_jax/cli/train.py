"""``repair-jax train``: train a classifier and write a run directory (:func:`repair_jax.runs.train_run`)."""

from __future__ import annotations

from repair_jax.cli.common import add_out, json_object, seed_type
from repair_jax.errors import require_at_least


def add_train_args(p, defaults) -> None:
    """The flags of a :class:`~repair_jax.train.TrainConfig`, with ``defaults`` shown."""
    from repair_jax.data import DATASETS
    from repair_jax.models import model_names

    p.add_argument("--dataset", default=defaults.dataset, help=f"one of {', '.join(DATASETS)}")
    p.add_argument("--model", default=defaults.model, help=f"one of {', '.join(model_names())}")
    p.add_argument("--model-kwargs", default="{}", help='JSON options for the model, e.g. \'{"width": 16}\'')
    p.add_argument("--epochs", type=int, default=defaults.epochs, help="training epochs")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="examples per step")
    p.add_argument("--optimizer", default=defaults.optimizer, choices=["adam", "sgd", "rmsprop"], help="optimizer")
    p.add_argument("--lr", type=float, default=defaults.lr, help="peak learning rate")
    p.add_argument("--schedule", default=defaults.schedule, choices=["cosine", "constant", "step"],
                   help="learning-rate schedule")
    p.add_argument("--l2", type=float, default=defaults.l2, help="L2 coefficient in the objective")
    p.add_argument("--seed", type=seed_type("--seed"), default=defaults.seed,
                   help="the seed of the split, the initialisation and the batch order unless given below")
    for which, what in (("split", "the train/val/pool/test split and --train-limit's subset"),
                        ("init", "the initial weights"), ("order", "the order of the batches")):
        p.add_argument(f"--{which}-seed", type=seed_type(f"--{which}-seed"), default=None,
                       help=f"seed of {what} (default: --seed)")
    p.add_argument("--data-dir", default=None, help="directory with the data (IDX files, TFDS data)")
    p.add_argument("--train-limit", type=int, default=None, help="train on a stratified subset of this size")
    p.add_argument("--data-parallel", action="store_true",
                   help="shard each batch over all devices (default when there are several)")
    p.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize() first (multi-host; see README)")


def config_from_args(args):
    """The validated :class:`~repair_jax.train.TrainConfig` of :func:`add_train_args`' flags."""
    from repair_jax.train import TrainConfig

    model_kwargs = json_object("--model-kwargs", args.model_kwargs)
    cfg = TrainConfig(dataset=args.dataset, model=args.model, model_kwargs=model_kwargs,
                      epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer,
                      lr=args.lr, schedule=args.schedule, l2=args.l2, seed=args.seed,
                      split_seed=args.split_seed, init_seed=args.init_seed, order_seed=args.order_seed,
                      data_dir=args.data_dir, train_limit=args.train_limit)
    cfg.validate()
    return cfg


def configure(p) -> None:
    from repair_jax.train import TrainConfig

    add_train_args(p, TrainConfig())
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="K",
                   help="also keep the weights every K epochs (and the last), for TracInCP; 0 = only the final")
    add_out(p, "run directory to create")


def run(args) -> int:
    from repair_jax.models import create_model
    from repair_jax.runs import train_run

    cfg = config_from_args(args)
    require_at_least("--checkpoint-every", args.checkpoint_every, 0)
    create_model(cfg.model, 2, **cfg.model_kwargs)  # the module only (no weights): bad options fail before the data load
    if args.distributed:
        import jax
        jax.distributed.initialize()
    info = train_run(cfg, args.out, force=args.force, progress=not args.no_progress,
                     data_parallel=args.data_parallel, checkpoint_every=args.checkpoint_every)
    key = "test_map" if info["multilabel"] else "test_accuracy"
    print(f"trained {cfg.model} on {info['dataset']} in {info['wall_time']:.1f}s: "
          f"{key.replace('_', ' ')} {info[key]:.4f} -> {args.out}")
    return 0
