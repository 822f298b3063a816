"""K-FAC / EK-FAC curvature (repair_jax.influence.kfac) against references: the exact Hessian of softmax
regression on one example (its Gauss-Newton matrix, which K-FAC with the exact Fisher reproduces), the
explicit empirical Fisher in the Kronecker eigenbasis, an im2col by hand, chunking invariance, the
block-diagonal structure, and the LDS / CLI paths through the same fit."""

import os

os.environ.setdefault("TQDM_DISABLE", "1")

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from repair_jax.errors import UserError
from repair_jax.influence import ClassifierLoss, fit_influence, hessian_matrix, per_example_grads
from repair_jax.influence.kfac import fit_ekfac, kronecker_curvature
from repair_jax.models import create_model, init_variables


def _first(batch, m):
    return jax.tree_util.tree_map(lambda a: a[:m], batch)


def _model(digits, hidden, n, dtype=jnp.float64):
    m = create_model("mlp", 10, hidden=hidden)
    v = init_variables(m, jax.random.PRNGKey(0), (4, 4, 1))
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), v["params"])
    # real digits at 4 x 4 (every other pixel): 170 parameters for softmax regression
    batch = {"x": jnp.asarray(digits.train.x[:n, ::2, ::2], dtype), "y": jnp.asarray(digits.train.y[:n])}
    return ClassifierLoss(m.apply), params, batch


def test_kfac_of_softmax_regression_on_one_example_is_the_exact_hessian(digits):
    with jax.enable_x64(True):
        loss, params, batch = _model(digits, (), 1)
        fit = fit_influence(loss, params, batch, method="kfac", fisher="exact", l2=0.01, damping=0.1,
                            store_gradients=False)
        h = hessian_matrix(loss, params, batch, l2=0.01, damping=0.1)
        b = jax.random.normal(jax.random.PRNGKey(1), (h.shape[0], 3), jnp.float64)
        np.testing.assert_allclose(fit.solve(b).x, np.linalg.solve(np.asarray(h), np.asarray(b)), rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(jax.vmap(fit.matvec, 1, 1)(b), h @ b, rtol=1e-8, atol=1e-10)


def test_ekfac_eigenvalues_are_the_empirical_fisher_diagonal_in_the_kronecker_eigenbasis_whatever_the_chunks(digits):
    with jax.enable_x64(True):
        loss, params, batch = _model(digits, (), 40)
        out = kronecker_curvature(loss, params, batch, method="ekfac", fisher="empirical", chunk_size=16)
        whole = kronecker_curvature(loss, params, batch, method="ekfac", fisher="empirical", chunk_size=None)
        for i in (0, 1):  # chunks of 16 (the last padded) = one chunk of 40
            np.testing.assert_allclose(out["factors"]["Dense_0"][i], whole["factors"]["Dense_0"][i], rtol=1e-10,
                                       atol=1e-14)
        q_a, q_s, lam = out["blocks"]["Dense_0"]
        g = per_example_grads(loss, params, batch)["Dense_0"]
        # (N, (in+1) * out): the layer matrix of each example, flattened row-major
        g = np.concatenate([np.asarray(g["kernel"]), np.asarray(g["bias"])[:, None]], 1).reshape(40, -1)
        fisher = g.T @ g / 40
        q = np.kron(np.asarray(q_a), np.asarray(q_s))  # row-major vec of the (in+1, out) layer matrix
        np.testing.assert_allclose(np.asarray(lam).ravel(), np.diag(q.T @ fisher @ q), rtol=1e-8, atol=1e-14)


class _ConvNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.Conv(3, (2, 2), strides=(1, 1), padding="SAME")(x)
        return nn.Dense(4)(h.reshape(h.shape[0], -1)), h


def _im2col(x, k):
    """Patches of a 'SAME'-padded (2, 2) stride-1 convolution, features ordered (channel, dy, dx), by loops."""
    n, hh, ww, c = x.shape
    xp = np.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))  # SAME for a 2x2 kernel pads after
    rows = [[[xp[i, y + dy, z + dx, ch] for ch in range(c) for dy in range(k) for dx in range(k)]
             for y in range(hh) for z in range(ww)] for i in range(n)]
    return np.asarray(rows)


def test_conv_factors_equal_an_explicit_im2col(digits):
    with jax.enable_x64(True):
        x = jnp.asarray(digits.train.x[:3, 2:5, 2:6], jnp.float64)  # (3, 3, 4, 1) crops of real digits
        x = jnp.concatenate([x, x[..., ::-1] ** 2], -1)  # two channels
        model = _ConvNet()
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64),
                                        model.init(jax.random.PRNGKey(0), x)["params"])
        loss = ClassifierLoss(lambda p, s, x, train: (*model.apply({"params": p}, x), s))
        batch = {"x": x, "y": jnp.asarray([0, 2, 3])}
        a, s = kronecker_curvature(loss, params, batch, method="kfac", fisher="empirical")["factors"]["Conv_0"]
        patches = _im2col(np.asarray(x), 2)  # (3, 12, 8)
        patches = np.concatenate([patches, np.ones(patches.shape[:2] + (1,))], 2)
        np.testing.assert_allclose(a, np.einsum("nti,ntj->ij", patches, patches) / 3, rtol=1e-10)
        # S: the output gradients by autodiff of the loss w.r.t. the conv output
        def head(h, y):
            return jnp.sum(ClassifierLoss(lambda p, s, x, train: (nn.Dense(4).apply({"params": params["Dense_0"]},
                                                                                    x.reshape(3, -1)), x, s))
                           (None, {"x": h, "y": y}))
        h = nn.Conv(3, (2, 2), padding="SAME").apply({"params": params["Conv_0"]}, x)
        g = np.asarray(jax.grad(head)(h, batch["y"])).reshape(3, 12, 3)
        np.testing.assert_allclose(s, np.einsum("nti,ntj->ij", g, g) / (3 * 12), rtol=1e-10)


def test_scores_and_self_influence_follow_the_fitted_interface(digits):
    loss, params, batch = _model(digits, (6,), 30, jnp.float32)
    fit = fit_ekfac(loss, params, batch, relative_damping=0.1, fisher="true", seed=3)
    test = _first(batch, 4)
    scores, r = fit.scores(test)
    g = per_example_grads(loss, params, batch, flat=True)
    np.testing.assert_allclose(scores, -(fit.solve(g[:4].T).x.T @ g.T), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fit.self_influence(test), -np.diag(scores), rtol=1e-4, atol=1e-6)
    assert scores.shape == (4, 30) and r.converged
    # the LDS harness and the CLI's group / confusion path go through the same fit
    from repair_jax.influence.evaluate import attribution_scores
    from repair_jax.influence.workflow import _solve_scores
    ek = fit_influence(loss, params, batch, method="ekfac", damping=0.05)
    np.testing.assert_allclose(attribution_scores("ekfac", loss, params, batch, test, damping=0.05),
                               ek.scores(test)[0], rtol=1e-5, atol=1e-7)
    row, record = _solve_scores(loss, params, batch, jax.jit(lambda p: loss(p, _first(test, 1))[0]), 0.0, "ekfac",
                                {"damping": 0.05, "scale": None}, None)
    np.testing.assert_allclose(row, ek.scores(test)[0][0], rtol=1e-5, atol=1e-7)
    assert record["method"] == "ekfac" and record["converged"]
    again = fit_ekfac(loss, params, batch, relative_damping=0.1, fisher="true", seed=3, store_gradients=False)
    assert np.array_equal(again.curvature["Dense_0"][2], fit.curvature["Dense_0"][2])  # same seed, same numbers
    # block-diagonal: a right-hand side on the second layer's kernel stays on the second layer
    v = jax.tree_util.tree_map(jnp.zeros_like, params)
    shape = v["Dense_1"]["kernel"].shape
    v["Dense_1"]["kernel"] = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
    r = again.solve(ravel_pytree(v)[0])
    x = ravel_pytree(params)[1](r.x[:, 0])
    assert float(jnp.abs(x["Dense_0"]["kernel"]).max()) == 0 and float(jnp.abs(x["Dense_0"]["bias"]).max()) == 0
    assert float(jnp.abs(x["Dense_1"]["bias"]).max()) > 0  # the bias shares the layer's Kronecker block
    assert r.converged and r.residuals.max() < 1e-5


def test_bad_input_is_a_user_error(digits):
    loss, params, batch = _model(digits, (), 5, jnp.float32)
    with pytest.raises(UserError, match="singular"):
        fit_ekfac(loss, params, batch)  # no damping, no l2
    with pytest.raises(UserError, match="unknown Fisher"):
        fit_ekfac(loss, params, batch, damping=0.1, fisher="sampled")
    with pytest.raises(UserError, match="logits"):
        fit_ekfac(lambda p, b: loss(p, b), params, batch, damping=0.1)
    with pytest.raises(UserError, match="fisher is an option"):
        fit_influence(loss, params, batch, method="cg", fisher="true")
    with pytest.raises(UserError, match="lie in none: extra"):
        fit_ekfac(lambda p, b: loss({"Dense_0": p["Dense_0"]}, b) + p["extra"].sum(),
                  {**params, "extra": jnp.ones(2)}, batch, damping=0.1, fisher="empirical")
    fit = fit_ekfac(loss, params, batch, damping=0.1)
    with pytest.raises(UserError, match="right-hand sides"):
        fit.solve(jnp.ones((3, 2)))
