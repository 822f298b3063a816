"""MM repair: minimal last-layer modification (Goldberger et al., as used in 001_67555029b287879f.txt
Sec. 5 RQ iv and Definition 4 with d the L-infinity distance between weights).

Only the last layer (kernel W (d, K), bias b (K,)) changes; the penultimate features h(x) of the
repair inputs are fixed, so the problem is a linear program::

    minimise t  subject to  |dW_ij| <= t, |db_k| <= t, (t <= epsilon if given),
    (w_c + dw_c - w_i - dw_i) . h(x) + (b_c + db_c - b_i - db_i) >= margin
        for every repair input (x, c) and every class i != c.

It is solved with scipy's HiGHS (``scipy.optimize.linprog``). The original searches an
epsilon-neighbourhood by binary search; the LP gives the same minimum directly, and ``epsilon``
bounds the neighbourhood as MM repair's parameter does: with too small an epsilon the problem is
infeasible, which is reported (``status="infeasible"``), not raised.
"""

from __future__ import annotations

from typing import Any

import dataclasses
import time

import jax
import numpy as np
import scipy.optimize
import scipy.sparse as sp

from repair_jax.classifier import Classifier, check_classifier, predict_outputs, takes_model
from repair_jax.errors import UserError


@dataclasses.dataclass
class MMResult:
    """``status``: "optimal", "infeasible" or the solver's message; ``variables`` the repaired
    variables (the originals when not optimal); ``max_change`` the optimal t (L-inf weight change);
    ``layer`` the path of the modified last layer in ``params``; ``wall_time`` the solver time."""

    status: str
    variables: dict
    max_change: float | None
    layer: tuple[str, ...] | None
    wall_time: float
    classifier: Any = None  # the repaired model (its export() gives the user's own kind of object)

    @property
    def feasible(self) -> bool:
        return self.status == "optimal"


def minimal_last_layer_change(features: np.ndarray, labels: np.ndarray, kernel: np.ndarray,
                              bias: np.ndarray, margin: float = 1e-3, epsilon: float | None = None):
    """Solves the LP above. features (N, d) float, labels (N,) int, kernel (d, K), bias (K,).

    Returns (status, dW (d, K) or None, db (K,) or None, t or None).
    """
    features = np.asarray(features, np.float64)
    kernel, bias = np.asarray(kernel, np.float64), np.asarray(bias, np.float64)
    labels = np.asarray(labels, np.int64)
    n, d = features.shape
    if kernel.shape[0] != d or bias.shape != (kernel.shape[1],):
        raise UserError(f"last layer shapes {kernel.shape}, {bias.shape} do not match features of width {d}")
    k = kernel.shape[1]
    if np.any((labels < 0) | (labels >= k)):
        raise UserError(f"repair labels must lie in [0, {k - 1}]")
    nw = d * k + k  # variables: vec(dW) (row-major d x K), db, then t
    t_col = nw
    rows, cols, vals, rhs = [], [], [], []
    r = 0
    # |delta| <= t  as  delta - t <= 0  and  -delta - t <= 0
    for sign in (1.0, -1.0):
        idx = np.arange(nw)
        rows += [r + idx, r + idx]
        cols += [idx, np.full(nw, t_col)]
        vals += [np.full(nw, sign), np.full(nw, -1.0)]
        rhs.append(np.zeros(nw))
        r += nw
    # margin constraints, written as <=:  -(dw_c - dw_i).h - (db_c - db_i) <= gap - margin
    logits = features @ kernel + bias
    for j in range(n):
        c, h = labels[j], features[j]
        for i in range(k):
            if i == c:
                continue
            wc = np.arange(d) * k + c
            wi = np.arange(d) * k + i
            rows += [np.full(d, r), np.full(d, r), np.array([r, r])]
            cols += [wc, wi, np.array([d * k + c, d * k + i])]
            vals += [-h, h, np.array([-1.0, 1.0])]
            rhs.append(np.array([logits[j, c] - logits[j, i] - margin]))
            r += 1
    a_ub = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(r, nw + 1))
    cost = np.zeros(nw + 1)
    cost[t_col] = 1.0
    bounds = [(None, None)] * nw + [(0.0, epsilon)]
    res = scipy.optimize.linprog(cost, A_ub=a_ub, b_ub=np.concatenate(rhs), bounds=bounds,
                                 method="highs")
    if res.status == 2:
        return "infeasible", None, None, None
    if res.status != 0:
        return str(res.message), None, None, None
    x = res.x
    return "optimal", x[: d * k].reshape(d, k), x[d * k: nw], float(x[t_col])


def find_last_layer(params, features: np.ndarray, logits: np.ndarray) -> tuple[str, ...]:
    """Path of the dense layer (``kernel`` (d, K), ``bias`` (K,)) that maps ``features`` to
    ``logits``; checked numerically. UserError if the model has none (e.g. a pooled conv head)."""
    d, k = features.shape[1], logits.shape[1]
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    for path, leaf in flat:
        keys = tuple(getattr(p, "key", str(p)) for p in path)
        if keys[-1] != "kernel" or tuple(leaf.shape) != (d, k):
            continue
        node = params
        for key in keys[:-1]:
            node = node[key]
        if "bias" not in node:
            continue
        pred = features @ np.asarray(node["kernel"]) + np.asarray(node["bias"])
        if np.allclose(pred, logits, rtol=1e-3, atol=1e-3):
            return keys[:-1]
    raise UserError("MM repair needs a last dense layer from the penultimate features to the logits; "
                    "this model has none")


def last_dense_layer(params, features: np.ndarray, logits: np.ndarray) -> dict:
    """``{"kernel", "bias"}`` of the dense layer :func:`find_last_layer` finds."""
    node = params
    for key in find_last_layer(params, features, logits):
        node = node[key]
    return {"kernel": node["kernel"], "bias": node["bias"]}


@takes_model
def mm_repair(model: Classifier, repair_x, repair_y, margin: float = 1e-3,
              epsilon: float | None = None) -> MMResult:
    """MM repair of the last layer of ``model`` (a :class:`~repair_jax.classifier.Classifier` with
    features, or the pair ``module, variables``) on the repair set (repair_x, repair_y).

    ``margin`` is in logits (the true class must beat every other by at least it); ``epsilon`` the
    neighbourhood bound on the L-inf change (None: unbounded). Infeasible -> ``status="infeasible"``.
    """
    repair_x = np.asarray(repair_x, np.float32)
    repair_y = np.asarray(repair_y, np.int64)
    if len(repair_x) == 0:
        raise UserError("the repair set is empty")
    if margin < 0:
        raise UserError(f"margin must be >= 0, got {margin}")
    if epsilon is not None and not epsilon > 0:
        raise UserError(f"epsilon must be > 0, got {epsilon}")
    model = check_classifier(model, repair_x.shape[1:], model.num_classes or int(repair_y.max()) + 1)
    if not model.has_features:
        raise UserError("MM repair changes the last dense layer on the penultimate features, and this model "
                        "exposes none: build it with features= naming the layer before the logits")
    logits, feats = predict_outputs(model, repair_x)
    variables = model.variables
    layer = find_last_layer(variables["params"], feats, logits)
    node = variables["params"]
    for key in layer:
        node = node[key]
    t0 = time.perf_counter()
    status, dw, db, t = minimal_last_layer_change(feats, repair_y, np.asarray(node["kernel"]),
                                                  np.asarray(node["bias"]), margin, epsilon)
    wall = time.perf_counter() - t0
    if status != "optimal":
        return MMResult(status, variables, None, layer, wall, model)
    new_params = jax.tree_util.tree_map(lambda a: a, variables["params"])  # shallow copy of the tree
    new_params = _replace(new_params, layer, {
        **dict(node), "kernel": (np.asarray(node["kernel"], np.float64) + dw).astype(np.float32),
        "bias": (np.asarray(node["bias"], np.float64) + db).astype(np.float32)})
    return MMResult(status, {**variables, "params": new_params}, t, layer, wall, model.replace(params=new_params))


def _replace(tree, path, value):
    if not path:
        return value
    out = dict(tree)
    out[path[0]] = _replace(tree[path[0]], path[1:], value)
    return out
