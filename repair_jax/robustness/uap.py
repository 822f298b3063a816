"""Universal adversarial perturbations (Pradhan et al. 2020, Sec. 3 "Robustness Enhancement
Techniques", 2. Adversarial Corruption) and the fooling rate, overall and per class.

One perturbation ``v`` (H, W, C) for all inputs, kept in the ball ``||v||_p <= eps`` (p = 2 or inf):
the algorithm of Moosavi-Dezfooli et al. (2017, Algorithm 1: DeepFool steps accumulated and
projected) and the stochastic-gradient variant of Shafahi et al. (2020). ``logits_fn`` maps
inputs (N, H, W, C) to logits (N, K) (e.g. :func:`eval_logits_fn` of a trained state). No clipping
to the image range is applied, as in Algorithm 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from repair_jax.errors import UserError
from repair_jax.objectives import softmax_cross_entropy

NORMS = ("l2", "linf")


def check_ball(eps: float, norm: str) -> None:
    """A norm bound must be positive and the norm one of :data:`NORMS` (else :class:`UserError`)."""
    if norm not in NORMS:
        raise UserError(f"unknown norm {norm!r}; choose l2 or linf")
    if not eps > 0:
        raise UserError(f"the norm bound must be > 0, got {eps:g}")


def project(v: jax.Array, eps: float, norm: str) -> jax.Array:
    """Moosavi-Dezfooli et al. 2017 Eq. (P_{p,xi}): the projection of ``v`` onto ``||v||_p <= eps``
    (L2: rescaling, Linf: clipping). The last three axes are one perturbation (leading axes batch)."""
    if norm == "linf":
        return jnp.clip(v, -eps, eps)
    n = jnp.sqrt(jnp.sum(jnp.square(v), axis=(-3, -2, -1), keepdims=True))
    return v * jnp.minimum(1.0, eps / jnp.maximum(n, 1e-12))


def eval_logits_fn(model):
    """``x (N, ...) -> logits (N, K)`` of ``model`` (a TrainState, a Classifier, an NNX model, a run:
    anything :func:`repair_jax.classifier.as_classifier` takes) in eval mode (running BatchNorm stats)."""
    from repair_jax.classifier import as_classifier

    clf = as_classifier(model)
    return lambda x: clf.apply(clf.params, clf.state, x, train=False)[0]


def random_perturbation(key: jax.Array, shape, eps: float, norm: str) -> jax.Array:
    """A random perturbation on the sphere of the ball: a Gaussian direction scaled to L2 norm
    ``eps``, or a random vertex ``eps * sign`` of the Linf ball (the noise baseline of a UAP)."""
    check_ball(eps, norm)
    if norm == "linf":
        return eps * jnp.where(jax.random.bernoulli(key, 0.5, shape), 1.0, -1.0)
    g = jax.random.normal(key, shape)
    return eps * g / jnp.linalg.norm(g)


def _deepfool_step(logits_fn, x0, r_tot, k0, overshoot, norm):
    """One DeepFool step (Moosavi-Dezfooli et al. 2016, Algorithm 2) at ``x0 + (1 + overshoot) r_tot``."""
    z = x0 + (1 + overshoot) * r_tot
    f = lambda u: logits_fn(u[None])[0]
    logits, jac = f(z), jax.jacrev(f)(z)  # (K,), (K, H, W, C)
    w = jac - jac[k0]
    fk = logits - logits[k0]
    q_norm = (jnp.sum(jnp.abs(w), axis=(1, 2, 3)) if norm == "linf"
              else jnp.sqrt(jnp.sum(jnp.square(w), axis=(1, 2, 3))))
    dist = jnp.abs(fk) / (q_norm + 1e-8)
    l = jnp.argmin(jnp.where(jnp.arange(fk.shape[0]) == k0, jnp.inf, dist))
    if norm == "linf":  # dual norm q = 1: r = |f_l| / ||w_l||_1 * sign(w_l)
        r = (jnp.abs(fk[l]) + 1e-4) / (q_norm[l] + 1e-8) * jnp.sign(w[l])
    else:  # q = 2: r = |f_l| / ||w_l||_2^2 * w_l
        r = (jnp.abs(fk[l]) + 1e-4) / (q_norm[l] ** 2 + 1e-8) * w[l]
    return r_tot + r, jnp.argmax(logits)


def deepfool(logits_fn, x: jax.Array, overshoot: float = 0.02, max_iter: int = 10, norm: str = "l2") -> jax.Array:
    """The minimal perturbation (H, W, C) that DeepFool finds to change the label of one input ``x``
    (H, W, C): linearised steps toward the nearest class boundary until the label changes or
    ``max_iter`` steps, scaled by ``1 + overshoot``."""
    k0 = jnp.argmax(logits_fn(x[None])[0])

    def cond(carry):
        i, r, label = carry
        return (i < max_iter) & (label == k0)

    def body(carry):
        i, r, _ = carry
        r, _ = _deepfool_step(logits_fn, x, r, k0, overshoot, norm)
        return i + 1, r, jnp.argmax(logits_fn((x + (1 + overshoot) * r)[None])[0])

    _, r, _ = jax.lax.while_loop(cond, body, (0, jnp.zeros_like(x), k0))
    return (1 + overshoot) * r


def _uap_pass(logits_fn, xs, clean_labels, v, eps, norm, overshoot, max_iter):
    """One pass of Algorithm 1 over ``xs``: where ``x_i + v`` keeps the clean label, add the DeepFool
    perturbation of ``x_i + v`` to ``v`` and project it back onto the ball."""
    def body(v, xy):
        x, k = xy
        still = jnp.argmax(logits_fn((x + v)[None])[0]) == k
        dv = jax.lax.cond(still, lambda: deepfool(logits_fn, x + v, overshoot, max_iter, norm),
                          lambda: jnp.zeros_like(v))
        return project(v + dv, eps, norm), None

    v, _ = jax.lax.scan(body, v, (xs, clean_labels))
    return v


def predicted_labels(logits_fn, x, batch_size: int = 512) -> np.ndarray:
    """argmax of ``logits_fn`` over ``x`` (N, ...) in chunks -> (N,) int."""
    f = jax.jit(lambda u: jnp.argmax(logits_fn(u), axis=-1))
    return np.concatenate([np.asarray(f(jnp.asarray(x[i:i + batch_size]))) for i in range(0, len(x), batch_size)])


def fooling_rate(logits_fn, x, v, labels=None, num_classes: int | None = None) -> dict:
    """Moosavi-Dezfooli et al. 2017 Sec. 3: the fraction of inputs whose predicted label changes under
    ``v``, ``P(k(x + v) != k(x))``; ``per_class`` groups by ``labels`` (N,) (the clean predictions when
    None), NaN for an absent class. Returns ``{"fooling_rate": float, "per_class": [K floats]}``."""
    x = np.asarray(x)
    clean = predicted_labels(logits_fn, x)
    fooled = predicted_labels(logits_fn, x + np.asarray(v)) != clean
    groups = clean if labels is None else np.asarray(labels)
    k = num_classes or int(groups.max()) + 1
    per_class = [float(fooled[groups == c].mean()) if np.any(groups == c) else float("nan") for c in range(k)]
    return {"fooling_rate": float(fooled.mean()), "per_class": per_class}


def uap_deepfool(logits_fn, x, eps: float, norm: str = "l2", target_fooling: float = 0.8,
                 max_passes: int = 5, overshoot: float = 0.02, max_iter: int = 10, seed: int = 0) -> np.ndarray:
    """Moosavi-Dezfooli et al. 2017, Algorithm 1: passes over ``x`` (N, H, W, C) in a random order
    (drawn from ``seed``) until the fooling rate on ``x`` reaches ``target_fooling`` (1 - delta) or
    ``max_passes``. Returns ``v`` (H, W, C) with ``||v||_p <= eps``."""
    check_ball(eps, norm)
    x = np.asarray(x, np.float32)
    clean = predicted_labels(logits_fn, x)
    one_pass = jax.jit(lambda xs, ks, v: _uap_pass(logits_fn, xs, ks, v, eps, norm, overshoot, max_iter))
    rng = np.random.default_rng(seed)
    v = jnp.zeros(x.shape[1:], jnp.float32)
    for _ in range(max_passes):
        order = rng.permutation(len(x))
        v = one_pass(jnp.asarray(x[order]), jnp.asarray(clean[order]), v)
        if np.mean(predicted_labels(logits_fn, x + np.asarray(v)) != clean) >= target_fooling:
            break
    return np.asarray(v)


def clipped_cross_entropy(logits, labels, beta: float | None):
    """Shafahi et al. 2020 Eq. (4): ``min(CE, beta)`` per example, so examples already fooled stop
    driving the perturbation (no clipping when ``beta`` is None). (N, K), (N,) -> (N,)."""
    ce = softmax_cross_entropy(logits, labels)
    return ce if beta is None else jnp.minimum(ce, beta)


def sign_ascent(v, grad, step_size: float, eps: float, norm: str):
    """One projected ascent step ``P(v + step_size * sign(grad))`` (the FGSM-style update of
    Shafahi et al. 2020 for the universal perturbation)."""
    return project(v + step_size * jnp.sign(grad), eps, norm)


def uap_sgd(logits_fn, x, labels, eps: float, norm: str = "l2", epochs: int = 5, batch_size: int = 32,
            step_size: float | None = None, beta: float | None = 9.0, seed: int = 0) -> np.ndarray:
    """Shafahi et al. 2020, Algorithm 1 (stochastic gradient UAP): for each minibatch, ascend the
    mean clipped cross-entropy of ``x + v`` by a signed step and project onto the ball.
    ``step_size`` defaults to a tenth of the radius: ``eps / 10`` (Linf) or ``eps / (10 sqrt(D))``
    (L2, so the signed step has L2 norm ``eps / 10``). Returns ``v`` (H, W, C)."""
    check_ball(eps, norm)
    x, labels = np.asarray(x, np.float32), np.asarray(labels)
    if step_size is None:
        step_size = eps / 10 if norm == "linf" else eps / 10 / np.sqrt(np.prod(x.shape[1:]))
    loss = lambda v, xb, yb: jnp.mean(clipped_cross_entropy(logits_fn(xb + v), yb, beta))
    step = jax.jit(lambda v, xb, yb: sign_ascent(v, jax.grad(loss)(v, xb, yb), step_size, eps, norm))
    rng = np.random.default_rng(seed)
    v = jnp.zeros(x.shape[1:], jnp.float32)
    bs = min(batch_size, len(x))
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(0, len(x) - bs + 1, bs):
            idx = order[i:i + bs]
            v = step(v, jnp.asarray(x[idx]), jnp.asarray(labels[idx]))
    return np.asarray(v)
