"""Evaluation of one prediction set against a target (Zhong et al. 2022, Sec. 2.2): accuracy (mAP
for multi-label), the target error (type1conf / type2conf of the pairs, cd of the triplets) and the
confusion matrix; and the w-os trade-off curve over rho (Sec. 3.4, Fig. 10)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from repair_jax import metrics
from repair_jax.repair.weighted import Targets, weighted_output_smoothing


def error_kind(targets: Targets, multilabel: bool) -> str:
    if targets.kind == "bias":
        return "cd"
    return "type2conf" if multilabel else "type1conf"


def target_error(err_matrix, targets: Targets) -> float:
    """Mean over the pairs of their confusion, or mean over the triplets of their cd (Zhong et al. 2022, Sec. 2.2)."""
    err = np.asarray(err_matrix)
    vals = [err[g[0], g[1]] if len(g) == 2 else float(metrics.confusion_disparity(err, *g))
            for g in targets.groups]
    return float(np.mean(vals))


def evaluate_outputs(scores: np.ndarray, y: np.ndarray, targets: Targets, multilabel: bool) -> dict:
    """Accuracy (mAP for multi-label), target error and the confusion matrix of one prediction set.

    ``scores``: softmax probabilities (N, K) or sigmoid probabilities (multi-label; predicted =
    p > 0.5). Multi-label ``confusion_matrix`` is the type2conf matrix.
    """
    k = scores.shape[1]
    if multilabel:
        pred = (scores > 0.5).astype(np.int32)
        cm = np.asarray(metrics.type2conf_matrix(y, pred))
        err = cm
        acc = float(metrics.mean_average_precision(jnp.asarray(y), jnp.asarray(scores)))
    else:
        cm = np.asarray(metrics.confusion_matrix(jnp.asarray(y), jnp.asarray(scores.argmax(1)), k))
        err = np.asarray(metrics.type1conf_matrix(cm))
        acc = float(np.trace(cm) / max(cm.sum(), 1))
    return {"accuracy": acc, "target_error": target_error(err, targets),
            "error_kind": error_kind(targets, multilabel), "confusion_matrix": cm}


def output_probabilities(logits: np.ndarray, multilabel: bool) -> np.ndarray:
    """Softmax probabilities (N, K), or sigmoid probabilities for multi-label."""
    return np.asarray(jax.nn.sigmoid(logits) if multilabel else jax.nn.softmax(logits, axis=-1))


def w_os_tradeoff(probs: np.ndarray, y: np.ndarray, targets: Targets, rhos, multilabel: bool = False) -> list[dict]:
    """w-os (Zhong et al. 2022, Sec. 3.4) over any set of rhos on one prediction set: ``[{rho, accuracy, target_error}]``.

    w-os needs no training, so its whole trade-off curve (Fig. 10) costs one forward pass. A diagnostic:
    picking rho from the curve of the split one reports on is tuning on that split.
    """
    rows = []
    for rho in rhos:
        ev = evaluate_outputs(np.asarray(weighted_output_smoothing(probs, targets, float(rho), multilabel)),
                              y, targets, multilabel)
        rows.append({"rho": float(rho), "accuracy": ev["accuracy"], "target_error": ev["target_error"]})
    return rows
