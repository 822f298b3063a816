"""Algorithm 1 "Model Guiding" (Adebayo 2022, Sec. 5.2.4): carving, bilevel update,
the flagged sets F_nl and F_spu cut to the inspection budget b, suggested labels, and a report.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from repair_jax.errors import UserError
from repair_jax.guiding.bilevel import BilevelConfig, BilevelResult, bilevel_update, concept_attribution, label_change


@dataclasses.dataclass(frozen=True)
class GuidingConfig:
    """tau_nl, tau_spu and the budget b of Algorithm 1, plus the bilevel hyper-parameters."""

    bilevel: BilevelConfig = BilevelConfig()
    tau_nl: float = dataclasses.field(default=0.1, metadata={"help": 'noisy-label tolerance tau_nl'})
    tau_spu: float = dataclasses.field(default=0.1, metadata={"help": 'spurious-attribution tolerance tau_spu'})
    budget: int = dataclasses.field(default=50, metadata={"help": 'inspection budget b'})
    carve_l2: float = 1e-2

    def validate(self) -> None:
        self.bilevel.validate()
        if self.tau_nl < 0 or self.tau_spu < 0:
            raise UserError("tau_nl and tau_spu must be >= 0")
        if self.budget <= 0:
            raise UserError(f"the inspection budget must be positive, got {self.budget}")


def sort_filter(scores: np.ndarray, tau: float, budget: int) -> np.ndarray:
    """{i | score_i > tau}, sorted by score (largest first) and cut to the top ``budget``."""
    scores = np.asarray(scores)
    idx = np.flatnonzero(scores > tau)
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    return idx[:budget]


def noisy_label_scores(delta, y, task: str) -> np.ndarray:
    """Label change 1 - delta_{i,y_i} (classification) or |delta_i| (regression), (n,)."""
    return np.asarray(label_change(jnp.asarray(delta), jnp.asarray(y), task))


def spurious_scores(theta_cbm: dict, theta_new: dict, z, y, task: str) -> np.ndarray:
    """|| theta_cbm (.) z_i - theta_new (.) z_i ||_1 for each training point (Algorithm 1, F_spu)."""
    z, y = jnp.asarray(z), jnp.asarray(y)
    diff = concept_attribution(theta_cbm, z, y, task) - concept_attribution(theta_new, z, y, task)
    return np.asarray(jnp.sum(jnp.abs(diff), axis=-1))


def suggested_labels(delta, y, task: str) -> np.ndarray:
    """The proposed fix: the class other than y_i with the most mass in delta_i, or y_i + delta_i."""
    delta = np.asarray(delta)
    if task == "classification":
        other = delta.copy()
        other[np.arange(len(y)), np.asarray(y)] = -np.inf
        return other.argmax(1).astype(np.int32)
    return (np.asarray(y) + delta).astype(np.float32)


@dataclasses.dataclass
class GuidingResult:
    bilevel: BilevelResult
    theta_cbm: dict
    nl_scores: np.ndarray
    spu_scores: np.ndarray
    F_nl: np.ndarray
    F_spu: np.ndarray
    suggested: np.ndarray


def model_guiding(problem: dict, theta_cbm: dict, config: GuidingConfig, task: str,
                  num_classes: int = 1, progress: bool = False) -> GuidingResult:
    """Algorithm 1 on an already carved model: ``problem`` as for :func:`bilevel_update` (concept
    coordinates of the training and audit sets), ``theta_cbm`` the carved linear head."""
    config.validate()
    res = bilevel_update(problem, config.bilevel, task, num_classes, theta_init=theta_cbm, progress=progress)
    y = np.asarray(problem["y"])
    nl = noisy_label_scores(res.delta, y, task)
    spu = spurious_scores(theta_cbm, res.theta, problem["z"], y, task)
    return GuidingResult(res, theta_cbm, nl, spu, sort_filter(nl, config.tau_nl, config.budget),
                         sort_filter(spu, config.tau_spu, config.budget), suggested_labels(res.delta, y, task))


def guiding_report(result: GuidingResult, task: str, y, class_names=None, concept_names=None,
                   z=None) -> dict:
    """The JSON an expert reads: flagged points with their scores and suggested labels."""
    y = np.asarray(y)

    def label(v):
        if task == "regression":
            return float(v)
        return class_names[int(v)] if class_names is not None else int(v)

    nl = [{"index": int(i), "label_change": float(result.nl_scores[i]), "label": label(y[i]),
           "suggested_label": label(result.suggested[i]),
           **({"new_label_distribution": np.round(result.bilevel.delta[i], 4).tolist()} if task == "classification" else {})}
          for i in result.F_nl]
    spu = []
    for i in result.F_spu:
        rec = {"index": int(i), "attribution_change": float(result.spu_scores[i]), "label": label(y[i])}
        if z is not None and concept_names is not None:
            a0 = np.asarray(concept_attribution(result.theta_cbm, jnp.asarray(z[i:i + 1]), jnp.asarray(y[i:i + 1]), task))[0]
            a1 = np.asarray(concept_attribution(result.bilevel.theta, jnp.asarray(z[i:i + 1]), jnp.asarray(y[i:i + 1]), task))[0]
            top = np.argsort(-np.abs(a0 - a1))[:3]
            rec["most_changed_concepts"] = [{"concept": concept_names[k], "before": float(a0[k]),
                                             "after": float(a1[k])} for k in top]
        spu.append(rec)
    return {"F_nl": nl, "F_spu": spu,
            "bilevel": {"outer_steps": len(result.bilevel.history),
                        "final_upper_objective": result.bilevel.history[-1]["upper_objective"] if result.bilevel.history else None,
                        "lower_level_converged": result.bilevel.lower_converged,
                        "max_lower_grad_norm": result.bilevel.max_lower_error}}
