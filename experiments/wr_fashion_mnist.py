"""The WR repair study on the real Fashion-MNIST, CPU-sized (000_92ecc981581ec3ed.txt Sec. 4.3-4.4).

Trains (once, cached in OUT/run) a small BatchNorm CNN on a stratified train subset, diagnoses it,
and repairs (1) the most confused pair (type1conf) and (2) the most biased triplet containing
that pair (cd, anchor C chosen as the class with the largest cd, Sec. 4.1 "we keep the original
two classes in the confused pair" and pick a third with cd > 0), each with every method:
grid over rho on seed 0, selection on the validation split, then the selected settings with
``--seeds`` seeds. Outputs OUT/{pair,triplet}/{results.jsonl,summary.json,table.md,*.png}.

    python experiments/wr_fashion_mnist.py            # CPU-sized study (width-8 CNN, 6k images)
    python experiments/wr_fashion_mnist.py --run experiments/results/fashion_mnist_cnn/run \
        --ft-epochs 3 --ft-lr 2e-4 --ft-batch-size 128 --out experiments/results/wr_fashion_mnist_full
                                                      # the full width-32 model (GPU; README tables)
    python experiments/wr_fashion_mnist.py --model resnet18 --train-limit 0 --epochs 20 --ft-epochs 4 \
        --ft-optimizer sgd --ft-lr 0.01 --ft-schedule step --ft-batch-size 128 \
        --out experiments/results/wr_fashion_mnist_resnet18
                                                      # ResNet-18 with Table 1's recipe, shortened (GPU)
    python experiments/wr_fashion_mnist.py --smoke    # seconds, on scikit-learn digits
    python experiments/wr_fashion_mnist.py --dataset digits_multilabel --epochs 15 --ft-epochs 3 \
        --out experiments/results/wr_digits_multilabel   # multi-label (BCE, type2conf, mAP), CPU
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from repair_jax.errors import UserError, exits_on_user_error, require_at_least


# training recipes of the original model: the CPU-sized CNN, and 000 Sec. 4.1's recipe for the ResNets
# (SGD 0.1, Nesterov momentum 0.9, x0.1 at 50% and 75% of the epochs, L2 5e-4, batch 128)
RECIPES = {"cnn": dict(optimizer="adam", lr=3e-3, schedule="cosine", l2=0.0, batch_size=64),
           "resnet18": dict(optimizer="sgd", lr=0.1, schedule="step", l2=5e-4, batch_size=128)}


def model_kwargs(model: str, width: int) -> dict:
    return {"width": width, "dense": 4 * width} if model == "cnn" else {"width": width}


def metric_text(info: dict) -> str:
    return f"test mAP {info['test_map']:.4f}" if "test_map" in info else f"test accuracy {info['test_accuracy']:.4f}"


@exits_on_user_error("wr_fashion_mnist")
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="experiments/results/wr_fashion_mnist")
    p.add_argument("--dataset", default="fashion_mnist", choices=("fashion_mnist", "digits_multilabel"),
                   help="digits_multilabel: the synthetic multi-label composites of real digits (all of them)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny run on digits (digits_multilabel with --dataset digits_multilabel)")
    p.add_argument("--run", default=None,
                   help="repair this trained run (e.g. experiments/results/fashion_mnist_cnn/run) instead of "
                        "training a small one in OUT/run")
    p.add_argument("--model", default="cnn", choices=tuple(RECIPES),
                   help="cnn: SmallCNN, Adam 3e-3, batch 64; resnet18: ResNet-18 with 000 Sec. 4.1's recipe "
                        "(SGD 0.1, step schedule, L2 5e-4, batch 128)")
    p.add_argument("--train-limit", type=int, default=6000, help="stratified training subset; 0 = all 50,000")
    p.add_argument("--width", type=int, default=None, help="model width (default: cnn 8, resnet18 64)")
    p.add_argument("--epochs", type=int, default=3, help="training epochs of the original model")
    p.add_argument("--ft-epochs", type=int, default=1, help="fine-tuning epochs of every method")
    p.add_argument("--ft-lr", type=float, default=5e-4)
    p.add_argument("--ft-batch-size", type=int, default=64)
    p.add_argument("--ft-schedule", default="constant", choices=("constant", "cosine", "step"))
    p.add_argument("--ft-optimizer", default="adam", choices=("adam", "sgd"))
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--settings", default="pair,triplet")
    p.add_argument("--methods", default=None, help="comma-separated subset of the methods (default: all)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)

    import jax

    from repair_jax.cli import train_run
    from repair_jax.io import write_text
    from repair_jax.repair import RepairConfig, Targets, run_study
    from repair_jax.repair.study import format_table
    from repair_jax.runs import load_run
    from repair_jax.diagnosis import diagnose
    from repair_jax.models import check_model_options
    from repair_jax.train import TrainConfig

    out = Path(a.out)
    width = a.width if a.width is not None else {"cnn": 8, "resnet18": 64}[a.model]
    require_at_least("--train-limit", a.train_limit, 0)
    if a.smoke:
        dataset = "digits" if a.dataset == "fashion_mnist" else a.dataset
        limit, rhos, seeds = None, (0.1, 0.9), 2
        a.epochs, a.ft_epochs = 2, 1
        width = min(width, 4)
    else:
        dataset, rhos, seeds = a.dataset, (0.1, 0.3, 0.5, 0.7, 0.9), a.seeds
        limit = (a.train_limit or None) if dataset == "fashion_mnist" else None
    # every option is checked before the (possibly long) training of the original model
    rcfg = RepairConfig(epochs=a.ft_epochs, lr=a.ft_lr, batch_size=a.ft_batch_size, optimizer=a.ft_optimizer,
                        schedule=a.ft_schedule, seeds=seeds, rhos=rhos)
    if a.methods:
        rcfg.methods = tuple(dict.fromkeys(("orig", "orig-ft") + tuple(a.methods.split(","))))
    rcfg.validate()
    names = a.settings.split(",")
    if not names or any(n not in ("pair", "triplet") for n in names):
        raise UserError(f"--settings must be a comma-separated subset of pair,triplet, got {a.settings!r}")
    check_model_options(model_kwargs(a.model, width))
    run_dir = Path(a.run) if a.run else out / "run"
    if a.run and not (run_dir / "run.json").is_file():
        raise UserError(f"--run {a.run}: no run.json there")
    if not (run_dir / "run.json").is_file():
        cfg = TrainConfig(dataset=dataset, model=a.model, model_kwargs=model_kwargs(a.model, width),
                          epochs=a.epochs, seed=0, train_limit=limit, **RECIPES[a.model])
        info = train_run(cfg, run_dir, progress=not a.no_progress)
        print(f"trained: {metric_text(info)} in {info['wall_time']:.1f}s")
    run = load_run(run_dir)
    ds = run.dataset()
    d = diagnose(run.state(), ds, split="val", top_k=3)
    a_, b_ = d["top_pairs"][0]["classes"]
    err = np.asarray(d["pairwise_error"])
    # anchor C: the class giving the largest cd with the confused pair (the positive class first)
    c_ = max((c for c in range(ds.num_classes) if c not in (a_, b_)), key=lambda c: abs(err[a_, c] - err[b_, c]))
    if err[a_, c_] < err[b_, c_]:
        a_, b_ = b_, a_
    settings = {"pair": Targets(((a_, b_),)), "triplet": Targets(((a_, b_, c_),))}
    rcfg.l2 = run.config.l2  # fine-tuning keeps the run's L2
    tables = []
    for name in names:
        t0 = time.perf_counter()
        s = run_study(run.model, run.variables, ds, settings[name], out / name, rcfg,
                      progress=not a.no_progress)
        print(format_table(s))
        print(f"{name}: {time.perf_counter() - t0:.1f}s")
        tables.append(f"### {name}\n\n" + format_table(s))
    header = (f"Original model: {run.info['config']['model']} {run.info['config']['model_kwargs']}, "
              f"{run.info['config']['epochs']} epochs on {len(ds.train)} training examples of {ds.name}, "
              f"{metric_text(run.info)}. Targets diagnosed on the validation split. "
              f"Fine-tuning: {a.ft_epochs} epoch(s), {a.ft_optimizer} lr {a.ft_lr} ({a.ft_schedule}), "
              f"batch {a.ft_batch_size}, L2 {run.config.l2:g}, "
              f"{seeds} seeds. Devices: {', '.join(str(d) for d in jax.devices())}.\n\n")
    write_text(out / "tables.md", header + "\n".join(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
