"""Influence of a run's training points on one test point's loss (Adebayo 2022, Eq. 3.1/6.2)
or on a group disparity metric of a split (Eq. 6.4), or on the soft type1conf of a class pair / cd of a
triplet (Zhong et al. 2022, Sec. 2.2, :func:`repair_jax.influence.confusion_quantity`, the same
Eq. 6.4 with that quantity): the library side of ``repair-jax influence``.

:func:`influence_run` writes into ``out``:

* ``influence.json``: the ``top`` training points by decreasing |score|, a list of
  ``{"train_index", "score"}``; with several test points (``test_index`` a list or "all") one
  ``{"test_index", "top": [...]}`` entry per test point;
* ``scores.npy``: the full (N,) float64 score vector, one entry per training point; (M, N) for M > 1
  test points, row t for the t-th listed test index (one test index keeps the (N,) layout);
* ``summary.json``: target, solver report (method, status, relative residual, converged, damping),
  ``converged`` and ``status`` (``no_solve`` for TracIn) at the top level, the dtype of the
  computation, warnings, the most harmful and most helpful points (several test points: ``solver.columns``
  holds each one's residual, iterations and status, ``per_test_point`` its 3 most harmful and helpful);
* ``influence.png`` for image data and one target: the test image with the most harmful and most helpful training
  images; its title starts with "NOT CONVERGED" when the solve did not converge.

``score`` is I_up of the training point on the target quantity: positive = upweighting the point raises
the test loss / the disparity metric / the confusion (harmful), negative = helpful. With
``method="tracin"`` the score is minus TracInCP over the checkpoints the run kept (``repair-jax train --checkpoint-every K``), each with
its own step size and BatchNorm statistics; a run without them uses its final weights alone.

Damping rule: unless an absolute ``damping`` is given, damping = ``relative_damping`` (default 0.01) x
the largest eigenvalue of the training objective's Hessian H (30 power iterations), so that
H + damping I has condition number at most about 100 wherever H is positive semi-definite, whatever
the loss's scale. A run trained without L2 (``train``'s default) has a Hessian with near-zero and
slightly negative eigenvalues, and a fixed small damping (0.01) leaves CG and LiSSA unconverged.

float32: a confident test point's loss ``logsumexp(z) - z_y = log(1 + sum_{k != y} exp(z_k - z_y))``
rounds to 0 in float32 once the tail sum is below about 6e-8, and so does the softmax gradient's
y-component; :func:`float32_loss_underflow` detects this from the logit margin and the summary warns
(compute in float64 with ``x64=True``).
"""

from __future__ import annotations

import dataclasses
import io
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from repair_jax.errors import UserError
from repair_jax.influence.methods import INFLUENCE_METHODS, check_options, get_influence_method

#: The methods that score a run: through a fitted inverse-HVP operator (any target, any number of test
#: points), or over the checkpoints the run kept (TracInCP); TRAK's projected fit is in the LDS harness only.
METHODS = tuple(n for n, m in INFLUENCE_METHODS.items() if m.fits or m.uses_checkpoints)
SPLITS = ("test", "val", "pool")
DEFAULT_RELATIVE_DAMPING = 0.01
METRICS_WITH_POSITIVE = ("fpr", "fnr")
FLOAT32_CG_TOL = 1e-4  # float32 eps (6e-8) x condition number 100 puts the attainable residual near 1e-5


@dataclasses.dataclass(frozen=True)
class GroupRule:
    """A group of a split for a disparity metric (Adebayo 2022, Eq. 6.4): ``kind`` "all"; "label" / "pred" with
    ``value`` a class (index or name: the true / predicted class); "intensity" with ``op`` ">" or "<" and
    ``value`` a threshold on the mean pixel intensity. ``str(rule)`` is its spec ("label=3", "intensity>0.3");
    :func:`repair_jax.cli.parsing.parse_group` builds one from that text."""

    kind: str = "all"
    value: int | str | float | None = None
    op: str | None = None

    def validate(self) -> None:
        if self.kind == "all":
            return
        if self.kind in ("label", "pred"):
            if self.value is None or (isinstance(self.value, str) and not self.value.strip()):
                raise UserError(f"group: {self.kind} needs a class (index or name)")
            return
        if self.kind != "intensity":
            raise UserError(f"group: unknown kind {self.kind!r}; use all, label, pred or intensity")
        if self.op not in ("<", ">"):
            raise UserError(f"group: intensity needs op '<' or '>', got {self.op!r}")
        if isinstance(self.value, (bool, str)) or not np.isfinite(np.asarray(self.value, float)):
            raise UserError(f"group: intensity needs a finite threshold, got {self.value!r}")

    def __str__(self) -> str:
        if self.kind == "all":
            return "all"
        return f"{self.kind}={self.value}" if self.kind in ("label", "pred") else f"intensity{self.op}{self.value}"


def group_mask(rule: GroupRule, split, class_names, predictions=None) -> np.ndarray:
    """(N,) float mask of the points of ``split`` in the group ``rule``."""
    from repair_jax.data import parse_class

    if rule.kind == "all":
        return np.ones(len(split), np.float32)
    if rule.kind in ("label", "pred"):
        ref = split.y if rule.kind == "label" else predictions
        return (np.asarray(ref) == parse_class(rule.value, class_names)).astype(np.float32)
    inten = split.x.reshape(len(split), -1).mean(1)
    return ((inten > rule.value) if rule.op == ">" else (inten < rule.value)).astype(np.float32)


def check_test_indices(test_index) -> list[int] | str | None:
    """``test_index``: an int, a sequence of ints or "all"; returns a list of distinct indices >= 0, "all",
    or None. One-line :class:`UserError` otherwise."""
    if test_index is None or (isinstance(test_index, str) and test_index == "all"):
        return test_index
    if isinstance(test_index, str):
        raise UserError(f"test_index must be an index, a sequence of indices or 'all', got {test_index!r} "
                        "(repair_jax.cli.parsing.parse_test_indices reads '3,17,42')")
    items = [test_index] if np.ndim(test_index) == 0 else list(test_index)
    if not items or any(isinstance(i, bool) or int(i) != i or i < 0 for i in items):
        raise UserError(f"test_index must be indices >= 0, got {test_index}")
    if len(set(items)) != len(items):
        raise UserError(f"test_index lists an index twice: {test_index}")
    return [int(i) for i in items]


def _check_positive(name: str, value, integer: bool = False, allow_zero: bool = False) -> None:
    if value is None:
        return
    ok = value >= 0 if allow_zero else value > 0
    if not ok or not np.isfinite(value) or (integer and int(value) != value):
        raise UserError(f"{name} must be {'>= 0' if allow_zero else 'positive'}, got {value}")


def check_confusion(pair=None, triplet=None, test_index=None, metric=None) -> tuple | None:
    """Checks ``pair`` (A, B) / ``triplet`` (A, B, C), classes by index or name, without any data: None when
    neither is given, else ("pair" | "triplet", the classes); names are resolved later by
    :func:`repair_jax.data.parse_class_tuple`."""
    if pair is None and triplet is None:
        return None
    if pair is not None and triplet is not None:
        raise UserError("pass either pair or triplet, not both")
    kind, classes = ("pair", pair) if pair is not None else ("triplet", triplet)
    for other, value in (("test_index", test_index), ("metric", metric)):
        if value is not None:
            raise UserError(f"pass either {kind} or {other}, not both")
    size = 2 if kind == "pair" else 3
    if isinstance(classes, str) or np.ndim(classes) != 1 or len(classes) != size:
        raise UserError(f"{kind} must be a tuple of {size} classes (indices or names), got {classes!r}")
    items = [str(c).strip().lower() for c in classes]
    if not all(items):
        raise UserError(f"{kind} must be a tuple of {size} classes (indices or names), got {classes!r}")
    if len(set(items)) != size:
        raise UserError(f"{kind} needs {size} distinct classes, got {tuple(classes)!r}")
    return kind, tuple(classes)


def validate_influence_args(*, test_index=None, split="test", method="cg", top=20, metric=None, group=None,
                            positive=None, damping=None, relative_damping=None, tol=None, max_iter=None,
                            scale=None, chunk_size=512, pair=None, triplet=None) -> None:
    """Checks every option of :func:`influence_run` that needs no data (one-line :class:`UserError`)."""
    from repair_jax.metrics import GROUP_DISPARITY_METRICS

    confusion = check_confusion(pair, triplet, test_index, metric)

    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    check_options(get_influence_method(method), max_iter=max_iter, scale=scale)
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if metric is None and test_index is None and confusion is None:
        raise UserError("pass test_index (or metric with group, or pair / triplet)")
    if metric is not None and test_index is not None:
        raise UserError("pass either test_index or metric, not both")
    check_test_indices(test_index)  # a bad index fails here, before any data is loaded
    if metric is not None:
        if metric not in GROUP_DISPARITY_METRICS:
            raise UserError(f"unknown metric {metric!r}; choose one of {', '.join(GROUP_DISPARITY_METRICS)}")
        if not isinstance(group, GroupRule):
            raise UserError(f"metric needs group, a GroupRule (e.g. GroupRule('label', 3) or "
                            f"GroupRule('intensity', 0.3, '>')), got {group!r}")
        group.validate()
        if metric in METRICS_WITH_POSITIVE and positive is None:
            raise UserError(f"metric {metric} needs positive (the positive class, index or name)")
    if damping is not None and relative_damping is not None:
        raise UserError("pass either damping or relative_damping, not both")
    for name, v, integer, zero in (("top", top, True, False), ("damping", damping, False, True),
                                   ("relative_damping", relative_damping, False, True), ("tol", tol, False, False),
                                   ("max_iter", max_iter, True, False), ("scale", scale, False, False),
                                   ("chunk_size", chunk_size, True, False)):
        _check_positive(name, v, integer, zero)


def float32_loss_underflow(logits, label: int, computed_loss: float, rtol: float = 0.01) -> float | None:
    """The accurate cross-entropy ``log1p(sum_{k != y} exp(z_k - z_y))`` of one example from its logits
    (in float64) when the ``computed_loss`` (e.g. float32) misses it by more than ``rtol``; else None."""
    z = np.asarray(logits, np.float64).reshape(-1)
    margins = np.delete(z, label) - z[label]
    accurate = float(np.log1p(np.sum(np.exp(margins))))
    if accurate > 0 and abs(float(computed_loss) - accurate) > rtol * accurate:
        return accurate
    return None


def _as_dtype(tree, dtype):
    import jax
    import jax.numpy as jnp

    return jax.tree_util.tree_map(
        lambda a: jnp.asarray(a, dtype) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) else jnp.asarray(a),
        tree)


def _load(run_path, test_index, split):
    """(run, dataset, train state), the test index checked against run.json before the data load."""
    from repair_jax.runs import load_run

    run = load_run(run_path)
    size = run.info.get("split_sizes", {}).get(split)
    if isinstance(test_index, list) and size is not None and max(test_index) >= size:
        raise UserError(f"test_index {max(test_index)} is out of range: the {split} split has {size} points "
                        f"(0..{size - 1})")
    ds = run.dataset()
    if ds.multilabel:
        raise UserError("influence supports single-label runs only")
    return run, ds, run.state()


def _test_loss_target(loss_fn, params, target_split, test_index, dtype):
    """(quantity maker, target record, warnings) for the loss of point ``test_index`` (an int) of
    ``target_split``; for a list of indices the record lists one entry per point under ``points``."""
    import jax.numpy as jnp

    from repair_jax.influence.functions import test_loss_quantity

    idx = [int(test_index)] if np.ndim(test_index) == 0 else list(test_index)
    bad = [i for i in idx if not 0 <= i < len(target_split)]
    if bad:
        raise UserError(f"test_index {bad[0]} is out of range: the split has {len(target_split)} points")
    tb = {"x": jnp.asarray(target_split.x[idx], dtype), "y": jnp.asarray(target_split.y[idx])}
    values, logits = np.asarray(loss_fn(params, tb)), np.asarray(loss_fn.logits(params, tb["x"]))
    points, under = [], []
    for j, i in enumerate(idx):
        label = int(target_split.y[i])
        points.append({"kind": "test_loss", "test_index": i, "label": label, "predicted": int(logits[j].argmax()),
                       "value": float(values[j])})
        accurate = float32_loss_underflow(logits[j], label, values[j])
        if accurate is not None:
            points[-1]["accurate_value"] = accurate
            under.append(j)
    name = np.dtype(dtype).name
    fix = " (rerun in float64: x64)" if name == "float32" else ""
    warns = []
    if under and len(idx) == 1:
        warns.append(f"{name} underflow: the test point's loss is {points[0]['value']:.3g} in {name} but "
                     f"{points[0]['accurate_value']:.3g} from its logit margin; its gradient and the scores are "
                     "inaccurate" + fix)
    elif under:
        warns.append(f"{name} underflow at {len(under)} of {len(idx)} test points (indices "
                     f"{[idx[j] for j in under[:10]]}): their losses round to 0, their gradients and scores are "
                     "inaccurate" + fix)
    target = points[0] if np.ndim(test_index) == 0 else {"kind": "test_losses", "test_indices": idx, "points": points}
    return (lambda lf: test_loss_quantity(lf, tb)), target, warns


def _group_target(loss_fn, params, state, ds, target_split, metric, group, positive, dtype):
    """(quantity maker, target record, warnings) for a group disparity metric of ``target_split``."""
    import jax
    import jax.numpy as jnp

    from repair_jax.data import parse_class
    from repair_jax.influence.functions import group_disparity_quantity
    from repair_jax.metrics import group_disparity_hard
    from repair_jax.train import predict

    logits, _ = predict(state, target_split.x)
    mask = group_mask(group, target_split, ds.class_names, logits.argmax(-1))
    if mask.sum() == 0:
        raise UserError(f"the group {str(group)!r} is empty on this split")
    pos = parse_class(positive if positive is not None else "1", ds.class_names)
    tb = {"x": jnp.asarray(target_split.x, dtype), "y": jnp.asarray(target_split.y)}
    make_q = lambda lf: group_disparity_quantity(lf, tb, metric, mask, positive=pos)
    hard = group_disparity_hard(metric, jax.nn.softmax(jnp.asarray(logits)), tb["y"], jnp.asarray(mask), pos)
    target = {"kind": "group_disparity", "metric": metric, "group": str(group), "group_size": int(mask.sum()),
              "positive": pos, "value": float(make_q(loss_fn)(params)), "reported_value": float(hard)}
    return make_q, target, []


def _confusion_target(loss_fn, params, state, ds, target_split, confusion, dtype):
    """(quantity maker, target record, warnings) for the soft type1conf of a pair or cd of a triplet
    (Zhong et al. 2022, Sec. 2.2) on ``target_split``; ``reported_value`` is the hard metric of the argmax predictions."""
    import jax.numpy as jnp

    from repair_jax.data import parse_class_tuple
    from repair_jax.influence.functions import confusion_quantity
    from repair_jax.metrics import confusion_disparity, confusion_matrix, type1conf_matrix
    from repair_jax.train import predict

    kind, spec = confusion
    classes = parse_class_tuple(spec, ds.class_names, 2 if kind == "pair" else 3)
    tb = {"x": jnp.asarray(target_split.x, dtype), "y": jnp.asarray(target_split.y)}
    make_q = lambda lf: confusion_quantity(lf, tb, **{kind: classes})
    logits, _ = predict(state, target_split.x)
    err = type1conf_matrix(confusion_matrix(tb["y"], jnp.asarray(logits).argmax(-1), len(ds.class_names)))
    hard = err[classes[0], classes[1]] if kind == "pair" else confusion_disparity(err, *classes)
    target = {"kind": kind, "metric": "type1conf" if kind == "pair" else "cd", "classes": list(classes),
              "class_names": [ds.class_names[c] for c in classes], "value": float(make_q(loss_fn)(params)),
              "reported_value": float(hard)}
    return make_q, target, []


def _tracin_scores(run, state, train, make_q, dtype, chunk_size, test_batch=None):
    """(-TracInCP scores, solver record) over the run's kept checkpoints (or its final weights): (N,) on the
    quantity ``make_q``, or (M, N) on each point of ``test_batch`` when given."""
    from repair_jax.influence.functions import tracin, tracin_scores
    from repair_jax.influence.gradients import ClassifierLoss

    kept = run.epoch_checkpoints() or [({"epoch": run.config.epochs, "learning_rate": float(run.config.lr)},
                                         run.variables)]
    kept = [(r, _as_dtype(v, dtype)) for r, v in kept]
    losses = [ClassifierLoss(state.apply_fn, v["batch_stats"]) for _, v in kept]
    params, lrs = [v["params"] for _, v in kept], [r["learning_rate"] for r, _ in kept]
    if test_batch is not None:
        scores = -tracin_scores(losses, params, lrs, train, test_batch, chunk_size=chunk_size)
    else:
        scores = -tracin(losses, params, lrs, train, quantity_fn=[make_q(lf) for lf in losses], chunk_size=chunk_size)
    solver = {"method": "tracin", "status": "no_solve", "converged": True, "checkpoints": len(kept),
              "epochs": [r["epoch"] for r, _ in kept], "learning_rates": lrs}
    if "file" not in kept[0][0]:
        solver["note"] = "final weights only: keep checkpoints in training (checkpoint_every=K) for TracInCP"
    return scores, solver


def _solve_scores(loss_fn, params, train, q, l2, method, solver_opts, chunk_size):
    """(I_up scores, solver record) on the quantity ``q`` (Adebayo 2022, Eq. 3.1/6.2/6.4): one block solve of
    the fitted inverse-HVP operator of ``method`` (:func:`repair_jax.influence.fit_influence`) for its gradient."""
    from jax.flatten_util import ravel_pytree

    from repair_jax.influence.functions import quantity_gradient
    from repair_jax.influence.methods import fit_influence

    fit = fit_influence(loss_fn, params, train, method=method, l2=l2, chunk_size=chunk_size, store_gradients=False,
                        **solver_opts)
    r = fit.solve(ravel_pytree(quantity_gradient(q, params))[0])
    return fit.upweight_scores(r.x)[0], {**r.summary(), "l2": l2}


def _fitted_scores(loss_fn, params, train, test_batch, indices, l2, method, solver_opts, chunk_size):
    """((M, N) I_up,loss scores, solver record with one ``columns`` entry per test point) from one
    :func:`repair_jax.influence.fit_influence` and one block solve (Adebayo 2022, Eq. 3.1). The (N, P) training
    gradients are kept only for several test points (one forward-mode pass is cheaper for one)."""
    from repair_jax.influence.methods import fit_influence

    fit = fit_influence(loss_fn, params, train, method=method, l2=l2, chunk_size=chunk_size,
                        store_gradients=None if len(indices) > 1 else False, **solver_opts)
    scores, r = fit.scores(test_batch)
    solver = {**r.summary(), "l2": l2}
    for column, i in zip(solver["columns"], indices):
        column["test_index"] = i
    return scores, solver


def _ranked(scores, labels, top):
    """(top-k by |score|, most harmful, most helpful) lists of dicts."""
    order = np.argsort(-np.abs(scores), kind="stable")[:top]
    ranking = [{"train_index": int(i), "score": float(scores[i])} for i in order]
    pick = lambda idx: [{"train_index": int(i), "score": float(scores[i]), "label": int(labels[i])} for i in idx]
    return (ranking, pick(np.argsort(-scores, kind="stable")[:top]),
            pick(np.argsort(scores, kind="stable")[:top]))


def _write_results(tmp: Path, scores, ranking, summary, plot_args) -> None:
    from repair_jax.io import write_bytes_atomic, write_json

    buf = io.BytesIO()
    np.save(buf, scores)
    write_bytes_atomic(tmp / "scores.npy", buf.getvalue())
    write_json(tmp / "influence.json", ranking)
    write_json(tmp / "summary.json", summary)
    if plot_args is not None:
        _plot(tmp / "influence.png", *plot_args, summary)


def _compute(run, ds, state, *, test_index, split, method, metric, group, positive, solver_opts, chunk_size,
             dtype, confusion=None):
    """(scores float64, target record, solver record, warnings) of one influence computation: scores (N,) for
    an int ``test_index``, a group metric or a confusion, (M, N) for a list of M test indices."""
    import jax.numpy as jnp

    from repair_jax.influence.gradients import ClassifierLoss
    from repair_jax.influence.hvp import InfluenceWarning

    loss_fn = ClassifierLoss(state.apply_fn, _as_dtype(state.batch_stats, dtype))
    params = _as_dtype(state.params, dtype)
    target_split = ds.split(split)
    train = {"x": jnp.asarray(ds.train.x, dtype), "y": jnp.asarray(ds.train.y)}
    if confusion is not None:
        make_q, target, warns = _confusion_target(loss_fn, params, state, ds, target_split, confusion, dtype)
    elif metric is None:
        make_q, target, warns = _test_loss_target(loss_fn, params, target_split, test_index, dtype)
    else:
        make_q, target, warns = _group_target(loss_fn, params, state, ds, target_split, metric, group, positive,
                                              dtype)
    target["split"] = split
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InfluenceWarning)
        points = confusion is None and metric is None
        idx = ([int(test_index)] if np.ndim(test_index) == 0 else list(test_index)) if points else None
        tb = {"x": jnp.asarray(target_split.x[idx], dtype), "y": jnp.asarray(target_split.y[idx])} if points else None
        entry = get_influence_method(method)
        if points and entry.fits:
            scores, solver = _fitted_scores(loss_fn, params, train, tb, idx, float(run.config.l2), method,
                                            solver_opts, chunk_size)
            scores = scores[0] if np.ndim(test_index) == 0 else scores
        elif not entry.fits:  # METHODS: it sums over the run's checkpoints
            scores, solver = _tracin_scores(run, state, train, make_q, dtype, chunk_size,
                                            tb if points and np.ndim(test_index) > 0 else None)
        else:
            scores, solver = _solve_scores(loss_fn, params, train, make_q(loss_fn), float(run.config.l2), method,
                                           solver_opts, chunk_size)
    warns += [str(w.message) for w in caught if issubclass(w.category, InfluenceWarning)]
    scores = np.asarray(scores, np.float64)
    if not np.all(np.isfinite(scores)):
        raise UserError("influence scores are not finite; add damping or use another solver")
    return scores, target, solver, warns


def influence_run(run_path, out, *, test_index: int | Sequence[int] | str | None = None, split: str = "test",
                  method: str = "cg", top: int = 20, metric: str | None = None, group: GroupRule | None = None,
                  positive: str | None = None, damping: float | None = None, relative_damping: float | None = None,
                  tol: float | None = None, max_iter: int | None = None, scale: float | None = None,
                  chunk_size: int = 512, x64: bool = False, force: bool = False, pair: Sequence | None = None,
                  triplet: Sequence | None = None, progress: bool = False) -> dict:
    """Ranks the training points of the run at ``run_path`` by their influence on the loss of point
    ``test_index`` of ``split``, or on the disparity ``metric`` of the :class:`GroupRule` ``group`` there, or on
    the soft type1conf of ``pair`` (A, B) / cd of ``triplet`` (A, B, C) (class indices or names) there, writes
    ``out`` (see the module docstring) and returns the summary. Options are checked before anything is loaded.

    ``test_index``: one index (an int, or a one-element sequence: scores (N,)), several (a sequence of ints) or
    "all" (the whole split): scores (M, N), computed with ``explicit``, ``cg``, ``lissa``,
    ``kfac`` or ``ekfac`` by one :func:`repair_jax.influence.fit_influence` and one block solve.

    ``damping`` (absolute) or ``relative_damping`` (x the largest eigenvalue of H; the default, 0.01).
    ``tol`` defaults to the solver's (:data:`repair_jax.influence.hvp.DEFAULT_TOL`), except CG in float32:
    1e-4. ``x64``: compute in float64 (parameters, BatchNorm statistics and data are cast). A solve that
    does not converge still writes its results; ``summary["converged"]`` is False then. ``progress``: a CG
    solve over a few seconds reports its progress and the time left on stderr (a diverging one stops early
    either way, its solver record naming the damping that would converge).
    """
    import contextlib

    import jax
    import jax.numpy as jnp

    from repair_jax.io import atomic_dir

    validate_influence_args(test_index=test_index, split=split, method=method, top=top, metric=metric, group=group,
                            positive=positive, damping=damping, relative_damping=relative_damping, tol=tol,
                            max_iter=max_iter, scale=scale, chunk_size=chunk_size, pair=pair, triplet=triplet)
    if damping is None and relative_damping is None:
        relative_damping = DEFAULT_RELATIVE_DAMPING
    if tol is None and method == "cg" and not x64:
        tol = FLOAT32_CG_TOL
    solver_opts = {"tol": tol, "max_iter": max_iter, "scale": scale, "progress": progress,
                   **({"damping": damping} if damping is not None else {"relative_damping": relative_damping})}
    indices = check_test_indices(test_index)
    if isinstance(indices, list) and len(indices) == 1:
        indices = indices[0]  # one test point: (N,) scores, as before several were accepted
    with atomic_dir(out, overwrite=force) as tmp, (jax.enable_x64(True) if x64 else contextlib.nullcontext()):
        run, ds, state = _load(run_path, [indices] if isinstance(indices, int) else indices, split)
        if indices == "all":
            indices = list(range(len(ds.split(split))))
        dtype = jnp.float64 if x64 else jnp.float32
        t0 = time.perf_counter()
        scores, target, solver, warns = _compute(
            run, ds, state, test_index=indices, split=split, method=method, metric=metric, group=group,
            positive=positive, solver_opts=solver_opts, chunk_size=chunk_size, dtype=dtype,
            confusion=check_confusion(pair, triplet))
        ranking, extra = _rankings(scores, ds.train.y, top, None if np.ndim(indices) == 0 else indices)
        summary = {"run": str(run_path), "target": target, "solver": solver, "converged": solver["converged"],
                   "status": solver["status"], "dtype": np.dtype(dtype).name, "warnings": warns,
                   "num_train": len(ds.train), "seconds": time.perf_counter() - t0, "scores_file": "scores.npy",
                   "score": "I_up (positive: upweighting raises the target = harmful)", **extra}
        image = ds.train.x.ndim == 4 and ds.train.x.shape[-1] in (1, 3) and scores.ndim == 1
        _write_results(tmp, scores, ranking, summary,
                       (ds, ds.split(split), indices, extra["most_harmful"], extra["most_helpful"]) if image else None)
    return summary


def _rankings(scores, labels, top, indices):
    """(influence.json content, summary entries). One target: the ``top`` points by |score| and the most
    harmful / helpful. M test points: one ``{"test_index", "top"}`` entry each, and in the summary each
    point's 3 most harmful and helpful with its solve's column (residual, status)."""
    if indices is None:
        ranking, harmful, helpful = _ranked(scores, labels, top)
        return ranking, {"most_harmful": harmful, "most_helpful": helpful}
    rows = [_ranked(row, labels, top) for row in scores]
    ranking = [{"test_index": i, "top": r[0]} for i, r in zip(indices, rows)]
    per_point = [{"test_index": i, "most_harmful": r[1][:3], "most_helpful": r[2][:3]} for i, r in zip(indices, rows)]
    return ranking, {"num_test_points": len(indices), "per_test_point": per_point}


def _plot(path, ds, split, test_index, harmful, helpful, summary) -> None:
    from repair_jax.plots import plt, save_figure

    target = summary["target"]
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
            ax.text(0.5, 0.5, f"{target['metric']}\n{_target_group(target)}", ha="center", va="center", fontsize=8)
        ax.set_ylabel(title, fontsize=8)
        for j in range(k):
            it = items[j]
            show(axes[row, j + 1], ds.train.x[it["train_index"]])
            axes[row, j + 1].set_title(f"#{it['train_index']} y={names[it['label']]}\n{it['score']:+.3g}", fontsize=7)
        for ax in axes[row]:
            ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(plot_title(summary), fontsize=9, color="black" if summary["converged"] else "red")
    save_figure(fig, path)
    plt.close(fig)


def _target_group(target: dict) -> str:
    """The group a group target is about: the group's spec, or the pair's / triplet's class names."""
    return target["group"] if "group" in target else ",".join(target["class_names"])


def plot_title(summary: dict) -> str:
    """The figure's title; it starts with "NOT CONVERGED" (and the status and residual) when the solve
    did not converge."""
    kind = summary["target"]["kind"]
    what = {"test_loss": "the test loss", "group_disparity": "the group metric", "pair": "the pair's soft type1conf",
            "triplet": "the triplet's soft cd"}[kind]
    title = f"training points by influence (I_up) on {what}"
    if not summary["converged"]:
        s = summary["solver"]
        title = f"NOT CONVERGED ({s['status']}, relative residual {s['residual']:.3g}): " + title
    return title
