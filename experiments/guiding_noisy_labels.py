"""Tables 5.1-5.2 analogues (002_97a11baaf249c571.txt Sec. 5.3, "Detecting & Fixing Noisy Training
Labels"): flip 20% of the training labels (synthetic noise on real digits / a Fashion-MNIST subset),
train an MLP on them, and score every training point by model guiding, influence functions
(explicit Hessian on the carved model), DUTI (the bilevel on a linear model of the embeddings, no
concept term) and the training loss. Detection AUROC over all training points (flipped = positive);
fix AUROC over the pairs (flipped point i, class k != noisy label), positive when k is the true label.

    python experiments/guiding_noisy_labels.py [--smoke] [--seeds 0 1 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from experiments.guiding_common import (
    add_bilevel_args, add_sweep_args, bilevel_config, markdown_table, mean_std, run_sweep, train_cached,
    with_train, write_tables,
)
from repair_jax.data import load_dataset
from repair_jax.errors import exits_on_user_error
from repair_jax.guiding import GuidingConfig, bilevel_update
from repair_jax.guiding.baselines import influence_on_audit, training_loss_scores
from repair_jax.guiding.pipeline import carve_network, guiding_problem
from repair_jax.guiding.algorithm import model_guiding
from repair_jax.guiding.synthetic import audit_from_split, concept_library, flip_labels
from repair_jax.metrics import binary_auroc
from repair_jax.train import TrainConfig, predict

DATASETS = {  # name -> (train_limit, epochs, hidden)
    "digits": (None, 30, (128,)),
    "fashion_mnist": (3000, 15, (256,)),
}


def fix_auroc(scores_nk: np.ndarray, y_noisy, y_true, flipped) -> float:
    idx = np.flatnonzero(flipped)
    s = scores_nk[idx].copy()
    k = s.shape[1]
    target = (np.arange(k)[None] == np.asarray(y_true)[idx, None]).astype(np.float32)
    keep = np.arange(k)[None] != np.asarray(y_noisy)[idx, None]
    return float(binary_auroc(target[keep], s[keep]))


def run_one(name: str, seed: int, args, cache: Path) -> dict:
    limit, epochs, hidden = DATASETS[name]
    if args.smoke:
        limit, epochs = 300, 3
    ds = load_dataset(name, seed=seed, train_limit=limit)
    k = ds.num_classes
    y_noisy, flipped = flip_labels(ds.train.y, 0.2, k, seed)
    cfg = TrainConfig(dataset=name, model="mlp", model_kwargs={"hidden": list(hidden)}, epochs=epochs,
                      lr=1e-3, batch_size=64, seed=seed, train_limit=limit)
    run, state = train_cached(cfg, with_train(ds, ds.train.x, y_noisy),
                              cache / f"{name}_s{seed}_n{len(y_noisy)}_e{epochs}")
    m = min(args.audit_size, len(ds.pool))
    audit = audit_from_split(ds.pool.x[:m], ds.pool.y[:m], name, ds.class_names)
    library = concept_library(name, ds.class_names)
    bcfg = bilevel_config(args)
    t0 = time.perf_counter()
    carved = carve_network(state, ds.train.x, y_noisy, audit, library, k, l2=args.l2)
    mg = model_guiding(guiding_problem(carved, y_noisy, audit), carved.theta, GuidingConfig(bilevel=bcfg),
                       "classification", k)
    t_mg = time.perf_counter() - t0
    # DUTI: same bilevel, linear model on the standardised embeddings, no concept term
    logits, h, ha = carved.logits_train, carved.h_train, carved.h_audit
    mu, sd = h.mean(0), np.maximum(h.std(0), 1e-6)
    hs, has = (h - mu) / sd, (ha - mu) / sd
    zeros = np.zeros_like(has)
    t0 = time.perf_counter()
    duti = bilevel_update({"z": hs, "y": y_noisy, "z_audit": has, "y_audit": audit.y, "a_audit": zeros,
                           "s_audit": zeros, "c_audit": audit.c},
                          bilevel_config(args, fi_weight=0.0), "classification", k)
    t_duti = time.perf_counter() - t0
    infl_detect, infl_fix = influence_on_audit(carved.theta, carved.z_train, y_noisy,
                                                                carved.z_audit, audit.y, audit.c, args.l2, k)
    loss = training_loss_scores(logits, y_noisy)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    y_true = ds.train.y
    duti_change = 1 - duti.delta[np.arange(len(y_noisy)), y_noisy]
    detect = {"model_guiding": float(binary_auroc(flipped, mg.nl_scores)),
              "influence": float(binary_auroc(flipped, infl_detect)),
              "duti": float(binary_auroc(flipped, duti_change)),
              "training_loss": float(binary_auroc(flipped, loss))}
    fix = {"model_guiding": fix_auroc(mg.bilevel.delta, y_noisy, y_true, flipped),
           "influence": fix_auroc(infl_fix, y_noisy, y_true, flipped),
           "duti": fix_auroc(duti.delta, y_noisy, y_true, flipped),
           "training_loss": fix_auroc(probs, y_noisy, y_true, flipped)}
    test_logits, _ = predict(state, ds.test.x)
    return {"dataset": name, "seed": seed, "n_train": int(len(y_noisy)), "n_flipped": int(flipped.sum()),
            "audit_size": m, "network_test_accuracy": float(np.mean(test_logits.argmax(1) == ds.test.y)),
            "detect_auroc": detect, "fix_auroc": fix,
            "mg_lower_converged": mg.bilevel.lower_converged, "duti_lower_converged": duti.lower_converged,
            "time_model_guiding_s": t_mg, "time_duti_s": t_duti}


def tables(rows: list[dict]) -> str:
    methods = ["model_guiding", "influence", "duti", "training_loss"]
    out = []
    for key, title in (("detect_auroc", "Table 5.1 analogue: AUROC of detecting the flipped training labels"),
                       ("fix_auroc", "Table 5.2 analogue: AUROC of suggesting the right fix")):
        body = []
        for name in sorted({r["dataset"] for r in rows}):
            rs = [r for r in rows if r["dataset"] == name]
            body.append([f"{name} (n={rs[0]['n_train']}, {len(rs)} seeds)"] +
                        [mean_std([r[key][m] for r in rs]) for m in methods])
        out.append(f"**{title}** (mean ± std over seeds)\n\n" +
                   markdown_table(["dataset", "model guiding", "influence functions", "DUTI", "training loss"], body))
    return "\n".join(out)


@exits_on_user_error("guiding_noisy_labels")
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sweep_args(p, DATASETS, "experiments/results/guiding_noisy_labels")
    add_bilevel_args(p, gamma=1.0, fi_weight=0.1, outer_steps=100)
    p.add_argument("--tables-only", action="store_true", help="only rebuild the tables from the rows logged so far")
    a = p.parse_args(argv)
    if a.smoke:
        a.seeds, a.outer_steps, a.audit_size = a.seeds[:1], 5, 60
    bilevel_config(a)  # every flag checked before anything is trained
    out = Path(a.out)
    rows = run_sweep(a, run_one, lambda r: f"{r['detect_auroc']} {r['fix_auroc']}", skip=a.tables_only)
    text = tables(rows)
    write_tables(out, a.smoke, text, rows, a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
