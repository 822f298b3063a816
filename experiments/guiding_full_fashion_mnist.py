"""Model guiding at full scale (002_97a11baaf249c571.txt Sec. 5.2, Algorithm 1): all 60,000
Fashion-MNIST training images, 20% of their labels flipped (synthetic noise on real data), guided
through the width-32 CNN of ``experiments/fashion_mnist_cnn.py``.

The run's train, val and pool splits together are the 60,000 official training images; they are
the guided training points. The audit set is the first ``--audit-size`` test images with their
clean labels and class-attribute concepts (``repair_jax/guiding/attributes/fashion_mnist.json``);
the rest of the test set is held out. Reports the wall time of carving and of the bilevel update
(jaxopt implicit differentiation), the lower level's convergence, the AUROC of detecting the
flipped labels from the label change, and the carved / guided accuracies. Meant for a GPU; on a
CPU it runs too, slowly.

    python experiments/guiding_full_fashion_mnist.py [--out DIR]
    python experiments/guiding_full_fashion_mnist.py --smoke --out /tmp/g   # seconds, digits
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from experiments.guiding_common import add_bilevel_args, bilevel_config
from repair_jax.errors import UserError, exits_on_user_error


@exits_on_user_error("guiding_full_fashion_mnist")
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="experiments/results/fashion_mnist_cnn/run")
    p.add_argument("--out", default="experiments/results/guiding_full_fashion_mnist")
    p.add_argument("--noise", type=float, default=0.2, help="fraction of training labels flipped")
    add_bilevel_args(p, gamma=1.0, fi_weight=0.1, outer_steps=100)
    p.add_argument("--inner-maxiter", type=int, default=2000, help="lower-level solver iterations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="a tiny digits run trained on the spot (seconds)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar over the outer steps")
    a = p.parse_args(argv)

    import jax

    from repair_jax.cli import train_run
    from repair_jax.guiding import GuidingConfig
    from repair_jax.guiding.algorithm import model_guiding
    from repair_jax.guiding.pipeline import accuracy_of_head, carve_network, guiding_problem
    from repair_jax.guiding.baselines import training_loss_scores
    from repair_jax.guiding.synthetic import audit_from_split, concept_library, flip_labels
    from repair_jax.io import write_json, write_text
    from repair_jax.metrics import binary_auroc
    from repair_jax.runs import load_run
    from repair_jax.train import TrainConfig, predict

    out = Path(a.out)
    run_dir = Path(a.run)
    if a.smoke:
        run_dir = out / "run_smoke"
        a.outer_steps, a.audit_size = 5, 40
        if not (run_dir / "run.json").is_file():
            train_run(TrainConfig(dataset="digits", model="mlp", model_kwargs={"hidden": [64]}, epochs=3,
                                  seed=0), run_dir, progress=False)
    if not (run_dir / "run.json").is_file():
        raise UserError(f"--run {run_dir}: no run.json there (train it with experiments/fashion_mnist_cnn.py)")
    run = load_run(run_dir)
    ds = run.dataset()
    if ds.multilabel:
        raise UserError("model guiding needs a single-label classifier")
    k = ds.num_classes
    x = np.concatenate([ds.train.x, ds.val.x, ds.pool.x])
    y_clean = np.concatenate([ds.train.y, ds.val.y, ds.pool.y])
    y_noisy, flipped = flip_labels(y_clean, a.noise, k, a.seed)
    m = min(a.audit_size, len(ds.test) // 2)
    audit = audit_from_split(ds.test.x[:m], ds.test.y[:m], ds.name, ds.class_names)
    library = concept_library(ds.name, ds.class_names)
    state = run.state()
    cfg = GuidingConfig(bilevel_config(a, inner_maxiter=a.inner_maxiter), carve_l2=a.l2)
    t0 = time.perf_counter()
    carved = carve_network(state, x, y_noisy, audit, library, k, l2=a.l2)
    jax.block_until_ready(carved.theta)
    t_carve = time.perf_counter() - t0
    t0 = time.perf_counter()
    mg = model_guiding(guiding_problem(carved, y_noisy, audit), carved.theta, cfg, "classification", k,
                       progress=not a.no_progress)
    jax.block_until_ready(mg.bilevel.delta)
    t_guide = time.perf_counter() - t0
    logits = carved.logits_train  # the training-loss baseline
    test_logits, h_test = predict(state, ds.test.x[m:])
    y_test = ds.test.y[m:]
    result = {
        "dataset": ds.name, "run": str(run_dir), "n_train": int(len(y_noisy)), "n_flipped": int(flipped.sum()),
        "audit_size": m, "n_test_held_out": int(len(y_test)), "concepts": len(library.names),
        "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
        "outer_steps": a.outer_steps, "carve_seconds": t_carve, "guiding_seconds_incl_compile": t_guide,
        "lower_converged": bool(mg.bilevel.lower_converged),
        "flagged_noisy_labels": int(len(mg.F_nl)),
        "detect_auroc": {"model_guiding": float(binary_auroc(flipped, mg.nl_scores)),
                         "training_loss": float(binary_auroc(flipped, training_loss_scores(logits, y_noisy)))},
        "test_accuracy": {"network": float(np.mean(np.asarray(test_logits).argmax(1) == y_test)),
                          "carved": accuracy_of_head(carved.basis, carved.theta, h_test, y_test),
                          "guided": accuracy_of_head(carved.basis, mg.bilevel.theta, h_test, y_test)},
        "note": ("the network was trained on the clean labels of its train split, so its training loss "
                 "ranks the flipped labels almost perfectly; the carved and guided heads are fit on the "
                 "noisy labels of all 60k points"),
    }
    name = "result_smoke" if a.smoke else "result"
    write_json(out / f"{name}.json", result)
    lines = [f"| {key} | {val} |" for key, val in (
        ("training points (labels flipped)", f"{result['n_train']} ({result['n_flipped']})"),
        ("backend", result["backend"]), ("carving s", f"{t_carve:.1f}"),
        ("bilevel update s (incl. compile)", f"{t_guide:.1f} ({a.outer_steps} outer steps)"),
        ("lower level converged", result["lower_converged"]),
        ("detection AUROC, model guiding", f"{result['detect_auroc']['model_guiding']:.3f}"),
        ("test accuracy network / carved / guided",
         " / ".join(f"{result['test_accuracy'][s]:.4f}" for s in ("network", "carved", "guided"))))]
    write_text(out / f"{name}.md", "| quantity | value |\n|---|---|\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
