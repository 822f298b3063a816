"""Train the BatchNorm CNN on the real Fashion-MNIST (IDX files) on CPU and diagnose it.

    python experiments/fashion_mnist_cnn.py [--epochs 6] [--width 32] [--out experiments/results/fashion_mnist_cnn]

Writes the run directory (``run/``), the diagnosis (``diagnosis/``) and ``summary.json`` with test
accuracy, the top confused pairs, the most biased triplets and wall time. ``--smoke`` trains one
epoch on 2,000 examples.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from repair_jax.cli import diagnose_run, train_run
from repair_jax.diagnosis import format_summary
from repair_jax.errors import exits_on_user_error
from repair_jax.io import write_json
from repair_jax.train import TrainConfig


@exits_on_user_error("fashion_mnist_cnn")
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--out", default="experiments/results/fashion_mnist_cnn")
    a = p.parse_args(argv)
    out = Path(a.out)
    cfg = TrainConfig(dataset="fashion_mnist", model="cnn", model_kwargs={"width": a.width},
                      epochs=1 if a.smoke else a.epochs, batch_size=a.batch_size, lr=a.lr, seed=a.seed,
                      data_dir=a.data_dir, train_limit=2000 if a.smoke else None)
    t0 = time.perf_counter()
    info = train_run(cfg, out / "run", force=True)
    d = diagnose_run(out / "run", out / "diagnosis")
    names = d["class_names"]
    summary = {
        "dataset": "fashion_mnist", "model": "cnn", "config": info["config"],
        "test_accuracy": info["test_accuracy"], "train_wall_time_s": info["wall_time"],
        "total_wall_time_s": time.perf_counter() - t0, "devices": info["devices"],
        "top_pairs": [{"classes": [names[i] for i in q["classes"]], "type1conf": q["type1conf"]}
                      for q in d["top_pairs"]],
        "top_triplets": [{"classes": [names[i] for i in q["classes"]], "cd": q["cd"]}
                         for q in d["top_triplets"]],
        "dob": d["dob"], "balanced_accuracy": d["balanced_accuracy"], "macro_f1": d["macro_f1"],
    }
    write_json(out / "summary.json", summary)
    print(format_summary(d))
    print(f"test accuracy {summary['test_accuracy']:.4f}; train {summary['train_wall_time_s']:.0f}s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
