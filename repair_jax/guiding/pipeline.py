"""Model guiding on a trained network end to end (Adebayo 2022, Algorithm 1): embed,
carve, run the bilevel update, fold the guided concept head back into the network, and report."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from repair_jax.guiding.algorithm import GuidingConfig, GuidingResult, guiding_report, model_guiding
from repair_jax.guiding.bilevel import linear_predict
from repair_jax.guiding.carving import ConceptBasis, fit_concept_basis, fit_linear_head, fold_into_head, project
from repair_jax.guiding.formats import AuditSet, ConceptLibrary
from repair_jax.classifier import Classifier, as_classifier, predict_outputs, takes_model
from repair_jax.errors import UserError


@dataclasses.dataclass
class Carved:
    """A network carved into a concept bottleneck model: basis, head and the concept coordinates,
    plus the network's own logits and embeddings on the training and audit inputs (kept so that
    baselines and reports need no second forward pass)."""

    basis: ConceptBasis
    theta: dict
    z_train: np.ndarray
    z_audit: np.ndarray
    logits_train: np.ndarray
    h_train: np.ndarray
    logits_audit: np.ndarray
    h_audit: np.ndarray


def _features_model(model) -> Classifier:
    clf = as_classifier(model)
    if not clf.apply.features:
        raise UserError("concept carving embeds inputs by the model's penultimate features and this model "
                        "exposes none: build it with features= naming the layer before the logits")
    return clf


def carve_network(model, x_train, y_train, audit: AuditSet, library: ConceptLibrary,
                  num_classes: int, l2: float = 1e-2) -> Carved:
    """Carving step of Algorithm 1: concept vectors fit on the audit set's embeddings (the penultimate
    features of ``model``, any model :func:`~repair_jax.classifier.as_classifier` takes), the final
    linear model on the training set's concept coordinates."""
    clf = _features_model(model)
    logits_train, h_train = predict_outputs(clf, x_train)
    logits_audit, h_audit = predict_outputs(clf, audit.x)
    basis = fit_concept_basis(h_audit, audit.a, library, l2=l2)
    z_train, z_audit = project(basis, h_train), project(basis, h_audit)
    theta = fit_linear_head(z_train, y_train, "classification", num_classes, l2=l2)
    return Carved(basis, theta, z_train, z_audit, logits_train, h_train, logits_audit, h_audit)


def guiding_problem(carved: Carved, y_train, audit: AuditSet) -> dict:
    return {"z": carved.z_train, "y": np.asarray(y_train), "z_audit": carved.z_audit, "y_audit": audit.y,
            "a_audit": audit.a, "s_audit": audit.s, "c_audit": audit.c}


def accuracy_of_head(basis: ConceptBasis, theta: dict, h, y) -> float:
    return float(np.mean(np.asarray(linear_predict(theta, jnp.asarray(project(basis, h)))).argmax(1) == np.asarray(y)))


@takes_model
def guide_network(model: Classifier, x_train, y_train, audit: AuditSet,
                  library: ConceptLibrary, config: GuidingConfig, num_classes: int, class_names=None,
                  x_test=None, y_test=None, progress: bool = False):
    """Algorithm 1 on a network (a :class:`~repair_jax.classifier.Classifier` with features, or the
    pair ``state, variables``). Returns (report dict, guided variables, GuidingResult, Carved)."""
    config.validate()
    variables = model.variables
    carved = carve_network(model, x_train, y_train, audit, library, num_classes, config.carve_l2)
    result: GuidingResult = model_guiding(guiding_problem(carved, y_train, audit), carved.theta, config,
                                          "classification", num_classes, progress=progress)
    guided = fold_into_head(variables, carved.basis, result.bilevel.theta)
    report = guiding_report(result, "classification", y_train, class_names, library.names, carved.z_train)
    report["concepts"] = {"names": list(library.names),
                          "audit_fit": {n: float(f) for n, f in zip(library.names, carved.basis.concept_fit)}}
    metrics = {}
    outputs = {"train": (carved.logits_train, carved.h_train, y_train),
               "audit": (carved.logits_audit, carved.h_audit, audit.y)}
    if x_test is not None:
        outputs["test"] = (*predict_outputs(_features_model(model), x_test), y_test)
    for split, (logits, h, y) in outputs.items():
        metrics[split] = {"original_accuracy": float(np.mean(logits.argmax(1) == y)),
                          "carved_accuracy": accuracy_of_head(carved.basis, carved.theta, h, y),
                          "guided_accuracy": accuracy_of_head(carved.basis, result.bilevel.theta, h, y)}
    report["metrics"] = metrics
    report["config"] = {"tau_nl": config.tau_nl, "tau_spu": config.tau_spu, "budget": config.budget,
                        "carve_l2": config.carve_l2, "bilevel": dataclasses.asdict(config.bilevel)}
    return report, guided, result, carved


def write_guiding_result(out, report: dict, guided, result: GuidingResult, carved: Carved, run_info: dict, run_path,
                         force: bool = False) -> None:
    """Writes a guiding of the run at ``run_path`` (its run.json ``run_info``) into ``out`` atomically (an
    existing non-empty ``out`` is replaced only with ``force``): ``guide.json`` (``report``, as
    :func:`guide_network` returns it plus what the caller adds), ``carving.npz`` (the concept basis, the carved
    and guided heads, the label perturbation delta) and ``run/``, the ``guided`` variables as an ordinary run
    directory (its last Dense layer is the guided concept head; run.json records ``guided_from``)."""
    import io

    from repair_jax.io import atomic_dir, write_bytes_atomic, write_json
    from repair_jax.runs import write_run

    with atomic_dir(out, overwrite=force) as tmp:
        write_json(tmp / "guide.json", report)
        buf = io.BytesIO()
        b = carved.basis
        np.savez(buf, names=np.asarray(b.names), B=b.B, mu=b.mu, sigma=b.sigma, offset=b.offset, scale=b.scale,
                 theta_cbm_w=carved.theta["w"], theta_cbm_b=carved.theta["b"],
                 theta_guided_w=result.bilevel.theta["w"], theta_guided_b=result.bilevel.theta["b"],
                 delta=result.bilevel.delta)
        write_bytes_atomic(tmp / "carving.npz", buf.getvalue())
        (tmp / "run").mkdir()
        info = {**run_info, "guided_from": str(run_path),
                "test_accuracy": report["metrics"]["test"]["guided_accuracy"],
                "guiding": {"config": report["config"], "metrics": report["metrics"]}}
        write_run(tmp / "run", info, guided)
