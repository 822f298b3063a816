"""TRAK-style random-projection influence (repair_jax.influence.projection) against the exact Gauss-Newton
kernel scores built by hand from per_example_grads, the Johnson-Lindenstrauss property of the projection,
invariance to chunking, determinism, ensembling and the harness's "trak" method."""

import os

os.environ.setdefault("TQDM_DISABLE", "1")

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from repair_jax.errors import UserError
from repair_jax.influence import ClassifierLoss, fit_projected, per_example_grads, project_gradients
from repair_jax.influence.evaluate import attribution_scores, self_influence
from repair_jax.models import create_model, init_variables


MODEL = create_model("mlp", 3, hidden=())
LOSS = ClassifierLoss(MODEL.apply, multilabel=True)  # one object: the jitted gradient chunks compile once
N = 80


def _setup(digits, seed=0):
    """A sigmoid (multi-label) linear model on the 4 x 4 centre pixels of N real digits, 3 outputs (P = 51),
    float64: no softmax shift-invariance, so the (N, P) per-example gradients have full column rank."""
    v = init_variables(MODEL, jax.random.PRNGKey(seed), (4, 4, 1))
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), v["params"])
    x = jnp.asarray(digits.train.x[:N + 10, 2:6, 2:6, :], jnp.float64)
    y = jax.nn.one_hot(jnp.asarray(digits.train.y[:N + 10]) % 3, 3, dtype=jnp.float64)
    return LOSS, params, {"x": x[:N], "y": y[:N]}, {"x": x[N:], "y": y[N:]}


def test_square_gaussian_projection_gives_the_exact_gauss_newton_scores(digits):
    with jax.enable_x64(True):
        loss, params, train, test = _setup(digits)
        g = np.asarray(per_example_grads(loss, params, train, flat=True))
        gt = np.asarray(per_example_grads(loss, params, test, flat=True))
        p = g.shape[1]
        assert g.shape[0] > p and np.linalg.matrix_rank(g) == p
        expected = -gt @ np.linalg.solve(g.T @ g, g.T)  # Phi = G R, R invertible: R cancels
        fit = fit_projected(loss, [params], train, p, kind="gaussian", seed=3, chunk_size=None)
        scores = np.asarray(fit.scores(test))
        si = np.asarray(fit.self_influence([0, 5]))
    np.testing.assert_allclose(scores, expected, rtol=1e-6, atol=1e-8 * np.abs(expected).max())
    np.testing.assert_allclose(si, np.einsum("ip,ip->i", g[[0, 5]], np.linalg.solve(g.T @ g, g[[0, 5]].T).T),
                               rtol=1e-6)


def test_projected_inner_products_approach_the_exact_ones(digits):
    # JL: |phi_i . phi_j - g_i . g_j| <= eps ||g_i|| ||g_j|| with eps ~ 1/sqrt(k) = 1/64 at k = 4096; a
    # scale of R off by more than a few percent, or correlated columns, fails the bound 4/64
    with jax.enable_x64(True):
        loss, params, train, _ = _setup(digits)
        g = np.asarray(per_example_grads(loss, params, train, flat=True))
        norms = np.linalg.norm(g, axis=1)
        err = {}
        for kind in ("gaussian", "rademacher"):
            phi = np.asarray(project_gradients(loss, params, train, 4096, kind=kind, seed=1))
            err[kind] = np.abs(phi @ phi.T - g @ g.T).max() / np.outer(norms, norms).max()
    assert err["gaussian"] < 4 / 64 and err["rademacher"] < 4 / 64, err


def test_chunks_blocks_seed_and_ensembling(digits):
    with jax.enable_x64(True):
        loss, params, train, test = _setup(digits)
        one = np.asarray(project_gradients(loss, params, train, 64, seed=1))
        cut = np.asarray(project_gradients(loss, params, train, 64, seed=1, chunk_size=7, param_block=10))
        again = np.asarray(project_gradients(loss, params, train, 64, seed=1, chunk_size=7, param_block=10))
        other = np.asarray(project_gradients(loss, params, train, 64, seed=5))
        params2 = _setup(digits, seed=1)[1]
        both = fit_projected(loss, [params, params2], train, 64, damping=0.1, chunk_size=7, seed=1)
        each = [fit_projected(loss, [p], train, 64, damping=0.1, chunk_size=7, seed=1) for p in (params, params2)]
        s_both, s_each = np.asarray(both.scores(test)), [np.asarray(f.scores(test)) for f in each]
        si_both = np.asarray(both.self_influence([1, 2]))
        si_each = [np.asarray(f.self_influence([1, 2])) for f in each]
    np.testing.assert_allclose(cut, one, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(cut, again)
    assert np.abs(other - one).max() > 0.1 * np.abs(one).max()
    np.testing.assert_allclose(s_both, (s_each[0] + s_each[1]) / 2, rtol=1e-12)
    np.testing.assert_allclose(si_both, (si_each[0] + si_each[1]) / 2, rtol=1e-12)
    assert np.abs(s_each[0] - s_each[1]).max() > 0.1 * np.abs(s_each[0]).max()


def test_harness_trak_is_the_projected_gauss_newton_influence(digits):
    # projection_dim capped at P: R square (Rademacher, invertible), so with no damping trak's scores are
    # N times -G_t (G^T G)^{-1} G^T: I_up,loss with H = the empirical Fisher G^T G / N
    with jax.enable_x64(True):
        loss, params, train, test = _setup(digits)
        g = np.asarray(per_example_grads(loss, params, train, flat=True))
        gt = np.asarray(per_example_grads(loss, params, test, flat=True))
        scores = attribution_scores("trak", loss, params, train, test, projection_dim=10 ** 6)
        si = self_influence("trak", loss, params, train, [3, 4], projection_dim=10 ** 6)
    fisher = g.T @ g / len(g)
    expected = -gt @ np.linalg.solve(fisher, g.T)
    np.testing.assert_allclose(scores, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
    np.testing.assert_allclose(si, np.einsum("ip,pi->i", g[[3, 4]], np.linalg.solve(fisher, g[[3, 4]].T)), rtol=1e-6)


def test_bad_input_is_a_user_error(digits):
    with jax.enable_x64(True):
        _bad_input_cases(*_setup(digits))


def _bad_input_cases(loss, params, train, test):
    wide = init_variables(create_model("mlp", 3, hidden=()), jax.random.PRNGKey(0), (5, 5, 1))["params"]
    cases = [(lambda: project_gradients(loss, params, train, 0), "k must be"),
             (lambda: project_gradients(loss, params, train, 64, kind="sparse"), "unknown projection"),
             (lambda: project_gradients(loss, params, train, 64, param_block=0), "param_block"),
             (lambda: project_gradients(loss, params, train, 64, seed=-1), "seed"),
             (lambda: fit_projected(loss, [], train, 64), "empty"),
             (lambda: fit_projected(loss, params, train, 64), "list of parameter"),
             (lambda: fit_projected(loss, [params, wide], train, 64), "other parameter shapes"),
             (lambda: fit_projected(loss, [params], train, 64, damping=-1.0), "damping"),
             (lambda: fit_projected(loss, [params], test, 64), "not positive definite"),  # k > N
             (lambda: fit_projected(loss, [params], train, 64, damping=1.0).scores(
                 {"x": test["x"][:, :3], "y": test["y"]}), "does not match"),
             (lambda: fit_projected(loss, [params], train, 64, damping=1.0).self_influence([N]), "indices")]
    for call, match in cases:
        with pytest.raises(UserError, match=match):
            call()
