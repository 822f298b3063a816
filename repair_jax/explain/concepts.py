"""Testing with Concept Activation Vectors (Adebayo 2022, Sec. 3.3 and App. A.1; Kim et al. 2018).

* CAV: the unit weight vector of an L2 logistic regression separating a layer's activations of
  concept examples from those of random examples (the concept probe of :mod:`repair_jax.guiding.carving`).
* Conceptual sensitivity ``S_{C,k,l}(x) = grad_{h_l} f_k(x) . v_C^l`` (Sec. 3.3).
* TCAV score: the fraction of the class's inputs with positive sensitivity.
* Significance (App. A.1: "we train the linear model 100 times and perform statistical significance
  testing"): scores of CAVs against R random sets vs scores of random-vs-random CAVs, two-sided
  t-test; the thesis does not name its correction for testing many concepts and layers, so this uses
  Bonferroni's, as Kim et al. 2018 Sec. 3.2 do: significant when ``p * num_tests < alpha``.

A layer is named by its path, as for GradCAM: a linen module path (``Conv_3``, ``Dense_0``) or an NNX
attribute path (``conv2``, ``blocks/0/conv``); activations are flattened. The functions take the model
as :func:`repair_jax.explain.attribute` does: ``(model, ...)`` with a Classifier, an NNX model, a run
or a TrainState (a linen module followed by its variables), or the older ``(apply_fn, params, ...)``.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from repair_jax.errors import UserError
from repair_jax.explain.cam import layer_activation_and_gradient, layer_shape
from repair_jax.explain.model_fn import ApplyFn, takes_explained_model


@functools.lru_cache(maxsize=64)
def _batched_layer_fn(apply_fn: ApplyFn, layer: str, part: int):
    """``f(params, x, target) -> (N, D)``: the flattened activation (part 0) or gradient (part 1) of
    ``layer``, vmapped over ``x`` and jitted once per model and layer (compiled once per input shape)."""
    one = lambda p, z, t: layer_activation_and_gradient(apply_fn, p, z, t, layer)[part].reshape(-1)
    return jax.jit(jax.vmap(one, in_axes=(None, 0, None)))


@takes_explained_model
def layer_activations(apply_fn: ApplyFn, params, x, layer: str) -> np.ndarray:
    """Flattened outputs of ``layer`` for a batch ``x`` (N, H, W, C) -> (N, D)."""
    x = jnp.asarray(x, jnp.float32)
    layer_shape(apply_fn, params, x.shape[1:], layer)
    return np.asarray(_batched_layer_fn(apply_fn, layer, 0)(params, x, 0))


def concept_activation_vector(concept_acts, random_acts, l2: float = 1e-2) -> tuple[np.ndarray, float]:
    """CAV v_C (D,), unit norm, pointing towards the concept, and the probe's training accuracy.
    ``concept_acts`` (Nc, D), ``random_acts`` (Nr, D)."""
    from repair_jax.guiding.carving import _logistic_direction

    hs = np.concatenate([concept_acts, random_acts]).astype(np.float32)
    t = np.concatenate([np.ones(len(concept_acts)), np.zeros(len(random_acts))]).astype(np.float32)
    w, acc = _logistic_direction(jnp.asarray(hs), jnp.asarray(t), l2)
    norm = np.linalg.norm(w)
    if norm == 0:
        raise UserError("the concept and random activations cannot be separated (zero CAV)")
    return w / norm, acc


@takes_explained_model
def layer_gradients(apply_fn: ApplyFn, params, x, target: int, layer: str) -> np.ndarray:
    """Flattened ``grad_{h_l} f_target(x)`` for a batch ``x`` (N, H, W, C) -> (N, D)."""
    x = jnp.asarray(x, jnp.float32)
    layer_shape(apply_fn, params, x.shape[1:], layer)
    return np.asarray(_batched_layer_fn(apply_fn, layer, 1)(params, x, target))


@takes_explained_model
def conceptual_sensitivity(apply_fn: ApplyFn, params, x, target: int, layer: str, cav) -> np.ndarray:
    """``S(x) = grad_{h_l} f_target(x)`` · ``v_C`` for a batch ``x`` (N, H, W, C) -> (N,) (Adebayo 2022, Sec. 3.3)."""
    return layer_gradients(apply_fn, params, x, target, layer) @ np.asarray(cav, np.float32)


def tcav_score(sensitivities) -> float:
    """TCAV_Q = |{x : S(x) > 0}| / |X| over the class's inputs (Kim et al. 2018 Eq. 2)."""
    return float(np.mean(np.asarray(sensitivities) > 0))


@dataclasses.dataclass(frozen=True)
class TCAVResult:
    scores: np.ndarray          # (R,) TCAV scores of the concept's CAVs (one per random set)
    random_scores: np.ndarray   # (R,) TCAV scores of random-vs-random CAVs
    p_value: float              # two-sided t-test, uncorrected
    significant: bool           # p * num_tests < alpha (Bonferroni)
    cav_accuracy: float         # mean training accuracy of the concept probes


def tcav_significance(scores, random_scores, alpha: float = 0.05, num_tests: int = 1) -> tuple[float, bool]:
    """Two-sided t-test of concept vs random TCAV scores; Bonferroni over ``num_tests`` tests."""
    scores, random_scores = np.asarray(scores, float), np.asarray(random_scores, float)
    if len(scores) < 2 or len(random_scores) < 2:
        raise UserError("the significance test needs at least 2 random sets")
    if np.ptp(np.concatenate([scores, random_scores])) == 0:
        return 1.0, False
    with warnings.catch_warnings():
        # harmless: scipy flags a group of identical scores (e.g. every concept CAV scores 1.0); the
        # pooled variance then comes from the other group and the test is still exact
        warnings.filterwarnings("ignore", message="Precision loss occurred", category=RuntimeWarning)
        p = float(stats.ttest_ind(scores, random_scores).pvalue)
    return p, bool(p * num_tests < alpha)


@takes_explained_model
def tcav(apply_fn: ApplyFn, params, class_x, target: int, layer: str, concept_x,
         random_sets: Sequence, *, l2: float = 1e-2, alpha: float = 0.05, num_tests: int = 1) -> TCAVResult:
    """The TCAV test of a concept for class ``target`` at ``layer``: one CAV per random set
    (concept vs ``random_sets[r]``), one random CAV per set (``random_sets[r]`` vs ``random_sets[r+1]``),
    their TCAV scores on ``class_x`` and the significance test. All inputs are (N, H, W, C) batches."""
    if len(random_sets) < 3:
        raise UserError(f"TCAV needs at least 3 random sets, got {len(random_sets)}")
    concept = layer_activations(apply_fn, params, concept_x, layer)
    randoms = [layer_activations(apply_fn, params, r, layer) for r in random_sets]
    grads = layer_gradients(apply_fn, params, class_x, target, layer)
    scores, random_scores, accs = [], [], []
    for r, acts in enumerate(randoms):
        cav, acc = concept_activation_vector(concept, acts, l2)
        accs.append(acc)
        scores.append(tcav_score(grads @ cav))
        rcav, _ = concept_activation_vector(acts, randoms[(r + 1) % len(randoms)], l2)
        random_scores.append(tcav_score(grads @ rcav))
    p, significant = tcav_significance(scores, random_scores, alpha, num_tests)
    return TCAVResult(np.asarray(scores), np.asarray(random_scores), p, significant, float(np.mean(accs)))
