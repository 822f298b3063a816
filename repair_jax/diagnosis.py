"""Group-level error diagnosis of a trained model (Zhong et al. 2022, Sec. 2.2; Sharma n.d., class-wise metrics)."""

from __future__ import annotations

import numpy as np

from repair_jax import metrics
from repair_jax.data import Dataset
from repair_jax.errors import UserError, require_at_least


def diagnose(model, dataset: Dataset, split: str = "test", top_k: int = 5) -> dict:
    """The diagnosis.json record of ``model`` (a :class:`~repair_jax.classifier.Classifier`, or what
    :func:`~repair_jax.classifier.as_classifier` takes: a TrainState, a run) on ``split``.

    Single-label: accuracy, balanced accuracy, macro-F1, DOB, precision std, the confusion matrix
    (counts, rows = true), the ``top_k`` most confused pairs by type1conf and most biased triplets by
    cd over type1conf, class-wise precision/recall/F1/AUROC, the macro and weighted averages of
    :func:`repair_jax.metrics.averaged_metrics` (its class-wise disparate impact under ``per_class``), and the one-vs-rest
    ROC curves (``roc_curves``: per class ``fpr``, ``tpr``, ``thresholds``; Sharma n.d.). Multi-label: mAP, subset accuracy,
    pairs by type2conf and triplets by cd over type2conf.
    """
    from repair_jax.classifier import as_classifier, check_classifier, predict_logits

    clf = check_classifier(as_classifier(model), dataset.input_shape, dataset.num_classes)
    sp = dataset.split(split)
    if not len(sp):
        raise UserError(f"the {split} split is empty: nothing to diagnose")
    return diagnose_arrays(sp.y, predict_logits(clf, sp.x), dataset.class_names, multilabel=dataset.multilabel,
                           top_k=top_k, dataset=dataset.name, split=split)


def diagnose_arrays(labels, logits, class_names, *, multilabel: bool = False, top_k: int = 5,
                    dataset: str = "arrays", split: str = "test") -> dict:
    """The diagnosis.json record of predictions computed elsewhere: ``labels`` (N,) integers (or
    (N, K) multi-hot with ``multilabel``) and ``logits`` (N, K) of any model, any framework."""
    labels, logits = np.asarray(labels), np.asarray(logits)
    k = len(class_names)
    if logits.ndim != 2 or logits.shape[1] != k:
        raise UserError(f"logits must have shape (N, {k}) for {k} class names, got {logits.shape}")
    if labels.shape[0] != logits.shape[0] or labels.ndim != (2 if multilabel else 1):
        raise UserError(f"labels of shape {labels.shape} do not match logits of shape {logits.shape}")
    if not np.all(np.isfinite(logits)):
        raise UserError("the logits hold non-finite values (NaN or inf)")
    if not multilabel and (labels.min(initial=0) < 0 or labels.max(initial=0) >= k):
        raise UserError(f"labels must lie in [0, {k - 1}]")
    names = [str(n) for n in class_names]
    return _record(labels, logits, names, multilabel, top_k, dataset, split)


def _record(y, logits, class_names, multilabel, top_k, dataset_name, split) -> dict:
    num_classes = len(class_names)
    out: dict = {"dataset": dataset_name, "split": split, "num_examples": int(len(y)),
                 "class_names": list(class_names), "multilabel": multilabel}
    if multilabel:
        s = metrics.summarize_multilabel(y, logits)
        err, kind = s.pop("type2conf"), "type2conf"
        out.update(s)
    else:
        s = metrics.summarize(y, logits, num_classes)
        err, kind = s.pop("type1conf"), "type1conf"
        out.update(s)
        averages = metrics.averaged_metrics(y, logits, num_classes)  # Sharma n.d., "Average metrics", DI
        for key in ("disparate_impact", "disparate_impact_soft"):
            out["per_class"][key] = averages.pop(key)
        out.update(averages)
        z = np.asarray(logits, np.float32)
        z = np.exp(z - z.max(axis=-1, keepdims=True))  # softmax on the host: nothing to compile
        probs = z / z.sum(axis=-1, keepdims=True)
        out["roc_curves"] = metrics.roc_curves_ovr(y, probs, num_classes)
    out["error_kind"] = kind
    out["top_pairs"] = [{"classes": p["classes"], kind: p["value"]} for p in metrics.top_pairs(err, top_k)]
    out["top_triplets"] = [{"classes": t["classes"], "cd": t["value"]}
                           for t in metrics.top_triplets(err, top_k)]
    out["pairwise_error"] = np.asarray(err)
    return out


def format_summary(d: dict) -> str:
    """A short human-readable summary of a diagnosis record."""
    names = d["class_names"]
    lines = [f"{d['dataset']} / {d['split']} split ({d['num_examples']} examples)"]
    if d["multilabel"]:
        lines.append(f"  mAP {d['map']:.4f}   subset accuracy {d['subset_accuracy']:.4f}")
    else:
        lines.append(f"  accuracy {d['accuracy']:.4f}   balanced accuracy {d['balanced_accuracy']:.4f}   "
                     f"macro-F1 {d['macro_f1']:.4f}   DOB {d['dob']:.4f}")
    kind = d["error_kind"]
    lines.append(f"  most confused pairs ({kind}):")
    for p in d["top_pairs"]:
        a, b = p["classes"]
        lines.append(f"    {names[a]} <-> {names[b]}: {p[kind]:.4f}")
    lines.append("  most biased triplets (cd = |err(A,C) - err(B,C)|, anchor C):")
    for t in d["top_triplets"]:
        a, b, c = t["classes"]
        lines.append(f"    A={names[a]}, B={names[b]}, C={names[c]}: {t['cd']:.4f}")
    return "\n".join(lines)


def diagnose_run(run_path, out, split: str = "test", top_k: int = 5, force: bool = False) -> dict:
    """Diagnoses the run at ``run_path``; writes ``out/diagnosis.json`` and (single-label)
    ``out/confusion_matrix.png`` atomically and returns the record. An existing non-empty ``out`` is
    replaced only with ``force``; an ``out`` that is or holds the run is refused even then."""
    from repair_jax.io import atomic_dir, check_keeps_inputs, write_json
    from repair_jax.plots import plot_confusion_matrix, plot_roc_curves
    from repair_jax.runs import load_run

    require_at_least("top_k", top_k, 1)
    check_keeps_inputs(out, [run_path])
    run = load_run(run_path)
    ds = run.dataset()
    with atomic_dir(out, overwrite=force) as tmp:
        d = diagnose(run.state(), ds, split=split, top_k=top_k)
        write_json(tmp / "diagnosis.json", d)
        if not ds.multilabel:
            plot_confusion_matrix(d["confusion_matrix"], ds.class_names, tmp / "confusion_matrix.png",
                                  title=f"{ds.name} {run.info['config']['model']} ({split})")
            plot_roc_curves(d["roc_curves"], ds.class_names, tmp / "roc_curves.png",
                            aurocs=d["per_class"]["auroc"])
    return d
