"""Multi-task heads on a shared backbone (Sharma n.d., Que-2 "Model and Loss techniques
for bias mitigation" and "Accuracy of multiple heads"; the same loss shape as Que-1's L_MML).

Each head h has its own width (hidden Dense layer of ``head_widths[h]`` units, 0 = linear head) and
its own loss against the one-hot target: cross-entropy, KL divergence or L2; the training loss is
L_MTL = sum_h alpha_h L_h. The model's output (what ``predict`` and ``diagnose`` see) is the
logit-averaged ensemble of the heads; ``model.apply(..., method="heads")`` gives every head.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from repair_jax.errors import UserError
from repair_jax.objectives import l2_penalty, softmax_cross_entropy
from repair_jax.models import MultiHead, ensemble_logits, multi_head_model  # noqa: F401 (the MTL API)
from repair_jax.train import map_batched

HEAD_LOSSES = ("ce", "kl", "l2")


def kl_to_one_hot(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """KL(onehot(y) || softmax(z)) per example (N,), with 0 log 0 = 0 (Sharma n.d., Que-2, L_2 "KL Divergence").

    For an exact one-hot target this equals the cross-entropy -log p_y (same value, same gradient);
    the head differs from a CE head by its width and initialisation only.
    """
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    return optax.kl_divergence(jax.nn.log_softmax(logits), onehot)


def l2_to_one_hot(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """||softmax(z) - onehot(y)||^2 per example (N,) (Sharma n.d., Que-2, L_3 "L2Loss"; the multi-class Brier score)."""
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    return jnp.sum(jnp.square(jax.nn.softmax(logits) - onehot), axis=-1)


_LOSS_FNS = {"ce": softmax_cross_entropy, "kl": kl_to_one_hot, "l2": l2_to_one_hot}


def check_heads(losses: Sequence[str], alphas: Sequence[float], widths: Sequence[int] | None = None) -> None:
    """One loss name and one weight alpha >= 0 per head (and one width >= 0): one-line UserError otherwise."""
    for name in losses:
        if name not in _LOSS_FNS:
            raise UserError(f"unknown head loss {name!r}; choose one of {', '.join(HEAD_LOSSES)}")
    if len(alphas) != len(losses) or not losses:
        raise UserError(f"give one weight alpha per head: {len(losses)} losses, {len(alphas)} alphas")
    for a in alphas:
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not a >= 0:
            raise UserError(f"head weight alpha must be >= 0, got {a!r}")
    if widths is not None:
        if len(widths) != len(losses):
            raise UserError(f"give one width per head: {len(losses)} losses, {len(widths)} widths")
        for w in widths:
            if isinstance(w, bool) or not isinstance(w, int) or w < 0:
                raise UserError(f"head width must be an integer >= 0, got {w!r}")


def mtl_loss(head_logits: jax.Array, labels: jax.Array, losses: Sequence[str], alphas: Sequence[float]):
    """L_MTL = sum_h alpha_h mean_n L_h(z_nh, y_n) (Sharma n.d., Que-2; Que-1's L_MML with losses all ``ce``).

    head_logits (N, H, K), labels (N,) -> (loss scalar, per-head mean losses (H,)).
    """
    terms = jnp.stack([jnp.mean(_LOSS_FNS[name](head_logits[:, h], labels)) for h, name in enumerate(losses)])
    return jnp.sum(jnp.asarray(alphas, terms.dtype) * terms), terms


def heads_forward(state, params, inputs: dict, train: bool):
    """(head logits (N, H, K), new batch_stats) of a model with a ``heads`` method; ``inputs`` are
    the model's keyword inputs besides ``x`` (e.g. ``text``), ``x`` included."""
    variables = {"params": params, "batch_stats": state.batch_stats}
    kw = {k: v for k, v in inputs.items() if k != "x"}
    module = state.apply_fn.module  # the multi-head models are repair_jax's own linen modules
    if train:
        (z, _), mutated = module.apply(variables, inputs["x"], train=True, mutable=["batch_stats"],
                                       method="heads", **kw)
        return z, mutated.get("batch_stats", state.batch_stats)
    z, _ = module.apply(variables, inputs["x"], train=False, method="heads", **kw)
    return z, state.batch_stats


def mtl_objective(losses: Sequence[str] = HEAD_LOSSES, alphas: Sequence[float] = (1.0, 1.0, 1.0),
                  l2: float = 0.0, inputs: Sequence[str] = ("x",)):
    """``objective(params, state, batch) -> (loss, (batch_stats, metrics))`` of :func:`mtl_loss` for a
    model with a ``heads`` method (for :func:`repair_jax.train.fit`); ``inputs``: the batch keys the
    model takes. Metrics: ``loss`` and ``loss_head{h}``."""
    losses, alphas = tuple(losses), tuple(alphas)
    check_heads(losses, alphas)
    alphas = tuple(float(a) for a in alphas)

    def objective(params, state, batch: dict):
        z, batch_stats = heads_forward(state, params, {k: batch[k] for k in inputs}, train=True)
        loss, terms = mtl_loss(z, batch["y"], losses, alphas)
        loss = loss + l2 * l2_penalty(params)
        return loss, (batch_stats, {"loss": loss, **{f"loss_head{h}": t for h, t in enumerate(terms)}})

    return objective


@functools.partial(jax.jit, static_argnames=())
def _eval_heads(state, inputs: dict):
    return heads_forward(state, state.params, inputs, train=False)[0]


def predict_heads(state, inputs: dict, batch_size: int = 512) -> np.ndarray:
    """Head logits (N, H, K) of every example, ``inputs``: dict of arrays with a common first axis
    (``x`` and e.g. ``text``), in fixed-size jitted chunks (:func:`repair_jax.train.map_batched`)."""
    return map_batched(lambda chunk: _eval_heads(state, chunk), inputs, batch_size)


def head_accuracies(head_logits: np.ndarray, labels: np.ndarray, names: Sequence[str] | None = None) -> dict:
    """The report's "Accuracy of multiple heads" row: accuracy of each head and of the logit-averaged
    ensemble. head_logits (N, H, K), labels (N,); ``names`` default ``head1`` ... ``headH``."""
    head_logits = np.asarray(head_logits)
    names = list(names) if names is not None else [f"head{h + 1}" for h in range(head_logits.shape[1])]
    accs = {name: float(np.mean(head_logits[:, h].argmax(-1) == labels)) for h, name in enumerate(names)}
    accs["ensemble"] = float(np.mean(np.asarray(ensemble_logits(head_logits)).argmax(-1) == labels))
    return accs
