"""Table 1 settings of 000_92ecc981581ec3ed.txt (single-label), GPU-sized, through TFDS.

One config per setting (dataset, model, targets, schedules of Sec. 4.1): train the original model
(SGD, lr 0.1, x0.1 at 50% and 75% of 300 epochs), then repair with 60 fine-tuning epochs, the rho
grid of Sec. 4.4 and 5 seeds for the selected settings. Each setting writes OUT/<setting>/run (cached)
and OUT/<setting>/<pair|triplet|pairs>/{results.jsonl,summary.json,table.md,*.png}.

    python experiments/wr_cifar.py --setting cifar10_resnet18 [--data-dir ~/tensorflow_datasets]
    python experiments/wr_cifar.py --setting all --smoke   # tfds.testing.mock_data, tiny widths, seconds

The fine-tuning learning rate is not given in the paper; we use 0.01 (the rate the training
schedule has reached after its first decay), SGD with the same step schedule over the 60 epochs.
CIFAR class indices: airplane 0, automobile 1, bird 2, cat 3, deer 4, dog 5, frog 6, horse 7, ship 8,
truck 9; CIFAR-100: boy 11, girl 35, woman 98.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

from repair_jax.errors import UserError, exits_on_user_error

CAT, DOG, BIRD, AUTOMOBILE, TRUCK = 3, 5, 2, 1, 9
BOY, GIRL, WOMAN = 11, 35, 98

# name -> (dataset, model, model kwargs, smoke kwargs, {study: groups})
SETTINGS = {
    "cifar10_resnet18": ("cifar10", "resnet18", {}, {"width": 4},
                         {"pair": [(CAT, DOG)], "triplet": [(DOG, CAT, BIRD)]}),
    "cifar10_vgg11_bn": ("cifar10", "vgg11_bn", {}, {"width_mult": 0.0625},
                         {"pair": [(CAT, DOG)], "triplet": [(DOG, CAT, BIRD)]}),
    "cifar10_mobilenet_v2": ("cifar10", "mobilenet_v2", {}, {"width_mult": 0.1},
                             {"pair": [(CAT, DOG)], "triplet": [(DOG, CAT, BIRD)]}),
    "cifar100_resnet34": ("cifar100", "resnet34", {}, {"width": 4},
                          {"pair": [(GIRL, WOMAN)], "triplet": [(WOMAN, GIRL, BOY)]}),
    "cifar10_resnet18_two_pairs": ("cifar10", "resnet18", {}, {"width": 4},
                                   {"pairs": [(CAT, DOG), (AUTOMOBILE, TRUCK)]}),
}


def run_setting(name: str, out: Path, smoke: bool, data_dir, seeds: int | None, train_epochs: int,
                repair_epochs: int, progress: bool, methods=None, studies_only=None) -> list[str]:
    from repair_jax.cli import train_run
    from repair_jax.repair import RepairConfig, Targets, format_table, run_study
    from repair_jax.runs import load_run
    from repair_jax.train import TrainConfig

    dataset, model, kw, smoke_kw, studies = SETTINGS[name]
    if smoke:
        kw, train_epochs, repair_epochs, rhos, bs = smoke_kw, 1, 1, (0.5,), 8
        seeds = 2 if seeds is None else seeds
    else:
        rhos, bs = (0.1, 0.3, 0.5, 0.7, 0.9), 128
        seeds = 5 if seeds is None else seeds
    bad = [k for k in (studies_only or ()) if k not in studies]
    if bad:
        raise UserError(f"setting {name} has no study {', '.join(bad)}; it has {', '.join(studies)}")
    if studies_only:
        studies = {k: v for k, v in studies.items() if k in studies_only}
    rcfg = RepairConfig(epochs=repair_epochs, lr=0.01, batch_size=bs, optimizer="sgd", schedule="step",
                        l2=5e-4, seeds=seeds, rhos=rhos)
    if methods:
        rcfg.methods = tuple(dict.fromkeys(("orig", "orig-ft") + tuple(methods)))
    rcfg.validate()  # before the (long) training of the original model
    run_dir = out / name / "run"
    if not (run_dir / "run.json").is_file():
        cfg = TrainConfig(dataset=dataset, model=model, model_kwargs=kw, epochs=train_epochs, batch_size=bs,
                          optimizer="sgd", lr=0.1, schedule="step", l2=rcfg.l2, seed=0, data_dir=data_dir)
        train_run(cfg, run_dir, progress=progress)
    run = load_run(run_dir)
    ds = run.dataset()
    tables = []
    for study, groups in studies.items():
        t0 = time.perf_counter()
        s = run_study(run.model, run.variables, ds, Targets(tuple(groups)), out / name / study, rcfg,
                      progress=progress)
        tables.append(f"### {name} / {study} ({time.perf_counter() - t0:.0f}s)\n\n" + format_table(s))
        print(tables[-1])
    return tables


@exits_on_user_error("wr_cifar")
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setting", default="all", help=f"all or one of {', '.join(SETTINGS)}")
    p.add_argument("--out", default="experiments/results/wr_cifar")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--smoke", action="store_true", help="mock TFDS data, tiny models (seconds per setting)")
    p.add_argument("--seeds", type=int, default=None, help="seeds of the selected settings (5; smoke: 2)")
    p.add_argument("--methods", default=None, help="comma-separated subset of the methods (default: all)")
    p.add_argument("--studies", default=None, help="comma-separated subset of pair,triplet,pairs")
    p.add_argument("--train-epochs", type=int, default=300)
    p.add_argument("--repair-epochs", type=int, default=60)
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    from repair_jax.io import write_text

    names = list(SETTINGS) if a.setting == "all" else a.setting.split(",")
    bad = [n for n in names if n not in SETTINGS]
    if bad:
        raise UserError(f"unknown setting(s) {', '.join(bad)}; choose from {', '.join(SETTINGS)}")
    out = Path(a.out)
    for n in names:
        ctx = contextlib.nullcontext()
        if a.smoke:  # enough mock examples that CIFAR-100's target classes occur in the train split
            import tensorflow_datasets as tfds
            ctx = tfds.testing.mock_data(num_examples=400 if SETTINGS[n][0] == "cifar100" else 48,
                                         policy=tfds.testing.MockPolicy.USE_CODE)
        with ctx:
            tables = run_setting(n, out, a.smoke, a.data_dir, a.seeds, a.train_epochs, a.repair_epochs,
                                 not a.no_progress, a.methods.split(",") if a.methods else None,
                                 a.studies.split(",") if a.studies else None)
            write_text(out / n / "tables.md", "\n".join(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
