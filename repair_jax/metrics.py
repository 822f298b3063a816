"""Diagnosis metrics: confusion, bias (confusion disparity), class-wise and imbalance metrics.

All array functions are pure JAX and jittable (``num_classes`` static). The functions of counts and
scores below ``_xp`` (confusion matrices, class-wise rates, AUROC, DI) also take NumPy arrays, and then
compute in NumPy (float64) on the host: a diagnosis compiles nothing for its metrics, while JAX arrays
and tracers (a soft metric being differentiated) take the JAX path. Conventions for
undefined cases (no NaN is ever returned):

* a conditional rate with an empty conditioning set (e.g. P(A|B) when class B has no samples)
  is 0;
* precision of a class never predicted, recall of a class never present and the F1 built from
  them are 0 (scikit-learn's ``zero_division=0``);
* balanced accuracy and DOB average over the classes present in ``y_true`` (as scikit-learn's
  ``balanced_accuracy_score``); macro-F1 and the precision standard deviation over all classes;
* one-vs-rest AUROC and average precision of a class with no positive (or no negative) sample is
  0.5 / 0 respectively; ``class_present`` tells which classes are defined.

Sources: Zhong et al. 2022, Sec. 2.2 (type1conf, type2conf, cd);
Sharma n.d. (class-wise precision/recall/F1/AUROC, DOB, precision std).
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np


def _xp(*arrays):
    """The array module of the inputs: ``jax.numpy`` when any is a JAX array or tracer, else NumPy."""
    return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def _float(a, xp):
    """``a`` as floats: float32 at least in JAX (float64 stays), float64 in NumPy."""
    a = xp.asarray(a)
    return a.astype(jnp.promote_types(a.dtype, jnp.float32)) if xp is jnp else a.astype(np.float64)


def _safe_div(num, den):
    xp = _xp(num, den)
    return xp.where(den > 0, num / xp.where(den > 0, den, 1), 0.0)


def _one_hot(y, k: int, xp, dtype=None):
    if xp is jnp:
        return jax.nn.one_hot(y, k, dtype=dtype or jnp.float32)
    return np.eye(k, dtype=dtype or np.float64)[np.asarray(y)]


@functools.partial(jax.jit, static_argnames="num_classes")
def _confusion_matrix_jax(y_true, y_pred, num_classes: int):
    t = jax.nn.one_hot(y_true, num_classes, dtype=jnp.int32)
    p = jax.nn.one_hot(y_pred, num_classes, dtype=jnp.int32)
    return t.T @ p


def confusion_matrix(y_true, y_pred, num_classes: int):
    """Counts (K, K), rows = true class, columns = predicted class (NumPy int64 for NumPy inputs)."""
    if _xp(y_true, y_pred) is jnp:
        return _confusion_matrix_jax(y_true, y_pred, num_classes)
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return cm


def conditional_confusion(cm):
    """P[t, p] = share of class-t samples predicted p (0 for a class without samples).

    ``cm`` may hold counts or expected counts (:func:`soft_confusion_matrix`); float64 stays float64.
    """
    cm = _float(cm, _xp(cm))
    return _safe_div(cm, cm.sum(axis=1, keepdims=True))


def type1conf_matrix(cm):
    """M[a, b] = type1conf(a, b) = mean(P(a|b), P(b|a)), symmetric, zero diagonal (Zhong et al. 2022, Sec. 2.2.1).

    P(a|b) is the share of class-b samples predicted a, i.e. ``conditional_confusion(cm)[b, a]``.
    """
    xp = _xp(cm)
    p = conditional_confusion(cm)
    m = 0.5 * (p + p.T)
    return m * (1 - xp.eye(m.shape[0]))


def type1conf(cm, a: int, b: int):
    return type1conf_matrix(cm)[a, b]


def type2conf_matrix(y_true, y_pred):
    """M[a, b] = type2conf(a, b) = mean(P((a,b)|a), P((b,a)|b)) for multi-label (Zhong et al. 2022, Sec. 2.2.1).

    P((a,b)|a): among samples labelled a and not b, the share predicted to contain both a and b.
    y_true, y_pred: (N, K) multi-hot (0/1).
    """
    t = jnp.asarray(y_true, jnp.float32)
    p = jnp.asarray(y_pred, jnp.float32)
    cond = jnp.einsum("na,nb->ab", t, 1 - t)                     # labelled a, not b
    both = jnp.einsum("na,nb,na,nb->ab", t, 1 - t, p, p)         # ... and predicted a and b
    rate = _safe_div(both, cond)
    m = 0.5 * (rate + rate.T)
    return m * (1 - jnp.eye(m.shape[0]))


def type2conf(y_true, y_pred, a: int, b: int):
    return type2conf_matrix(y_true, y_pred)[a, b]


def confusion_disparity(err, a: int, b: int, c: int):
    """cd(a, b, c) = |error(a, c) - error(b, c)| for a pairwise error matrix (Zhong et al. 2022, Sec. 2.2.2)."""
    err = jnp.asarray(err)
    return jnp.abs(err[a, c] - err[b, c])


def soft_confusion_matrix(y_true, probs):
    """Expected counts (K, K): S[t, k] = sum_{i: y_i = t} p_ik, rows = true class (y_true (N,), probs (N, K)).

    With one-hot probabilities of the hard predictions it is :func:`confusion_matrix`.
    """
    probs = jnp.asarray(probs)
    return jax.nn.one_hot(jnp.asarray(y_true), probs.shape[-1], dtype=probs.dtype).T @ probs


def soft_type1conf(probs, y_true, a: int, b: int):
    """Differentiable type1conf(a, b) = mean(P(a|b), P(b|a)) (Zhong et al. 2022, Sec. 2.2.1) with
    the softmax probabilities in place of hard predictions: P(a|b) = mean_{i: y_i = b} p_ia, the expected
    rate of predicting a on true b (0 when class b has no sample).

    probs (N, K) rows summing to 1, y_true (N,). On one-hot probabilities of the predictions it equals
    :func:`type1conf` of their :func:`confusion_matrix`; a == b gives 0 (zero diagonal).
    """
    return type1conf_matrix(soft_confusion_matrix(y_true, probs))[a, b]


def soft_cd(probs, y_true, a: int, b: int, c: int):
    """Differentiable cd(a, b, c) = |type1conf(a, c) - type1conf(b, c)| (Zhong et al. 2022, Sec. 2.2.2,
    error = type1conf) with :func:`soft_type1conf` in place of the hard type1conf. Shapes as there; on
    one-hot probabilities it equals :func:`confusion_disparity` of :func:`type1conf_matrix`."""
    return confusion_disparity(type1conf_matrix(soft_confusion_matrix(y_true, probs)), a, b, c)


def top_pairs(err, k: int = 5) -> list[dict]:
    """The k most confused unordered pairs, most confused first: ``[{"classes": [a, b], "value"}]``."""
    err = np.asarray(err)
    n = err.shape[0]
    iu = np.triu_indices(n, 1)
    vals = err[iu]
    order = np.lexsort((iu[1], iu[0], -vals))[:k]  # ties broken by class index: deterministic
    return [{"classes": [int(iu[0][i]), int(iu[1][i])], "value": float(vals[i])} for i in order]


def top_triplets(err, k: int = 5) -> list[dict]:
    """The k most biased triplets by cd, as ``[{"classes": [A, B, C], "value"}]``.

    Roles as in Zhong et al. 2022, Sec. 2.2.2: C is the anchor, A the positive (error(A, C) >= error(B, C)) and B
    the negative target class.
    """
    err = np.asarray(err)
    n = err.shape[0]
    rows = []
    for c in range(n):
        others = [i for i in range(n) if i != c]
        for a, b in itertools.combinations(others, 2):
            if err[a, c] < err[b, c]:
                a, b = b, a
            rows.append((-(err[a, c] - err[b, c]), a, b, c))
    rows.sort()
    return [{"classes": [a, b, c], "value": float(-v)} for v, a, b, c in rows[:k]]


# ----------------------------------------------------------------------------- class-wise

def class_present(cm):
    return _xp(cm).asarray(cm).sum(axis=1) > 0


def precision_recall_f1(cm):
    """Class-wise precision, recall and F1 (each (K,)) from a confusion matrix; zero_division=0."""
    xp = _xp(cm)
    cm = _float(cm, xp)
    tp = xp.diag(cm)
    precision = _safe_div(tp, cm.sum(axis=0))
    recall = _safe_div(tp, cm.sum(axis=1))
    f1 = _safe_div(2 * precision * recall, precision + recall)
    return precision, recall, f1


def accuracy(cm):
    xp = _xp(cm)
    cm = _float(cm, xp)
    return _safe_div(xp.trace(cm), cm.sum())


def balanced_accuracy(cm):
    """Mean recall over the classes present in y_true."""
    xp = _xp(cm)
    _, recall, _ = precision_recall_f1(cm)
    present = class_present(cm)
    return _safe_div(xp.sum(xp.where(present, recall, 0.0)), present.sum())


def macro_f1(cm):
    return _xp(cm).mean(precision_recall_f1(cm)[2])


def degree_of_bias(cm):
    """DOB: population standard deviation of the class-wise recalls over present classes (Sharma n.d.)."""
    xp = _xp(cm)
    _, recall, _ = precision_recall_f1(cm)
    present = class_present(cm)
    n = xp.maximum(present.sum(), 1)
    mean = xp.sum(xp.where(present, recall, 0.0)) / n
    return xp.sqrt(xp.sum(xp.where(present, xp.square(recall - mean), 0.0)) / n)


def precision_std(cm):
    """Population standard deviation of the class-wise precisions over all classes (Sharma n.d.)."""
    return _xp(cm).std(precision_recall_f1(cm)[0])


def _avg_ranks(scores):
    """1-based average ranks (ties share their mean rank), (N,) -> (N,)."""
    xp = _xp(scores)
    s = xp.sort(scores)
    lo = xp.searchsorted(s, scores, side="left")
    hi = xp.searchsorted(s, scores, side="right")
    return (lo + hi + 1) / 2.0


def binary_auroc(y, scores):
    """ROC AUC of scores for binary y (N,) via the Mann-Whitney statistic; 0.5 if undefined."""
    xp = _xp(y, scores)
    y = _float(y, xp)
    npos = y.sum()
    nneg = y.shape[0] - npos
    # the scores in float32 on both paths: ties (which average ranks) are those of the float32 scores
    ranks = _avg_ranks(xp.asarray(scores, np.float32))
    u = xp.sum(ranks * y) - npos * (npos + 1) / 2
    return xp.where((npos > 0) & (nneg > 0), u / xp.maximum(npos * nneg, 1), 0.5)


def binary_average_precision(y, scores):
    """Average precision (scikit-learn's step-wise definition, ties as one threshold); 0 if no positive."""
    y = jnp.asarray(y, jnp.float32)
    scores = jnp.asarray(scores, jnp.float32)
    order = jnp.argsort(scores)
    s_sorted, y_sorted = scores[order], y[order]
    tp_from = jnp.cumsum(y_sorted[::-1])[::-1]  # positives with sorted index >= j
    n = scores.shape[0]
    first = jnp.searchsorted(s_sorted, scores, side="left")
    tp = tp_from[first]
    predicted = n - first
    precision_at = tp / predicted
    npos = y.sum()
    return jnp.where(npos > 0, jnp.sum(y * precision_at) / jnp.maximum(npos, 1), 0.0)


def auroc_ovr(y_true, scores, num_classes: int):
    """One-vs-rest AUROC per class (K,), single-label y_true (N,), scores (N, K)."""
    xp = _xp(y_true, scores)
    onehot = _one_hot(y_true, num_classes, xp)
    if xp is np:
        scores = np.asarray(scores)
        return np.array([binary_auroc(onehot[:, k], scores[:, k]) for k in range(num_classes)])
    return jax.vmap(binary_auroc, in_axes=(1, 1))(onehot, scores)


def mean_average_precision(y_true, scores):
    """Multi-label mAP: mean over classes of the average precision, y_true (N, K) multi-hot."""
    return jnp.mean(jax.vmap(binary_average_precision, in_axes=(1, 1))(y_true, scores))


def summarize(y_true, logits, num_classes: int) -> dict:
    """All single-label diagnosis numbers for one prediction set, as plain Python/numpy values
    (:func:`_single_label_arrays`: NumPy for NumPy inputs, one compiled program for JAX arrays)."""
    a = _single_label_arrays(y_true, logits, num_classes)
    return {
        "accuracy": float(a["accuracy"]),
        "balanced_accuracy": float(a["balanced_accuracy"]),
        "macro_f1": float(a["macro_f1"]),
        "dob": float(a["dob"]),
        "precision_std": float(a["precision_std"]),
        "confusion_matrix": np.asarray(a["confusion_matrix"]),
        "type1conf": np.asarray(a["type1conf"]),
        "per_class": {k: np.asarray(a[k]) for k in ("precision", "recall", "f1", "auroc")},
    }


def summarize_multilabel(y_true, logits) -> dict:
    """Multi-label diagnosis: mAP, subset accuracy and the type2conf matrix (threshold 0.5)."""
    y_true = jnp.asarray(y_true)
    logits = jnp.asarray(logits)
    y_pred = (logits > 0).astype(jnp.float32)
    return {
        "map": float(mean_average_precision(y_true, logits)),
        "subset_accuracy": float(jnp.mean(jnp.all(y_pred == y_true, axis=-1))),
        "type2conf": np.asarray(type2conf_matrix(y_true, y_pred)),
    }


def group_accuracies(y_true, y_pred, groups, num_groups: int):
    """Accuracy of each group (G,) and whether the group has any example (G,) bool."""
    correct = (jnp.asarray(y_true) == jnp.asarray(y_pred)).astype(jnp.float32)
    onehot = jax.nn.one_hot(jnp.asarray(groups), num_groups)
    counts = onehot.sum(0)
    return _safe_div(onehot.T @ correct, counts), counts > 0


def worst_group_accuracy(y_true, y_pred, groups, num_groups: int):
    """Lowest accuracy over the non-empty groups (Sagawa et al. 2019; Adebayo 2022, Table 5.4)."""
    acc, present = group_accuracies(y_true, y_pred, groups, num_groups)
    return jnp.min(jnp.where(present, acc, jnp.inf))
# ----------------------------------------------------------------------------- group disparity metrics
# Source: Adebayo 2022, Sec. 6.2 and Appendix B.1.3. Each takes class probabilities
# (N, K), integer labels (N,) and a group mask (N,) (1 = member of the group S_t; None = all), and
# is a differentiable (almost everywhere) function of the probabilities, so that the influence of a
# training point on it (Eq. 6.4/6.5) is a chain rule. An empty group gives 0 (no NaN).

def _group_mask(labels, mask):
    return jnp.ones(labels.shape[0], jnp.float32) if mask is None else jnp.asarray(mask, jnp.float32)


@functools.partial(jax.jit, static_argnames="num_bins")
def expected_calibration_error(probs, labels, mask=None, num_bins: int = 10):
    """Binned ECE = sum_m |B_m|/n |conf(B_m) - acc(B_m)| (Adebayo 2022, App. B.1.3, M = 10 bins of width 1/M).

    conf_i = max_k p_ik, correct_i = [argmax_k p_ik = y_i]; B_m = {i : conf_i in ((m-1)/M, m/M]}.
    Written as (1/n) sum_m |sum_{i in B_m} (conf_i - correct_i)|, it is differentiable in the
    probabilities wherever no confidence sits on a bin edge or a tie (bins, correctness locally constant).
    """
    w = _group_mask(labels, mask)
    conf = jnp.max(probs, axis=-1)
    correct = (jnp.argmax(probs, axis=-1) == labels).astype(probs.dtype)
    bins = jnp.clip(jnp.ceil(jax.lax.stop_gradient(conf) * num_bins).astype(jnp.int32) - 1, 0, num_bins - 1)
    per_bin = jax.ops.segment_sum(w * (conf - correct), bins, num_segments=num_bins)
    return _safe_div(jnp.sum(jnp.abs(per_bin)), jnp.sum(w))


@jax.jit
def brier_score(probs, labels, mask=None, positive=None):
    """Brier score: mean (p_i - y_i)^2 of the positive class's probability (binary; = scikit-learn's
    ``brier_score_loss``) when ``positive`` is a class index, else the multi-class mean over examples
    of sum_k (p_ik - [y_i = k])^2 (Adebayo 2022, Sec. 6.2, GD_bs)."""
    w = _group_mask(labels, mask)
    onehot = jax.nn.one_hot(labels, probs.shape[-1], dtype=probs.dtype)
    if positive is None:
        per = jnp.sum(jnp.square(probs - onehot), axis=-1)
    else:
        per = jnp.square(probs[:, positive] - onehot[:, positive])
    return _safe_div(jnp.sum(w * per), jnp.sum(w))


@jax.jit
def generalized_fpr(probs, labels, mask=None, positive=1):
    """Generalized false positive rate E[p_positive(x) | y != positive] (Adebayo 2022, Sec. 6.2, GD_fpr)."""
    w = _group_mask(labels, mask) * (labels != positive)
    return _safe_div(jnp.sum(w * probs[:, positive]), jnp.sum(w))


@jax.jit
def generalized_fnr(probs, labels, mask=None, positive=1):
    """Generalized false negative rate E[1 - p_positive(x) | y = positive] (Adebayo 2022, Sec. 6.2, GD_fnr)."""
    w = _group_mask(labels, mask) * (labels == positive)
    return _safe_div(jnp.sum(w * (1 - probs[:, positive])), jnp.sum(w))


@jax.jit
def soft_error_rate(probs, labels, mask=None):
    """Expected error of the model's predictive distribution, 1 - E[p_{y_i}(x_i)]: the differentiable
    stand-in for the error rate GD_er = 1 - acc (Adebayo 2022, Sec. 6.2), whose gradient is 0 almost everywhere."""
    w = _group_mask(labels, mask)
    p_true = jnp.take_along_axis(probs, labels[:, None], axis=1)[:, 0]
    return _safe_div(jnp.sum(w * (1 - p_true)), jnp.sum(w))


@jax.jit
def error_rate(y_true, y_pred, mask=None):
    """Hard error rate 1 - accuracy over the group (GD_er)."""
    w = _group_mask(y_true, mask)
    return _safe_div(jnp.sum(w * (y_true != y_pred)), jnp.sum(w))


@jax.jit
def false_positive_rate(y_true, y_pred, mask=None, positive=1):
    """Hard FPR of class ``positive`` (one vs rest): P(pred = positive | y != positive) in the group."""
    w = _group_mask(y_true, mask) * (y_true != positive)
    return _safe_div(jnp.sum(w * (y_pred == positive)), jnp.sum(w))


@jax.jit
def false_negative_rate(y_true, y_pred, mask=None, positive=1):
    """Hard FNR of class ``positive`` (one vs rest): P(pred != positive | y = positive) in the group."""
    w = _group_mask(y_true, mask) * (y_true == positive)
    return _safe_div(jnp.sum(w * (y_pred != positive)), jnp.sum(w))


GROUP_DISPARITY_METRICS = ("ece", "brier", "fpr", "fnr", "er")


def _soft_metrics(probs, labels, mask, positive: int, num_bins: int) -> dict:
    """The differentiable group metrics of Adebayo 2022, Sec. 6.2, by name, as thunks."""
    return {"ece": lambda: expected_calibration_error(probs, labels, mask, num_bins),
            "brier": lambda: brier_score(probs, labels, mask, positive if probs.shape[-1] == 2 else None),
            "fpr": lambda: generalized_fpr(probs, labels, mask, positive),
            "fnr": lambda: generalized_fnr(probs, labels, mask, positive),
            "er": lambda: soft_error_rate(probs, labels, mask)}


def _hard_metrics(probs, labels, mask, positive: int) -> dict:
    """The reported versions of FPR, FNR and the error rate: of the hard (argmax) predictions."""
    pred = jnp.argmax(probs, axis=-1)
    return {"fpr": lambda: false_positive_rate(labels, pred, mask, positive),
            "fnr": lambda: false_negative_rate(labels, pred, mask, positive),
            "er": lambda: error_rate(labels, pred, mask)}


def _check_group_metric(name: str) -> None:
    if name not in GROUP_DISPARITY_METRICS:
        raise ValueError(f"unknown group disparity metric {name!r}; choose one of {', '.join(GROUP_DISPARITY_METRICS)}")


def group_disparity(name: str, probs, labels, mask=None, positive: int = 1, num_bins: int = 10):
    """The differentiable group disparity metric ``name`` (ece | brier | fpr | fnr | er) of Adebayo 2022, Sec. 6.2.

    ``er`` is the soft error rate; ``brier`` is multi-class unless the problem is binary (then the
    positive class's Brier score).
    """
    _check_group_metric(name)
    return _soft_metrics(probs, labels, mask, positive, num_bins)[name]()


def group_disparity_hard(name: str, probs, labels, mask=None, positive: int = 1, num_bins: int = 10):
    """The usual (reported) version of a group metric: ECE and Brier as above; FPR, FNR and the
    error rate of the hard (argmax) predictions."""
    _check_group_metric(name)
    hard = _hard_metrics(probs, labels, mask, positive)
    return hard[name]() if name in hard else group_disparity(name, probs, labels, mask, positive, num_bins)


# ----------------------------------------------------------------------------- bias report metrics
# Source: Sharma n.d. (Que-1 "Average metrics", "Class wise AUROC, DI, and confusion
# matrix", "Roc_curves"; Que-2 "Class wise DI"). The report prints a DI per class but no formula.
# Tried on its four printed Que-1 confusion matrices (20 printed values): every ratio of products of
# up to two of TP, FP, FN, TN, row/column sums and N (and their logs, square roots, x100) -- none
# reproduces any of them. The closest is the one-vs-rest disparate impact TPR / FPR below: the printed
# values are 0.68-1.03 times it (e.g. 18.82 vs 18.33, 10.50 vs 10.66, 13.95 vs 14.08; not the same
# class order within a model) and the report's per-class "least bias" verdicts hold under it for 4 of
# 5 classes, but the report prints DI = 7.517 for a class with TP = FP = 0, which no function of the
# confusion matrix alone gives: the report possibly averaged predicted probabilities
# (:func:`disparate_impact_soft`), which its text does not show and which cannot be checked without
# them. Its Que-2 values are not TPR / FPR on any test set the four models share either
# (TPR / FPR = (n_neg / n_pos) p / (1 - p), and the printed precisions imply disjoint n_neg / n_pos
# for every class). Issue 29; recomputed in tests/test_bias_di_sharma.py; see docs/papers/bias.md.

def disparate_impact(cm):
    """One-vs-rest disparate impact per class (K,): DI_c = P(yhat = c | y = c) / P(yhat = c | y != c).

    The fairness ratio P(favourable | group 1) / P(favourable | group 2) (Feldman et al. 2015) with
    the favourable outcome "predicted c" and the groups "true class c" / "any other class", i.e.
    TPR_c / FPR_c (the positive likelihood ratio); higher = the model singles out class c more
    sharply. 0 when undefined (no example of c, or FPR_c = 0). cm: (K, K) counts, rows = true.
    """
    xp = _xp(cm)
    cm = _float(cm, xp)
    tp = xp.diag(cm)
    pos = cm.sum(axis=1)
    fp = cm.sum(axis=0) - tp
    neg = cm.sum() - pos
    return _safe_div(_safe_div(tp, pos), _safe_div(fp, neg))


def disparate_impact_soft(y_true, probs, num_classes: int):
    """DI with predicted probabilities in place of hard predictions (K,):
    DI_c = mean_{i: y_i = c} p_ic / mean_{i: y_i != c} p_ic (0 when undefined).

    Our reading of Sharma's (n.d.) class-wise DI (it prints DI > 0 for a class never predicted); y_true (N,),
    probs (N, K) rows summing to 1.
    """
    xp = _xp(y_true, probs)
    onehot = _one_hot(y_true, num_classes, xp)
    probs = _float(probs, xp)
    in_c = _safe_div((onehot * probs).sum(0), onehot.sum(0))
    out_c = _safe_div(((1 - onehot) * probs).sum(0), (1 - onehot).sum(0))
    return _safe_div(in_c, out_c)


def _single_label_arrays(y_true, logits, num_classes: int) -> dict:
    """Every number of :func:`summarize`, :func:`averaged_metrics` and :func:`bias_summary` (the formulas
    are the functions above): in NumPy for NumPy inputs (nothing compiled), else in one compiled program
    (the command line compiled each metric separately before, ~100 small programs for one diagnosis)."""
    if _xp(y_true, logits) is jnp:
        return _single_label_arrays_jax(y_true, logits, num_classes)
    return _single_label_numbers(np.asarray(y_true), np.asarray(logits), num_classes, np)


def _softmax(z, xp):
    z = _float(z, xp)
    e = xp.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _single_label_numbers(y_true, logits, num_classes: int, xp) -> dict:
    probs = _softmax(xp.asarray(logits, np.float32), xp)
    cm = confusion_matrix(y_true, xp.argmax(logits, -1), num_classes)
    support = _float(cm.sum(axis=1), xp)
    weights = support / xp.maximum(support.sum(), 1)
    present = class_present(cm)
    auroc = auroc_ovr(y_true, probs, num_classes)
    precision, recall, f1 = precision_recall_f1(cm)
    out = {"confusion_matrix": cm, "accuracy": accuracy(cm), "balanced_accuracy": balanced_accuracy(cm),
           "macro_f1": macro_f1(cm), "dob": degree_of_bias(cm), "precision_std": precision_std(cm),
           "type1conf": type1conf_matrix(cm), "precision": precision, "recall": recall, "f1": f1,
           "auroc": auroc, "probs": probs}
    for name, values in zip(("precision", "recall", "f1"), (precision, recall, f1)):
        out[f"{name}_macro"] = xp.mean(values)
        out[f"{name}_weighted"] = xp.sum(weights * values)
    out["auroc_macro"] = _safe_div(xp.sum(xp.where(present, auroc, 0.0)), present.sum())
    out["auroc_weighted"] = xp.sum(weights * auroc)
    out["disparate_impact"] = disparate_impact(cm)
    out["disparate_impact_soft"] = disparate_impact_soft(y_true, probs, num_classes)
    return out


@functools.partial(jax.jit, static_argnames="num_classes")
def _single_label_arrays_jax(y_true, logits, num_classes: int) -> dict:
    return _single_label_numbers(y_true, logits, num_classes, jnp)


AVERAGED_KEYS = tuple(f"{name}_{how}" for name in ("precision", "recall", "f1", "auroc")
                      for how in ("macro", "weighted"))


def averaged_metrics(y_true, logits, num_classes: int) -> dict:
    """Macro and support-weighted averages of class-wise precision, recall, F1 and one-vs-rest AUROC
    (Sharma n.d., "Average metrics"; scikit-learn's ``average='macro' | 'weighted'``, ``zero_division=0``),
    plus class-wise DI (hard and soft). These are the fields ``diagnosis.json`` gains.

    y_true (N,) int, logits (N, K). AUROC averages run over the classes present in ``y_true`` (the
    others have no defined AUROC); precision/recall/F1 macro averages over all K classes.
    """
    a = _single_label_arrays(y_true, logits, num_classes)
    out = {k: float(a[k]) for k in AVERAGED_KEYS}
    out.update({k: np.asarray(a[k]) for k in ("disparate_impact", "disparate_impact_soft")})
    return out


def bias_summary(y_true, logits, num_classes: int) -> dict:
    """Every number of Sharma's (n.d.) tables for one prediction set (one compiled call): accuracy, DOB,
    precision std, the :func:`averaged_metrics` averages, the confusion matrix and ``per_class``
    precision, recall, F1, AUROC, DI and soft DI (numpy). y_true (N,) int, logits (N, K)."""
    a = _single_label_arrays(y_true, logits, num_classes)
    out = {"accuracy": float(a["accuracy"]), "dob": float(a["dob"]),
           "precision_std": float(a["precision_std"]), "confusion_matrix": np.asarray(a["confusion_matrix"])}
    out.update({k: float(a[k]) for k in AVERAGED_KEYS})
    out["per_class"] = {k: np.asarray(a[k]) for k in ("precision", "recall", "f1", "auroc", "disparate_impact",
                                                       "disparate_impact_soft")}
    return out


def roc_curve(y, scores, drop_intermediate: bool = True) -> dict:
    """ROC curve points of binary ``y`` (N,) against ``scores`` (N,), as scikit-learn's ``roc_curve``:
    ``{"fpr", "tpr", "thresholds"}`` (numpy, one point per distinct score, preceded by (0, 0) at
    threshold inf); ``drop_intermediate`` drops collinear points. FPR (TPR) is 0 throughout when
    there is no negative (positive) example. Not jittable (the length depends on the data)."""
    y = np.asarray(y).astype(bool)
    scores = np.asarray(scores, np.float64)
    order = np.argsort(-scores, kind="mergesort")
    s, t = scores[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]  # last index of each distinct score
    tps = np.cumsum(t)[last].astype(np.float64)
    fps = (last + 1) - tps
    thresholds = s[last]
    if drop_intermediate and tps.size > 2:
        keep = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        tps, fps, thresholds = tps[keep], fps[keep], thresholds[keep]
    tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
    thresholds = np.r_[np.inf, thresholds]
    fpr = fps / fps[-1] if fps[-1] > 0 else np.zeros_like(fps)
    tpr = tps / tps[-1] if tps[-1] > 0 else np.zeros_like(tps)
    return {"fpr": fpr, "tpr": tpr, "thresholds": thresholds}


def roc_curves_ovr(y_true, scores, num_classes: int, drop_intermediate: bool = True) -> list[dict]:
    """One-vs-rest ROC curve of each class (Sharma n.d., "Roc_curves"): ``[roc_curve(y == k, scores[:, k])]``."""
    y_true = np.asarray(y_true)
    scores = np.asarray(scores)
    return [roc_curve(y_true == k, scores[:, k], drop_intermediate) for k in range(num_classes)]
