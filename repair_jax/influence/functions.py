"""Influence functions on losses and on group disparity metrics, and TracIn.

Source: Adebayo 2022, Ch. 3.4 (Eq. 3.1-3.3) and Ch. 6.4 (Eq. 6.1-6.5).

Every estimate has the form ``-grad_theta q(theta)^T H^{-1} D l(z_i)`` for a test quantity q (a test
loss, or a group disparity metric GD(S_t, theta)) and a derivative D of the training loss. We
solve once for ``s_test = H^{-1} grad q`` (:func:`s_test`) and then, for all N training points at
once:

* I_up (Eq. 3.1, 6.2, 6.4) = ``-s_test . grad l(z_i)``: N forward-mode directional derivatives
  (:func:`repair_jax.influence.per_example_grad_dot`), no per-example gradient is materialized;
* I_pert,x (Eq. 3.3) = ``-grad_x (s_test . grad l(z_i))``: reverse mode over the inputs of that
  forward-mode pass;
* I_pert,y (Eq. 6.3, 6.5) = ``-grad_y (s_test . grad l(z_i))`` with y the (soft) target
  distribution of z_i, shape (N, K).

Removing z_i from n training points is upweighting by ``eps = -1/n``, so the predicted change of q
on leaving z_i out is ``-I_up(z_i) / n`` (the leave-one-out check of Koh & Liang).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.flatten_util
import jax.numpy as jnp

from repair_jax.errors import UserError
from repair_jax.influence.gradients import LossFn, _chunks, _take, batch_size_of, per_example_grad_dot
from repair_jax.influence.hvp import IHVPResult, inverse_hvp


def quantity_gradient(quantity_fn: Callable[[Any], jax.Array], params):
    """grad_theta q(theta) for a scalar test quantity ``quantity_fn(params)``."""
    q, g = jax.value_and_grad(quantity_fn)(params)
    if not bool(jnp.isfinite(q)):
        raise UserError(f"the test quantity is not finite ({float(q)}); check the test set / group")
    return g


def test_loss_quantity(loss_fn: LossFn, test_batch: dict) -> Callable[[Any], jax.Array]:
    """q(theta) = mean test loss over ``test_batch`` (one test point: l(z_t, theta))."""
    if batch_size_of(test_batch) == 0:
        raise UserError("the test batch is empty")
    return lambda p: jnp.mean(loss_fn(p, test_batch))


def s_test(loss_fn: LossFn, params, train_batch: dict, quantity_fn, **solver) -> IHVPResult:
    """``H^{-1} grad q`` (an :class:`IHVPResult`); ``solver`` goes to :func:`inverse_hvp`
    (method, l2, damping, tol, max_iter, scale, lissa_batch_size, seed, chunk_size, hessian)."""
    return inverse_hvp(loss_fn, params, train_batch, quantity_gradient(quantity_fn, params), **solver)


def influence_up(loss_fn: LossFn, params, train_batch: dict, s, *, chunk_size: int | None = None) -> jax.Array:
    """I_up(z_i) = -s . grad l(z_i) for all N training points, (N,) (Eq. 3.1/6.2/6.4 given s)."""
    return -per_example_grad_dot(loss_fn, params, train_batch, s, chunk_size=chunk_size)


def influence_up_params(loss_fn: LossFn, params, train_batch: dict, indices: Sequence[int], **solver) -> list:
    """I_up,params(z_i) = -H^{-1} grad l(z_i) (Eq. 6.1) for the training points ``indices``:
    a list of pytrees like params (one inverse-HVP solve each)."""
    n = batch_size_of(train_batch)
    out = []
    for i in indices:
        if not 0 <= int(i) < n:
            raise UserError(f"training index {i} is out of range [0, {n})")
        one = jax.tree_util.tree_map(lambda a: a[int(i):int(i) + 1], train_batch)
        g = jax.grad(lambda p: loss_fn(p, one)[0])(params)
        r = inverse_hvp(loss_fn, params, train_batch, g, **solver)
        out.append(jax.tree_util.tree_map(jnp.negative, r.x))
    return out


def influence_up_loss(loss_fn: LossFn, params, train_batch: dict, test_batch: dict, *,
                      chunk_size: int | None = None, **solver) -> tuple[jax.Array, IHVPResult]:
    """I_up,loss(z_i, z_t) = -grad l(z_t)^T H^{-1} grad l(z_i) for all training points (Eq. 3.1/6.2).

    With several test points, z_t's loss is their mean. Returns ((N,) scores, the solve's result).
    Positive: upweighting z_i raises the test loss (a harmful point); negative: a helpful one.
    """
    r = s_test(loss_fn, params, train_batch, test_loss_quantity(loss_fn, test_batch), **solver)
    return influence_up(loss_fn, params, train_batch, r.x, chunk_size=chunk_size), r


def influence_up_disparity(loss_fn: LossFn, params, train_batch: dict, disparity_fn, *,
                           chunk_size: int | None = None, **solver) -> tuple[jax.Array, IHVPResult]:
    """I_up,disparity(z_i, S_t) = -grad GD(S_t)^T H^{-1} grad l(z_i) (Eq. 6.4).

    ``disparity_fn(params) -> scalar``: a group disparity metric of the test set S_t as a
    differentiable function of the parameters (see :func:`group_disparity_quantity`).
    """
    r = s_test(loss_fn, params, train_batch, disparity_fn, **solver)
    return influence_up(loss_fn, params, train_batch, r.x, chunk_size=chunk_size), r


def _directional(loss_fn, params, s):
    """(x, y) -> (N,) the per-example derivatives grad_theta l(z_i) . s (forward mode)."""
    def f(x, y):
        return jax.jvp(lambda p: loss_fn(p, {"x": x, "y": y}), (params,), (s,))[1]
    return f


def _per_chunk(fn, batch: dict, chunk_size):
    n = batch_size_of(batch)
    size, spans = _chunks(n, chunk_size)
    outs = []
    for start, count in spans:
        chunk = _take(batch, start, size, n) if size != n else batch
        outs.append(fn(chunk)[:count])
    return outs[0] if len(outs) == 1 else jnp.concatenate(outs)


def influence_pert_x(loss_fn: LossFn, params, train_batch: dict, s, *, chunk_size: int | None = None) -> jax.Array:
    """I_pert(z_j) = -grad_x (s . grad_theta l(z_j)), shape of x (Eq. 3.2/3.3 given s = H^{-1} grad q)."""
    d = _directional(loss_fn, params, s)
    fn = jax.jit(lambda b: -jax.grad(lambda x: jnp.sum(d(x, b["y"])))(b["x"]))
    return _per_chunk(fn, train_batch, chunk_size)


def influence_pert_y(loss_fn: LossFn, params, train_batch: dict, s, num_classes: int, *,
                     chunk_size: int | None = None) -> jax.Array:
    """I_pert,y(z_j) = -grad_y (s . grad_theta l(z_j)), (N, K), y the one-hot target of z_j
    (Eq. 6.3/6.5 given s). The loss must accept soft targets (N, K), as
    :class:`repair_jax.influence.ClassifierLoss` does."""
    y = train_batch["y"]
    if y.ndim == 1:
        y = jax.nn.one_hot(y, num_classes, dtype=jnp.float32)
    d = _directional(loss_fn, params, s)
    fn = jax.jit(lambda b: -jax.grad(lambda yy: jnp.sum(d(b["x"], yy)))(b["y"]))
    return _per_chunk(fn, {"x": train_batch["x"], "y": y}, chunk_size)


def influence_pert_loss(loss_fn: LossFn, params, train_batch: dict, test_batch: dict, *,
                        chunk_size: int | None = None, **solver) -> tuple[jax.Array, IHVPResult]:
    """I_pert,loss(z_j, z_t) = -grad l(z_t)^T H^{-1} grad_x grad_theta l(z_j) (Eq. 3.3): shape ``(N, *x)``."""
    r = s_test(loss_fn, params, train_batch, test_loss_quantity(loss_fn, test_batch), **solver)
    return influence_pert_x(loss_fn, params, train_batch, r.x, chunk_size=chunk_size), r


def influence_pert_loss_y(loss_fn: LossFn, params, train_batch: dict, test_batch: dict, num_classes: int,
                          *, chunk_size: int | None = None, **solver) -> tuple[jax.Array, IHVPResult]:
    """I_pert,loss,y(z_j, z_t) = -grad l(z_t)^T H^{-1} grad_y grad_theta l(z_j) (Eq. 6.3): (N, K)."""
    r = s_test(loss_fn, params, train_batch, test_loss_quantity(loss_fn, test_batch), **solver)
    return influence_pert_y(loss_fn, params, train_batch, r.x, num_classes, chunk_size=chunk_size), r


def influence_pert_disparity_y(loss_fn: LossFn, params, train_batch: dict, disparity_fn, num_classes: int,
                               *, chunk_size: int | None = None, **solver) -> tuple[jax.Array, IHVPResult]:
    """I_pert,disparity,y(z_j, S_t) = -grad GD(S_t)^T H^{-1} grad_y grad_theta l(z_j) (Eq. 6.5): (N, K)."""
    r = s_test(loss_fn, params, train_batch, disparity_fn, **solver)
    return influence_pert_y(loss_fn, params, train_batch, r.x, num_classes, chunk_size=chunk_size), r


def label_flip_scores(pert_y: jax.Array, labels: jax.Array) -> jax.Array:
    """Largest first-order decrease of the target quantity from moving z_j's label mass to another
    class: ``max_k (I[j, y_j] - I[j, k])`` for an (N, K) label influence ``I`` (Eq. 6.3/6.5); the
    IF-Calib-Label ranking score (Adebayo 2022, Sec. 6.5). High: relabelling z_j lowers the quantity most."""
    labels = jnp.asarray(labels)
    own = jnp.take_along_axis(pert_y, labels[:, None], axis=1)
    gain = own - pert_y
    gain = jnp.where(jax.nn.one_hot(labels, pert_y.shape[1], dtype=bool), -jnp.inf, gain)
    return jnp.max(gain, axis=1)


# ----------------------------------------------------------------------------- TracIn

def tracin(loss_fn: LossFn, checkpoints: Sequence[Any], learning_rates: Sequence[float], train_batch: dict,
           quantity_fn: Callable[[Any, Any], jax.Array] | None = None, test_batch: dict | None = None, *,
           chunk_size: int | None = None) -> jax.Array:
    """TracInCP (Pruthi et al. 2020, cited in Adebayo 2022, Ch. 3.4): for each training point
    ``sum_c lr_c grad l(z_i, theta_c) . grad q(theta_c)``, (N,), over saved checkpoints theta_c.

    q is the mean loss of ``test_batch`` or ``quantity_fn(params)`` (e.g. a group disparity metric).
    ``loss_fn`` and ``quantity_fn`` may also be sequences with one entry per checkpoint, e.g. losses
    holding each checkpoint's own BatchNorm statistics.
    Hessian-free; positive = a proponent (its gradient steps lowered q), i.e. the sign is opposite
    to I_up's convention (helpful points have positive TracIn and negative I_up).
    """
    n = len(checkpoints)
    if n == 0 or n != len(learning_rates):
        raise UserError("TracIn needs one learning rate per checkpoint and at least one checkpoint")

    def each(x, what):
        if isinstance(x, (list, tuple)):
            if len(x) != n:
                raise UserError(f"TracIn: {len(x)} {what} for {n} checkpoints")
            return list(x)
        return [x] * n

    losses = each(loss_fn, "loss functions")
    if quantity_fn is None:
        if test_batch is None:
            raise UserError("TracIn needs a test batch or a test quantity")
        quantities = [test_loss_quantity(lf, test_batch) for lf in losses]
    else:
        quantities = each(quantity_fn, "test quantities")
    total = 0.0
    for params, lr, lf, q in zip(checkpoints, learning_rates, losses, quantities):
        g = quantity_gradient(q, params)
        total = total + lr * per_example_grad_dot(lf, params, train_batch, g, chunk_size=chunk_size)
    return total


def tracin_scores(loss_fn: LossFn, checkpoints: Sequence[Any], learning_rates: Sequence[float], train_batch: dict,
                  test_batch: dict, *, chunk_size: int | None = None) -> jax.Array:
    """TracInCP of every (test point, training point) pair, (M, N); row t is :func:`tracin` with the loss of
    test point t alone as the quantity, the sum over checkpoints c of ``lr_c <grad l(z_i, theta_c), grad
    l(z_t, theta_c)>``. Per
    checkpoint: the (M, P) test gradients once, then the (N, P) training gradients when they fit under
    :data:`repair_jax.influence.fitted.MAX_GRADIENT_BYTES` (one product), else one forward-mode pass per
    test point. ``loss_fn`` may be a sequence with one entry per checkpoint (as :func:`tracin`)."""
    from repair_jax.influence.fitted import training_gradients
    from repair_jax.influence.gradients import per_example_grads

    n = len(checkpoints)
    if n == 0 or n != len(learning_rates):
        raise UserError("TracIn needs one learning rate per checkpoint and at least one checkpoint")
    losses = list(loss_fn) if isinstance(loss_fn, (list, tuple)) else [loss_fn] * n
    if len(losses) != n:
        raise UserError(f"TracIn: {len(losses)} loss functions for {n} checkpoints")
    total = 0.0
    for params, lr, lf in zip(checkpoints, learning_rates, losses):
        gt = per_example_grads(lf, params, test_batch, flat=True, chunk_size=chunk_size)
        g = training_gradients(lf, params, train_batch, chunk_size=chunk_size)
        unravel = jax.flatten_util.ravel_pytree(params)[1]
        block = gt @ g.T if g is not None else jnp.stack(
            [per_example_grad_dot(lf, params, train_batch, unravel(row), chunk_size=chunk_size) for row in gt])
        total = total + lr * block
    return total


def group_disparity_quantity(loss_fn, test_batch: dict, metric: str, mask=None, positive: int = 1,
                             num_bins: int = 10) -> Callable[[Any], jax.Array]:
    """q(theta) = GD(S_t, theta): the group disparity metric ``metric`` (ece | brier | fpr | fnr | er,
    :func:`repair_jax.metrics.group_disparity`) of the test points in the group ``mask`` (N_test,),
    as a function of the parameters (``loss_fn`` must expose ``logits(params, x)``, e.g.
    :class:`repair_jax.influence.ClassifierLoss`)."""
    from repair_jax.metrics import GROUP_DISPARITY_METRICS, group_disparity

    if metric not in GROUP_DISPARITY_METRICS:
        raise UserError(f"unknown disparity metric {metric!r}; choose one of {', '.join(GROUP_DISPARITY_METRICS)}")
    if getattr(loss_fn, "multilabel", False):
        raise UserError("group disparity metrics are defined for single-label classifiers only")
    y = jnp.asarray(test_batch["y"])
    if mask is not None:
        mask = jnp.asarray(mask, jnp.float32)
        if mask.shape != y.shape[:1]:
            raise UserError(f"group mask has shape {mask.shape}, expected ({y.shape[0]},)")
        if float(mask.sum()) == 0:
            raise UserError("the group is empty on this test set")
    x = test_batch["x"]
    return lambda p: group_disparity(metric, jax.nn.softmax(loss_fn.logits(p, x)), y, mask, positive, num_bins)


def confusion_quantity(loss_fn, test_batch: dict, pair: Sequence[int] | None = None,
                       triplet: Sequence[int] | None = None) -> Callable[[Any], jax.Array]:
    """q(theta) = soft type1conf(a, b) of ``pair`` or soft cd(a, b, c) of ``triplet`` on ``test_batch``
    (:func:`repair_jax.metrics.soft_type1conf`, :func:`repair_jax.metrics.soft_cd`; Zhong et al. 2022,
    Sec. 2.2) as a function of the parameters: its influence is Eq. 6.4 of Adebayo 2022 with this q in place of GD
    (:func:`s_test`, :func:`influence_up`). ``loss_fn`` must expose ``logits(params, x)``."""
    from repair_jax.metrics import soft_cd, soft_type1conf

    if (pair is None) == (triplet is None):
        raise UserError("pass exactly one of pair=(a, b) or triplet=(a, b, c)")
    if getattr(loss_fn, "multilabel", False):
        raise UserError("confusion quantities are defined for single-label classifiers only")
    classes = tuple(int(c) for c in (pair if pair is not None else triplet))
    size = 2 if pair is not None else 3
    y, x = jnp.asarray(test_batch["y"]), test_batch["x"]
    if len(classes) != size or len(set(classes)) != size:
        raise UserError(f"a {'pair' if size == 2 else 'triplet'} needs {size} distinct classes, got {classes}")
    for c in classes:
        if not bool(jnp.any(y == c)):
            raise UserError(f"class {c} has no point in the test batch")
    if pair is not None:
        return lambda p: soft_type1conf(jax.nn.softmax(loss_fn.logits(p, x)), y, *classes)
    return lambda p: soft_cd(jax.nn.softmax(loss_fn.logits(p, x)), y, *classes)
