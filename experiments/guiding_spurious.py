"""Tables 5.3-5.4 analogues (002_97a11baaf249c571.txt Sec. 5.3, "Detecting & Fixing Spurious
Correlation"): a synthetic tag patch (4x4 bright square) stamped on 95% of one class of the real
training images and on 50% of all test / audit images at random; concepts from the class-level
attribute table plus the tag. Table 5.3: AUROC of finding the tagged (tag-reliant) training points,
model guiding's attribution change vs Errors-ERM (loss of a linear softmax model on the pixels).
Table 5.4: worst-group test accuracy over (class, tag) groups: the guided model (concept head folded
into the network) vs ERM (the original network) and group DRO (trained with groups (class, tag)).

    python experiments/guiding_spurious.py [--smoke] [--seeds 0 1 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import jax
import numpy as np

from experiments.guiding_common import (
    add_bilevel_args, add_sweep_args, bilevel_config, markdown_table, mean_std, run_sweep, train_cached,
    with_train, write_tables,
)
from repair_jax.data import load_dataset
from repair_jax.errors import exits_on_user_error
from repair_jax.guiding import GuidingConfig
from repair_jax.guiding.baselines import errors_erm_scores
from repair_jax.guiding.pipeline import guide_network
from repair_jax.guiding.synthetic import add_tag, audit_from_split, concept_library, tag_mask_for_class
from repair_jax.metrics import binary_auroc, worst_group_accuracy
from repair_jax.models import create_model, init_variables
from repair_jax.train import TrainConfig, create_train_state, fit, group_dro_objective, make_optimizer, predict

DATASETS = {  # name -> (train_limit, epochs, hidden, spurious class)
    "fashion_mnist": (3000, 15, (256,), "Shirt"),
    "digits": (None, 30, (128,), "8"),
}


def train_group_dro(cfg: TrainConfig, ds, groups: np.ndarray, num_groups: int, eta: float):
    model = create_model(cfg.model, ds.num_classes, **cfg.model_kwargs)
    variables = init_variables(model, jax.random.PRNGKey(cfg.seed), ds.input_shape)
    steps = cfg.epochs * max(1, len(ds.train) // cfg.batch_size)
    state = create_train_state(model, variables, make_optimizer(cfg, steps))
    make_batch = lambda idx: {"x": ds.train.x[idx], "y": ds.train.y[idx], "group": groups[idx]}
    state, _ = fit(state, ds, cfg, objective=functools.partial(group_dro_objective, num_groups=num_groups, eta=eta),
                   make_batch=make_batch, progress=False)
    return state


def run_one(name: str, seed: int, a, cache: Path) -> dict:
    limit, epochs, hidden, cls_name = DATASETS[name]
    if a.smoke:
        limit, epochs = 300, 3
    ds = load_dataset(name, seed=seed, train_limit=limit)
    k, c = ds.num_classes, ds.class_index(cls_name)
    tag_train = tag_mask_for_class(ds.train.y, c, 0.95, seed)
    x_train = add_tag(ds.train.x, tag_train)
    rng = np.random.default_rng(seed + 1)
    tag_test = rng.uniform(size=len(ds.test)) < 0.5
    x_test = add_tag(ds.test.x, tag_test)
    m = min(a.audit_size, len(ds.pool))
    tag_audit = rng.uniform(size=m) < 0.5
    audit = audit_from_split(add_tag(ds.pool.x[:m], tag_audit), ds.pool.y[:m], name, ds.class_names, tag_audit)
    library = concept_library(name, ds.class_names, with_tag=True)
    cfg = TrainConfig(dataset=name, model="mlp", model_kwargs={"hidden": list(hidden)}, epochs=epochs, lr=1e-3,
                      batch_size=64, seed=seed, train_limit=limit)
    tds = with_train(ds, x_train, ds.train.y)
    run, state = train_cached(cfg, tds, cache / f"spurious_{name}_s{seed}_n{len(ds.train)}_e{epochs}")
    gcfg = GuidingConfig(bilevel=bilevel_config(a), budget=50)
    report, guided, result, carved = guide_network(state, run.variables, x_train, ds.train.y, audit, library, gcfg,
                                                   k, ds.class_names, x_test, ds.test.y)
    groups_test = ds.test.y * 2 + tag_test
    wga = lambda st: float(worst_group_accuracy(ds.test.y, predict(st, x_test)[0].argmax(1), groups_test, 2 * k))
    guided_state = state.replace(params=guided["params"])
    gdro_state = train_group_dro(cfg, tds, (ds.train.y * 2 + tag_train).astype(np.int32), 2 * k, a.dro_eta)
    flagged = np.zeros(len(tag_train), bool)
    flagged[result.F_spu] = True
    errs = errors_erm_scores(x_train.reshape(len(x_train), -1), ds.train.y, k)
    acc = lambda st: float(np.mean(predict(st, x_test)[0].argmax(1) == ds.test.y))
    theta0, theta1 = carved.theta["w"], result.bilevel.theta["w"]
    return {"dataset": name, "seed": seed, "n_train": int(len(tag_train)), "n_tagged": int(tag_train.sum()),
            "spurious_class": cls_name, "audit_size": m,
            "spurious_auroc": {"model_guiding": float(binary_auroc(tag_train, result.spu_scores)),
                               "errors_erm": float(binary_auroc(tag_train, errs))},
            "F_spu_precision": float(tag_train[result.F_spu].mean()) if len(result.F_spu) else None,
            "F_spu_size": int(len(result.F_spu)),
            "worst_group_accuracy": {"model_guiding": wga(guided_state), "group_dro": wga(gdro_state),
                                     "erm": wga(state)},
            "test_accuracy": {"model_guiding": acc(guided_state), "group_dro": acc(gdro_state), "erm": acc(state),
                              "carved": report["metrics"]["test"]["carved_accuracy"]},
            "tag_weight_for_class": {"carved": float(theta0[-1, c]), "guided": float(theta1[-1, c])},
            "lower_converged": result.bilevel.lower_converged}


def tables(rows):
    out = []
    body3, body4 = [], []
    for name in sorted({r["dataset"] for r in rows}):
        rs = [r for r in rows if r["dataset"] == name]
        lab = f"{name} + tag on {rs[0]['spurious_class']} (n={rs[0]['n_train']}, {len(rs)} seeds)"
        body3.append([lab] + [mean_std([r["spurious_auroc"][m] for r in rs]) for m in ("model_guiding", "errors_erm")])
        body4.append([lab] + [mean_std([100 * r["worst_group_accuracy"][m] for r in rs])
                              for m in ("model_guiding", "group_dro", "erm")]
                     + [mean_std([100 * r["test_accuracy"][m] for r in rs]) for m in ("model_guiding", "group_dro", "erm")])
    out.append("**Table 5.3 analogue: AUROC of finding the tagged training points** (mean ± std over seeds)\n\n"
               + markdown_table(["dataset", "model guiding", "Errors-ERM"], body3))
    out.append("**Table 5.4 analogue: worst-group test accuracy (%) over (class, tag) groups**, and average test "
               "accuracy (%) (mean ± std over seeds)\n\n"
               + markdown_table(["dataset", "MG worst", "GDRO worst", "ERM worst", "MG avg", "GDRO avg", "ERM avg"], body4))
    return "\n".join(out)


@exits_on_user_error("guiding_spurious")
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sweep_args(p, DATASETS, "experiments/results/guiding_spurious")
    add_bilevel_args(p, gamma=1.0, fi_weight=1.0, outer_steps=100)
    p.add_argument("--dro-eta", type=float, default=5.0)
    a = p.parse_args(argv)
    if a.smoke:
        a.seeds, a.outer_steps, a.audit_size = a.seeds[:1], 5, 60
    bilevel_config(a)  # every flag checked before anything is trained
    out = Path(a.out)
    rows = run_sweep(a, run_one, lambda r: f"{r['spurious_auroc']} {r['worst_group_accuracy']} "
                                           f"{r['tag_weight_for_class']}")
    text = tables(rows)
    write_tables(out, a.smoke, text, rows, a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
