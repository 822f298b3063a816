"""``repair-jax influence``: rank the training points of a run by their influence on one test
point's loss (002 Eq. 3.1/6.2) or on a group disparity metric of the test set (Eq. 6.4).

Writes ``DIR/influence.json`` (a list of ``{"train_index", "score"}``, most influential first, i.e.
by decreasing |score|), ``DIR/summary.json`` (target, solver report, most harmful and most helpful
points) and, for image data, ``DIR/influence.png`` (the test image with the most harmful and most
helpful training images). ``score`` is I_up of the training point on the target quantity:
positive = upweighting the point raises the test loss / the disparity metric (harmful), negative
= helpful. With ``--method tracin`` the score is minus TracInCP, in the same sign convention: over the
checkpoints the run kept during training (``repair-jax train --checkpoint-every K``), each with its
own step size and BatchNorm statistics; a run without them uses its final weights alone, with the
configured learning rate (a one-checkpoint approximation, flagged in summary.json).
"""

from __future__ import annotations

import re
import time
import warnings

import numpy as np

from repair_jax.errors import UserError

METHODS = ("explicit", "cg", "lissa", "tracin")


def configure(p) -> None:
    from repair_jax.metrics import GROUP_DISPARITY_METRICS

    p.add_argument("--run", required=True, help="run directory written by `repair-jax train`")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--test-index", type=int, default=None, help="index of the test point (target: its loss)")
    p.add_argument("--split", default="test", choices=["test", "val", "pool"], help="where the test point/group lives")
    p.add_argument("--method", default="cg", choices=METHODS, help="inverse-HVP solver, or tracin")
    p.add_argument("--top", type=int, default=20, help="how many training points to list")
    p.add_argument("--metric", default=None, choices=GROUP_DISPARITY_METRICS,
                   help="target a group disparity metric of the test split instead of one test loss")
    p.add_argument("--group", default=None,
                   help="the test group for --metric: label=C (true class C), pred=C (predicted class C), "
                        "intensity>T or intensity<T (mean pixel intensity threshold), or all")
    p.add_argument("--positive", default="1", help="positive class for fpr/fnr (index or name)")
    p.add_argument("--damping", type=float, default=0.01, help="added to the Hessian (H + damping I)")
    p.add_argument("--tol", type=float, default=None, help="solver tolerance on the relative residual")
    p.add_argument("--max-iter", type=int, default=None, help="CG iterations / LiSSA steps")
    p.add_argument("--scale", type=float, default=None, help="LiSSA scale (default 1.1 x largest eigenvalue)")
    p.add_argument("--chunk-size", type=int, default=512, help="examples per jitted chunk")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")


def parse_group(spec: str | None, split, class_names, predictions=None) -> np.ndarray:
    """(N,) float mask of a group spec: label=C, pred=C, intensity>T, intensity<T, all."""
    from repair_jax.data import parse_class

    if spec is None:
        raise UserError("--metric needs a group definition: pass --group (e.g. label=3 or intensity>0.3)")
    spec = spec.strip()
    if spec == "all":
        return np.ones(len(split), np.float32)
    m = re.fullmatch(r"(label|pred)\s*=\s*(.+)", spec)
    if m:
        c = parse_class(m.group(2), class_names)
        ref = split.y if m.group(1) == "label" else predictions
        return (np.asarray(ref) == c).astype(np.float32)
    m = re.fullmatch(r"intensity\s*([<>])\s*([0-9.eE+-]+)", spec)
    if m:
        try:
            thr = float(m.group(2))
        except ValueError:
            raise UserError(f"bad threshold in --group {spec!r}") from None
        inten = split.x.reshape(len(split), -1).mean(1)
        return ((inten > thr) if m.group(1) == ">" else (inten < thr)).astype(np.float32)
    raise UserError(f"bad --group {spec!r}; use label=C, pred=C, intensity>T, intensity<T or all")


def influence_run(run_path, out, *, test_index=None, split="test", method="cg", top=20, metric=None,
                  group=None, positive="1", damping=0.01, tol=None, max_iter=None, scale=None,
                  chunk_size=512, force=False) -> dict:
    import jax
    import jax.numpy as jnp

    from repair_jax.data import parse_class
    from repair_jax.influence import (ClassifierLoss, InfluenceWarning, group_disparity_quantity, influence_up,
                                      s_test, test_loss_quantity, tracin)
    from repair_jax.io import atomic_dir, write_json
    from repair_jax.metrics import group_disparity_hard
    from repair_jax.runs import load_run
    from repair_jax.train import predict

    if top <= 0:
        raise UserError(f"--top must be positive, got {top}")
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    run = load_run(run_path)
    ds = run.dataset()
    if ds.multilabel:
        raise UserError("influence supports single-label runs only")
    state = run.state()
    loss_fn = ClassifierLoss.from_state(state)
    params = state.params
    target_split = ds.split(split)
    train = {"x": jnp.asarray(ds.train.x), "y": jnp.asarray(ds.train.y)}
    n = len(ds.train)
    target: dict = {"split": split}
    if metric is None:
        if test_index is None:
            raise UserError("pass --test-index I (or --metric with --group)")
        if not 0 <= test_index < len(target_split):
            raise UserError(f"--test-index {test_index} is out of range: the {split} split has "
                            f"{len(target_split)} points (0..{len(target_split) - 1})")
        tb = {"x": jnp.asarray(target_split.x[test_index:test_index + 1]),
              "y": jnp.asarray(target_split.y[test_index:test_index + 1])}
        make_q = lambda lf: test_loss_quantity(lf, tb)
        q = make_q(loss_fn)
        logits, _ = predict(state, target_split.x[test_index:test_index + 1])
        target.update(kind="test_loss", test_index=test_index, label=int(target_split.y[test_index]),
                      predicted=int(logits.argmax(-1)[0]), value=float(q(params)))
    else:
        logits, _ = predict(state, target_split.x)
        mask = parse_group(group, target_split, ds.class_names, logits.argmax(-1))
        if mask.sum() == 0:
            raise UserError(f"the group {group!r} is empty on the {split} split")
        pos = parse_class(positive, ds.class_names)
        tb = {"x": jnp.asarray(target_split.x), "y": jnp.asarray(target_split.y)}
        make_q = lambda lf: group_disparity_quantity(lf, tb, metric, mask, positive=pos)
        q = make_q(loss_fn)
        hard = group_disparity_hard(metric, jax.nn.softmax(jnp.asarray(logits)), tb["y"], jnp.asarray(mask), pos)
        target.update(kind="group_disparity", metric=metric, group=group, group_size=int(mask.sum()),
                      positive=pos, value=float(q(params)), reported_value=float(hard))
    l2 = float(run.config.l2)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InfluenceWarning)
        if method == "tracin":
            kept = run.epoch_checkpoints() or [({"epoch": run.config.epochs, "learning_rate": float(run.config.lr)},
                                                 run.variables)]
            losses = [ClassifierLoss(state.apply_fn, v["batch_stats"]) for _, v in kept]
            scores = -tracin(losses, [v["params"] for _, v in kept], [r["learning_rate"] for r, _ in kept],
                             train, quantity_fn=[make_q(lf) for lf in losses], chunk_size=chunk_size)
            solver = {"method": "tracin", "checkpoints": len(kept), "epochs": [r["epoch"] for r, _ in kept],
                      "learning_rates": [r["learning_rate"] for r, _ in kept]}
            if "file" not in kept[0][0]:
                solver["note"] = "final weights only: train with --checkpoint-every K for TracInCP"
        else:
            r = s_test(loss_fn, params, train, q, method=method, l2=l2, damping=damping, tol=tol,
                       max_iter=max_iter, scale=scale, chunk_size=chunk_size)
            scores = influence_up(loss_fn, params, train, r.x, chunk_size=chunk_size)
            solver = {**r.summary(), "damping": damping, "l2": l2}
    warns = [str(w.message) for w in caught if issubclass(w.category, InfluenceWarning)]
    scores = np.asarray(scores, np.float64)
    if not np.all(np.isfinite(scores)):
        raise UserError("influence scores are not finite; add damping or use another solver")
    elapsed = time.perf_counter() - t0
    order = np.argsort(-np.abs(scores), kind="stable")[:top]
    ranking = [{"train_index": int(i), "score": float(scores[i])} for i in order]
    harmful = [{"train_index": int(i), "score": float(scores[i]), "label": int(ds.train.y[i])}
               for i in np.argsort(-scores, kind="stable")[:top]]
    helpful = [{"train_index": int(i), "score": float(scores[i]), "label": int(ds.train.y[i])}
               for i in np.argsort(scores, kind="stable")[:top]]
    summary = {"run": str(run_path), "target": target, "solver": solver, "warnings": warns, "num_train": n,
               "seconds": elapsed, "score": "I_up (positive: upweighting raises the target = harmful)",
               "most_harmful": harmful, "most_helpful": helpful}
    with atomic_dir(out, overwrite=force) as tmp:
        write_json(tmp / "influence.json", ranking)
        write_json(tmp / "summary.json", summary)
        if ds.train.x.ndim == 4 and ds.train.x.shape[-1] in (1, 3):
            _plot(tmp / "influence.png", ds, target_split, test_index if metric is None else None,
                  harmful, helpful, target)
    for w in warns:
        print(f"warning: {w}")
    return summary


def _plot(path, ds, split, test_index, harmful, helpful, target) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from repair_jax.plots import save_figure

    k = min(8, len(harmful))
    fig, axes = plt.subplots(2, k + 1, figsize=(1.6 * (k + 1), 3.8))
    show = lambda ax, img: ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
    names = ds.class_names
    for row, (title, items) in enumerate((("most harmful", harmful), ("most helpful", helpful))):
        ax = axes[row, 0]
        if test_index is not None:
            show(ax, split.x[test_index])
            ax.set_title(f"test {test_index}\ny={names[target['label']]} pred={names[target['predicted']]}",
                         fontsize=7)
        else:
            ax.text(0.5, 0.5, f"{target['metric']}\n{target['group']}", ha="center", va="center", fontsize=8)
        ax.set_ylabel(title, fontsize=8)
        for j in range(k):
            it = items[j]
            show(axes[row, j + 1], ds.train.x[it["train_index"]])
            axes[row, j + 1].set_title(f"#{it['train_index']} y={names[it['label']]}\n{it['score']:+.3g}", fontsize=7)
        for ax in axes[row]:
            ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle("training points by influence (I_up) on " +
                 ("the test loss" if test_index is not None else "the group metric"), fontsize=9)
    save_figure(fig, path)
    plt.close(fig)


def run(args) -> int:
    s = influence_run(args.run, args.out, test_index=args.test_index, split=args.split, method=args.method,
                      top=args.top, metric=args.metric, group=args.group, positive=args.positive,
                      damping=args.damping, tol=args.tol, max_iter=args.max_iter, scale=args.scale,
                      chunk_size=args.chunk_size, force=args.force)
    t = s["target"]
    what = (f"loss of {t['split']} point {t['test_index']}" if t["kind"] == "test_loss"
            else f"{t['metric']} of group {t['group']} ({t['group_size']} points)")
    print(f"influence of {s['num_train']} training points on the {what} ({s['solver']['method']}, "
          f"{s['seconds']:.1f}s)")
    for name in ("most_harmful", "most_helpful"):
        top = ", ".join(f"#{d['train_index']} ({d['score']:+.3g})" for d in s[name][:5])
        print(f"  {name.replace('_', ' ')}: {top}")
    print(f"-> {args.out}/influence.json")
    return 0
