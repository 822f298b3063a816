"""Model carving: a post-hoc concept bottleneck on a trained network (Adebayo 2022,
Sec. 5.2.1 "Model Carving", after Yuksekgonul et al. 2022).

1. for each concept i of the library, a linear classifier (binary concept, L2 logistic regression)
   or ridge regressor (scalar concept) on the network's embeddings of an annotated auxiliary set;
   its unit-norm weight vector beta_i is the concept activation vector, the rows of B (d, l);
2. an embedding h is projected onto the concept basis, z = B (h - mu) / sigma, and standardised with
   the auxiliary set's projection mean and scale;
3. a final linear model theta from concepts to labels, fit on the training set by the (L2) lower-level
   objective of :mod:`repair_jax.guiding.bilevel` with unperturbed labels.

Because the carved head is linear in h, it folds back into the network's last Dense layer
(:func:`fold_into_head`), so the guided model is again an ordinary run checkpoint.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from repair_jax.errors import UserError
from repair_jax.guiding.bilevel import (BilevelConfig, _solve_lower_jit, initial_delta, init_theta, linear_predict,
                                        minimize_lbfgs)
from repair_jax.guiding.formats import ConceptLibrary


@dataclasses.dataclass(frozen=True)
class ConceptBasis:
    """B (d, l) unit rows in standardised-embedding space; mu, sigma (l,); offset, scale (d,)."""

    names: tuple[str, ...]
    B: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    offset: np.ndarray
    scale: np.ndarray
    concept_fit: np.ndarray   # (d,) auxiliary-set accuracy (binary) or R^2 (scalar) of each concept


def _logistic_loss(w, hs, t, l2):
    logit = hs @ w[:-1] + w[-1]
    return jnp.mean(jnp.logaddexp(0.0, logit) - t * logit) + 0.5 * l2 * jnp.sum(w[:-1] ** 2)


@jax.jit
def _fit_logistic(hs, t, l2):
    return minimize_lbfgs(_logistic_loss, jnp.zeros(hs.shape[1] + 1, hs.dtype), hs, t, l2, maxiter=500, tol=1e-6)


def _logistic_direction(hs, t, l2):
    w = np.asarray(_fit_logistic(hs, t, l2))
    return w[:-1], float(np.mean(((np.asarray(hs) @ w[:-1] + w[-1]) > 0) == (np.asarray(t) > 0.5)))


def _ridge_direction(hs, t, l2):
    tc = t - t.mean()
    n, l = hs.shape
    w = np.linalg.solve(hs.T @ hs / n + l2 * np.eye(l), hs.T @ tc / n)
    pred = hs @ w
    r2 = 1 - np.sum((pred - tc) ** 2) / max(np.sum(tc ** 2), 1e-12)
    return w, float(r2)


def fit_concept_basis(h_aux: np.ndarray, a_aux: np.ndarray, library: ConceptLibrary,
                      l2: float = 1e-2) -> ConceptBasis:
    """Steps 1-2 of carving: concept activation vectors on embeddings h_aux (m, l), concepts a_aux (m, d)."""
    h_aux = np.asarray(h_aux, np.float64)
    a_aux = np.asarray(a_aux, np.float64)
    if h_aux.ndim != 2 or a_aux.shape != (h_aux.shape[0], len(library)):
        raise ValueError(f"h_aux (m, l) and a_aux (m, {len(library)}) expected, got {h_aux.shape}, {a_aux.shape}")
    mu = h_aux.mean(0)
    sigma = np.maximum(h_aux.std(0), 1e-6)
    hs = (h_aux - mu) / sigma
    rows, fits = [], []
    for i, (name, binary) in enumerate(zip(library.names, library.binary)):
        t = a_aux[:, i]
        if binary:
            if t.min() == t.max():
                raise UserError(f"concept {name!r} has only {'positive' if t[0] else 'negative'} examples "
                                "in the audit set; carving needs both")
            w, fit = _logistic_direction(jnp.asarray(hs, jnp.float32), jnp.asarray(t, jnp.float32), l2)
        else:
            if t.std() == 0:
                raise UserError(f"scalar concept {name!r} is constant on the audit set; carving needs variation")
            w, fit = _ridge_direction(hs, t, l2)
        norm = np.linalg.norm(w)
        if not np.isfinite(norm) or norm == 0:
            raise UserError(f"could not fit a direction for concept {name!r}")
        rows.append(w / norm)
        fits.append(fit)
    B = np.stack(rows)
    proj = hs @ B.T
    return ConceptBasis(library.names, B.astype(np.float32), mu.astype(np.float32), sigma.astype(np.float32),
                        proj.mean(0).astype(np.float32), np.maximum(proj.std(0), 1e-6).astype(np.float32),
                        np.asarray(fits, np.float32))


def project(basis: ConceptBasis, h) -> np.ndarray:
    """Embeddings (n, l) -> standardised concept coordinates z (n, d)."""
    hs = (np.asarray(h, np.float32) - basis.mu) / basis.sigma
    return ((hs @ basis.B.T - basis.offset) / basis.scale).astype(np.float32)


def fit_linear_head(z, y, task: str, num_classes: int, l2: float = 1e-2, maxiter: int = 1000) -> dict:
    """Step 4 of carving: theta = argmin of the lower-level objective with the original labels."""
    cfg = BilevelConfig(l2=l2, inner_maxiter=maxiter)
    z = jnp.asarray(z)
    y = jnp.asarray(y, jnp.int32 if task == "classification" else z.dtype)
    k = num_classes if task == "classification" else 1
    theta, _ = _solve_lower_jit(init_theta(z.shape[1], k, z.dtype), initial_delta(y, k, task, z.dtype), z, y,
                                config=cfg, task=task)
    return jax.device_get(theta)


def head_weights(basis: ConceptBasis, theta: dict) -> tuple[np.ndarray, np.ndarray]:
    """The carved head as one linear map of the embedding: logits = h @ W + c, W (l, K), c (K,)."""
    A = (basis.B / basis.scale[:, None]) / basis.sigma[None, :]         # z = h @ A.T + const
    const = -(basis.mu / basis.sigma) @ basis.B.T / basis.scale - basis.offset / basis.scale
    W = A.T @ np.asarray(theta["w"])
    c = const @ np.asarray(theta["w"]) + np.asarray(theta["b"])
    return W.astype(np.float32), c.astype(np.float32)


def _last_dense(params) -> str:
    names = [k for k in params if k.startswith("Dense_")]
    if not names:
        raise UserError("the model has no top-level Dense output layer to fold the carved head into")
    return max(names, key=lambda k: int(k.split("_")[1]))


def fold_into_head(variables: dict, basis: ConceptBasis, theta: dict) -> dict:
    """Writes the concept-bottleneck head into the network's last Dense layer (classification)."""
    params = dict(variables["params"])
    name = _last_dense(params)
    W, c = head_weights(basis, theta)
    old = params[name]
    if old["kernel"].shape != W.shape:
        raise UserError(f"carved head has shape {W.shape}, the output layer {name} has {old['kernel'].shape}")
    params[name] = {"kernel": jnp.asarray(W), "bias": jnp.asarray(c)}
    return {**variables, "params": params}


def carved_predict(basis: ConceptBasis, theta: dict, h) -> np.ndarray:
    """Outputs of the carved model on embeddings h."""
    return np.asarray(linear_predict(theta, jnp.asarray(project(basis, h))))
