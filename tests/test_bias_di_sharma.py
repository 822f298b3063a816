"""Issue 29: which disparate impact (DI) do Sharma's (n.d.) printed class-wise DI values follow?

Recomputed from the report's own printed numbers (analysis in docs/papers/bias.md, "Which disparate
impact?"). The report gives no DI formula. Findings asserted here:

* the four Que-1 confusion matrices are those of the report's tables: the library's precision / recall
  / F1, DOB and precision std on them give the printed values to the printed precision;
* the library's hard DI (TPR / FPR) on them reproduces none of the 20 printed DI values, and no ratio of
  products of up to two one-vs-rest counts or marginals does;
* the printed DI of a class the model never predicts (7.517) rules out every definition that is a
  function of the hard predictions' confusion matrix (both groups have the same rate of predicting it);
* Que-2 (no matrices printed): TPR / FPR = (n_neg / n_pos) * p / (1 - p), and the four models share the
  test set, so DI * (1 - p) / p must agree across them for each class; it does not for any of the 10;
* of the library's definitions only the probability one (``disparate_impact_soft``) can give a DI > 0 to
  a never-predicted class; the report prints no probabilities, so it cannot be checked further.
"""

import itertools

import numpy as np
import pytest

from repair_jax import metrics

# Sharma n.d., Que-1 "Class wise AUROC, DI, and confusion matrix", panels (a)-(d); rows = true class
QUE1_CM = {
    "LSTMCNN_Res": [[172, 2, 4, 38, 0], [6, 539, 0, 3, 24], [5, 2, 56, 10, 0], [26, 1, 4, 141, 4],
                    [4, 47, 0, 5, 67]],
    "LSTMCNN_Shfl": [[173, 16, 0, 0, 27], [6, 557, 0, 0, 9], [0, 0, 50, 22, 1], [6, 0, 31, 132, 7],
                     [17, 1, 1, 3, 101]],
    "LSTMCNN_Res_MTL": [[182, 20, 0, 0, 14], [5, 563, 1, 1, 2], [0, 0, 55, 15, 3], [2, 2, 22, 132, 18],
                        [15, 3, 5, 5, 95]],
    "LSTMCNN_Shfl_MTL": [[194, 1, 0, 6, 15], [2, 557, 0, 1, 12], [1, 0, 0, 72, 0], [12, 0, 0, 157, 7],
                         [8, 8, 0, 2, 105]],
}
QUE1_DI = {
    "LSTMCNN_Res": [18.824, 10.503, 70.657, 13.950, 18.019],
    "LSTMCNN_Shfl": [25.535, 28.861, 19.845, 21.409, 18.745],
    "LSTMCNN_Res_MTL": [33.993, 19.346, 26.878, 30.805, 20.810],
    "LSTMCNN_Shfl_MTL": [33.079, 54.961, 7.517, 9.976, 24.001],
}
# Sharma n.d., Que-1 "class wise Precision, Recall, Fscore": (precision, recall, F1) per class
QUE1_PRF = {
    "LSTMCNN_Res": [(.81, .80, .80), (.91, .94, .93), (.88, .77, .82), (.72, .80, .76), (.71, .54, .61)],
    "LSTMCNN_Shfl": [(.86, .80, .83), (.97, .97, .97), (.61, .68, .65), (.84, .75, .79), (.70, .82, .75)],
    "LSTMCNN_Res_MTL": [(.89, .84, .87), (.96, .98, .97), (.66, .75, .71), (.86, .75, .80), (.72, .77, .75)],
    "LSTMCNN_Shfl_MTL": [(.89, .90, .90), (.98, .97, .98), (0, 0, 0), (.66, .89, .76), (.76, .85, .80)],
}
# Sharma n.d., Que-1 "Average metrics" (DOB) and "Another metrics for bias measurement" (precision std)
QUE1_DOB = {"LSTMCNN_Res": .128, "LSTMCNN_Shfl": .096, "LSTMCNN_Res_MTL": .088, "LSTMCNN_Shfl_MTL": .364}
QUE1_PSTD = {"LSTMCNN_Res": .083, "LSTMCNN_Shfl": .127, "LSTMCNN_Res_MTL": .110, "LSTMCNN_Shfl_MTL": .348}

# Sharma n.d., Que-2 "class wise Precision, Recall, Fscore" (precision only) and "Class wise DI",
# panels (a) Pyr, (b) + Aug, (c) + Aug + PAdaIN, (d) + Aug + MTL; classes 0-9
QUE2_PRECISION = {
    "Pyr": [.71, .87, .79, .61, .75, .64, .75, .90, .92, .93],
    "Pyr_Aug": [.87, .94, .77, .81, .81, .78, .87, .92, .94, .93],
    "Pyr_Aug_PAdaIN": [.88, .94, .82, .77, .84, .80, .89, .88, .91, .94],
    "Pyr_Aug_MTL": [.85, .93, .80, .77, .83, .78, .91, .95, .92, .94],
}
QUE2_DI = {
    "Pyr": [19.859, 54.381, 28.052, 12.973, 25.555, 15.116, 25.050, 66.179, 86.005, 86.404],
    "Pyr_Aug": [41.431, 106.470, 22.229, 20.066, 30.722, 22.054, 46.905, 62.314, 96.725, 78.410],
    "Pyr_Aug_PAdaIN": [53.335, 106.157, 27.212, 18.464, 37.844, 23.428, 52.916, 51.901, 70.143, 105.010],
    "Pyr_Aug_MTL": [41.326, 100.765, 27.852, 21.614, 36.061, 23.390, 66.324, 113.374, 80.273, 112.984],
}

HALF_ULP = 0.0005 + 1e-9  # a value "reproduces" a printed 3-decimal number when it rounds to it


def _cm(name):
    return np.array(QUE1_CM[name])


@pytest.mark.parametrize("name", list(QUE1_CM))
def test_que1_matrices_are_the_reported_models(name):
    """Positive control: the printed matrices give the printed class tables, DOB and precision std."""
    cm = _cm(name)
    p, r, f = (np.asarray(a) for a in metrics.precision_recall_f1(cm))
    np.testing.assert_allclose(np.stack([p, r, f], 1), QUE1_PRF[name], atol=0.005 + 1e-9)
    assert abs(float(metrics.degree_of_bias(cm)) - QUE1_DOB[name]) <= HALF_ULP
    assert abs(float(metrics.precision_std(cm)) - QUE1_PSTD[name]) <= HALF_ULP


def test_que1_hard_di_reproduces_no_printed_value():
    got = np.concatenate([np.asarray(metrics.disparate_impact(_cm(n))) for n in QUE1_CM])
    want = np.concatenate([QUE1_DI[n] for n in QUE1_CM])
    assert not np.any(np.abs(got - want) <= HALF_ULP)
    # the values docs/papers/bias.md tabulates (LSTMCNN_Res and the never-predicted class)
    np.testing.assert_allclose(got[:5], [18.334, 10.655, 104.233, 14.077, 20.174], atol=HALF_ULP)
    assert got[17] == 0.0  # LSTMCNN_Shfl_MTL class 2: TPR = FPR = 0, undefined -> 0 (printed 7.517)
    ratio = want / np.where(got > 0, got, np.nan)
    # printed below TPR / FPR for 18 of the 19 defined values (not LSTMCNN_Res class 0), 0.68-1.03 times it
    assert np.sum(ratio < 1) == 18 and 0.67 < np.nanmin(ratio) < 0.68 and 1.02 < np.nanmax(ratio) < 1.03


def test_que1_per_class_readings_under_hard_di():
    """The report reads "higher DI = least bias towards the class"; its per-class winners (from its own
    printed values) agree with the hard DI's for 4 of the 5 classes (class 0: Res_MTL vs Shfl_MTL)."""
    names = list(QUE1_CM)
    printed = np.array([QUE1_DI[n] for n in names])
    hard = np.array([np.asarray(metrics.disparate_impact(_cm(n))) for n in names])
    said = ["LSTMCNN_Res_MTL", "LSTMCNN_Shfl_MTL", "LSTMCNN_Res", "LSTMCNN_Res_MTL", "LSTMCNN_Shfl_MTL"]
    assert [names[i] for i in printed.argmax(0)] == said
    assert [names[i] for i in hard.argmax(0)] == ["LSTMCNN_Shfl_MTL"] + said[1:]


def _one_vs_rest_quantities(cm):
    cm = cm.astype(float)
    tp = np.diag(cm)
    pos, pred, n = cm.sum(1), cm.sum(0), cm.sum()
    fp, fn = pred - tp, pos - tp
    tn = n - pos - fp
    return {"TP": tp, "FP": fp, "FN": fn, "TN": tn, "P": pos, "N-P": n - pos, "PP": pred, "N-PP": n - pred,
            "N": np.full_like(tp, n), "1": np.ones_like(tp)}


def test_que1_no_ratio_of_counts_reproduces_the_printed_di():
    """Every (a * b) / (c * d) of the one-vs-rest counts TP, FP, FN, TN, their marginals, N and 1, and its
    square root, square, log and x100: none gives a single one of the 20 printed values to the printed
    precision; in particular none gives 7.517 for the never-predicted class."""
    qs = [_one_vs_rest_quantities(_cm(n)) for n in QUE1_CM]
    keys = list(qs[0])
    v = {k: np.concatenate([q[k] for q in qs]) for k in keys}
    want = np.concatenate([QUE1_DI[n] for n in QUE1_CM])
    best = 0
    with np.errstate(all="ignore"):
        for (a, b), (c, d) in itertools.product(itertools.combinations_with_replacement(keys, 2), repeat=2):
            x = v[a] * v[b] / (v[c] * v[d])
            for y in (x, np.sqrt(x), x * x, np.log(x), 100 * x):
                best = max(best, int(np.sum(np.abs(y - want) <= HALF_ULP)))
    assert best == 0


def test_que1_never_predicted_class_rules_out_hard_definitions():
    """LSTMCNN_Shfl_MTL never predicts class 2 (its column is 0): P(yhat = 2 | y = 2) = P(yhat = 2 | y != 2)
    = 0 and P(yhat != 2 | .) = 1, so every ratio of outcome rates between the class and the rest is 0/0
    or 1, and any statistic of the confusion matrix sees a constant prediction -- yet 7.517 is printed."""
    cm = _cm("LSTMCNN_Shfl_MTL")
    assert cm[:, 2].sum() == 0 and cm[2].sum() == 73
    assert QUE1_DI["LSTMCNN_Shfl_MTL"][2] == 7.517
    assert float(np.asarray(metrics.disparate_impact(cm))[2]) == 0.0


def test_soft_di_can_be_positive_for_a_never_predicted_class():
    """The probability definition is the library's only one consistent with a printed DI > 0 for a class
    the model never predicts: class 2 loses every argmax yet DI_soft = 0.45 / (0.45 / 7.517)."""
    y = np.array([2] * 4 + [0] * 4 + [1] * 4)
    p2_other = 0.45 / 7.517
    probs = np.where(y[:, None] == 2, [0.0, 0.55, 0.45], [0.0, 0.0, p2_other])
    probs[y == 0, 0] = 1 - p2_other
    probs[y == 1, 1] = 1 - p2_other
    assert not np.any(probs.argmax(1) == 2)
    di = np.asarray(metrics.disparate_impact_soft(y, probs, 3))
    assert abs(di[2] - 7.517) <= HALF_ULP


def test_hard_di_is_a_function_of_precision():
    """TPR / FPR = (TP / n_pos) / (FP / n_neg) with FP = TP (1 - p) / p: (n_neg / n_pos) * p / (1 - p)."""
    for name in QUE1_CM:
        cm = _cm(name)
        p = np.asarray(metrics.precision_recall_f1(cm)[0])
        pos = cm.sum(1)
        defined = (p > 0) & (p < 1)
        want = (cm.sum() - pos) / pos * p / np.where(defined, 1 - p, 1)
        np.testing.assert_allclose(np.asarray(metrics.disparate_impact(cm))[defined], want[defined], rtol=1e-6)


def test_que2_printed_di_is_not_tpr_over_fpr_on_any_shared_test_set():
    """Hard DI = k_c * p / (1 - p) with k_c = n_neg / n_pos of class c, one value for the four models (one
    test set). With p known to +-0.005 and DI to +-0.0005, the k_c each model's printed DI implies are
    disjoint intervals for every class; with CIFAR-10's balanced test set (k_c = 9) none of the 40
    printed values lies in its TPR / FPR interval (all lie below it)."""
    models = list(QUE2_DI)
    disjoint = 0
    for c in range(10):
        lo, hi = [], []
        for m in models:
            p, di = QUE2_PRECISION[m][c], QUE2_DI[m][c]
            lo.append((di - HALF_ULP) * (1 - (p + .005)) / (p + .005))
            hi.append((di + HALF_ULP) * (1 - (p - .005)) / (p - .005))
            hard_lo, hard_hi = 9 * (p - .005) / (1 - (p - .005)), 9 * (p + .005) / (1 - (p + .005))
            assert di < hard_lo <= hard_hi
        disjoint += max(lo) > min(hi)
    assert disjoint == 10
