"""The one L-BFGS (repair_jax.influence.full_batch) against closed forms and scipy, in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from repair_jax.influence.full_batch import NotConvergedWarning, lbfgs, minimize_objective


def _quadratic(seed=0, p=12):
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(p, p))
    return m @ m.T + 0.5 * np.eye(p), rng.normal(size=p)  # condition number in the hundreds


def test_lbfgs_reaches_the_optimum_of_a_strongly_convex_quadratic_in_float64():
    a, b = _quadratic()
    with jax.enable_x64(True):
        f = lambda x: 0.5 * x @ jnp.asarray(a) @ x - jnp.asarray(b) @ x
        res = jax.jit(lambda x0: lbfgs(f, x0, max_iter=500, tol=1e-10))(jnp.zeros(len(b)))
        assert res.x.dtype == jnp.float64
    assert float(res.grad_norm) <= 1e-10 and int(res.iterations) < 500
    np.testing.assert_allclose(res.x, np.linalg.solve(a, b), rtol=1e-8, atol=1e-10)


def _logistic(seed=1, n=80, p=5):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p))
    y = (x @ rng.normal(size=p) + rng.normal(size=n) > 0).astype(np.float64)
    return x, y


def test_minimize_objective_matches_scipy_on_l2_logistic_regression_to_1e_8():
    """Mean logistic loss + l2/2 ||w||^2 (strongly convex): gradient norm <= 1e-8 and the optimum of scipy's
    L-BFGS-B run to its own tight tolerance; removing a point equals fitting without it."""
    x, y = _logistic()
    l2 = 0.1
    loss = lambda w, batch: jnp.logaddexp(0.0, batch["x"] @ w["w"]) - batch["y"] * (batch["x"] @ w["w"])

    def ref(keep):
        def fg(w):
            z = x[keep] @ w
            v = np.mean(np.logaddexp(0, z) - y[keep] * z) + 0.5 * l2 * w @ w
            return v, x[keep].T @ (1 / (1 + np.exp(-z)) - y[keep]) / keep.sum() + l2 * w
        return scipy.optimize.minimize(fg, np.zeros(x.shape[1]), jac=True, method="L-BFGS-B",
                                       options={"gtol": 1e-12, "ftol": 1e-16, "maxiter": 1000}).x

    with jax.enable_x64(True):
        batch = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
        w0 = {"w": jnp.zeros(x.shape[1], jnp.float64)}
        params, gn = minimize_objective(loss, w0, batch, l2=l2, tol=1e-8)
        weights = np.ones(len(y))
        weights[3] = 0
        without, gn3 = minimize_objective(loss, params, batch, l2=l2, weights=weights, tol=1e-8)
    assert gn <= 1e-8 and gn3 <= 1e-8
    np.testing.assert_allclose(params["w"], ref(np.ones(len(y), bool)), atol=1e-7)
    np.testing.assert_allclose(without["w"], ref(weights > 0), atol=1e-7)


def test_too_few_iterations_are_reported_not_hidden():
    a, b = _quadratic()
    with jax.enable_x64(True):
        f = lambda x: 0.5 * x @ jnp.asarray(a) @ x - jnp.asarray(b) @ x
        res = lbfgs(f, jnp.zeros(len(b)), max_iter=3, tol=1e-8)
        assert int(res.iterations) == 3 and float(res.grad_norm) > 1e-8
        loss = lambda p, batch: 0.5 * p["x"] @ jnp.asarray(a) @ p["x"] - jnp.asarray(b) @ p["x"] + 0 * batch["y"]
        batch = {"y": jnp.zeros(4)}
        with pytest.warns(NotConvergedWarning, match="did not converge in 1 of 1"):
            _, gn = minimize_objective(loss, {"x": jnp.zeros(len(b))}, batch, tol=1e-8, max_iter=3)
    assert gn > 1e-8


def test_a_softplus_mlp_fit_reaches_1e_8_and_the_activation_is_checked(digits):
    """The smooth MLP of the LDS study converges in float64 (a ReLU MLP's minimum can sit on its kinks, where the
    gradient norm does not fall: full_batch's docstring); an unknown activation is a UserError."""
    from repair_jax.errors import UserError
    from repair_jax.influence.full_batch import fit_full_batch
    from repair_jax.models import create_model
    from repair_jax.studies.influence import FullBatchModel, fit_args

    model = FullBatchModel("mlp", (4,), 1e-2, 3000, "softplus")
    with jax.enable_x64(True):
        _, params, gnorm, _ = fit_full_batch(digits, digits.train.y, **fit_args(model), seed=0, tol=1e-8,
                                             dtype=jnp.float64, train_limit=60)
        x = jnp.linspace(-3.0, 3.0, 64).reshape(1, 8, 8, 1)
        out = create_model("mlp", 10, hidden=(4,), activation="softplus").apply({"params": params}, x)[1]
    assert gnorm <= 1e-8
    assert np.all(np.asarray(out) > 0)  # softplus units: never exactly zero, unlike ReLU's
    with pytest.raises(UserError, match="activation"):
        FullBatchModel("mlp", (4,), 1e-2, 10, "tanh")


def test_ranking_titles_name_the_model():
    """The Fig. 6-3 table and plot titles name the fitted model, not always softmax regression."""
    from repair_jax.studies.influence import FullBatchModel, model_label

    assert model_label(FullBatchModel("logistic_regression", (), 1e-2, 500)) == "softmax regression"
    assert model_label(FullBatchModel("mlp", (8, 4), 1e-2, 300)) == "MLP [8, 4]"
    assert model_label(FullBatchModel("mlp", (8,), 1e-2, 300, "softplus")) == "MLP [8] (softplus)"
