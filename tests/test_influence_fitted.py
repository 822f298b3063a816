"""Fit once, attribute many (repair_jax.influence.fitted): the fitted scores of M test points against
influence_up_loss per test point (same solver options) and against the explicit formula of Adebayo 2022, Eq. 3.1
with a dense ``jax.hessian``."""

import dataclasses
import os

os.environ.setdefault("TQDM_DISABLE", "1")

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from repair_jax.errors import UserError
from repair_jax.influence import (
    ClassifierLoss, InfluenceWarning, fit_influence, influence_up_loss, training_objective,
)
from repair_jax.cli.parsing import parse_test_indices
from repair_jax.influence.workflow import check_test_indices
from repair_jax.models import create_model, init_variables


def _row(batch, j):
    return jax.tree_util.tree_map(lambda a: a[j:j + 1], batch)


def _first(batch, m):
    return jax.tree_util.tree_map(lambda a: a[:m], batch)


@pytest.mark.parametrize("method", ["explicit", "cg"])
def test_fitted_scores_equal_influence_up_loss_per_test_point(logreg, method):
    loss, params, train, test, l2, hess = logreg  # softmax regression, 240 digits (tests/conftest.py)
    test = _first(test, 5)
    opts = dict(method=method, l2=l2, relative_damping=0.01, tol=1e-8)
    with jax.enable_x64(True):
        fit = fit_influence(loss, params, train, chunk_size=64, **opts)
        scores, r = fit.scores(test)
        # the per-point reference (test point 3) shares nothing with the fit but, for explicit, the dense H
        h = hess + fit.damping * jnp.eye(hess.shape[0]) if method == "explicit" else None
        ref, ref_solve = influence_up_loss(loss, params, train, _row(test, 3), chunk_size=64, hessian=h, **opts)
        if method == "cg":  # without the stored (N, P) gradients (store_gradients=False): forward mode per point
            lean_scores = dataclasses.replace(fit, grads=None).upweight_scores(r.x)
            np.testing.assert_allclose(lean_scores, scores, rtol=1e-9, atol=1e-12)
    assert scores.shape == (5, 240) and fit.grads.shape == (240, 650)
    assert r.converged and r.residuals.shape == (5,) and np.all(r.residuals <= 1e-8)
    assert ref_solve.converged and fit.damping == pytest.approx(ref_solve.damping, rel=1e-12)
    np.testing.assert_allclose(scores[3], ref, rtol=1e-6, atol=1e-9 * float(np.abs(ref).max()))


def test_fitted_lissa_solves_the_block_at_once(logreg):
    """LiSSA as a fitted method: one scale (1.1 x the damped Hessian's largest eigenvalue), the whole block
    iterated together; its scores equal explicit's within the tolerance."""
    loss, params, train, test, l2, hess = logreg
    test = _first(test, 3)
    with jax.enable_x64(True):
        fit = fit_influence(loss, params, train, method="lissa", l2=l2, relative_damping=0.05, tol=1e-6, chunk_size=64)
        scores, r = fit.scores(test)
        ref, _ = fit_influence(loss, params, train, method="explicit", l2=l2, relative_damping=0.05,
                               chunk_size=64).scores(test)
    assert r.converged and r.method == "lissa" and np.all(r.residuals <= 1e-6) and len(set(r.iterations)) == 1
    assert fit.scale == pytest.approx(1.1 * (fit.largest_eigenvalue + fit.damping), rel=0.05)
    np.testing.assert_allclose(scores, ref, rtol=1e-4, atol=1e-5 * float(np.abs(ref).max()))
    with pytest.raises(UserError, match="scale must be positive"):
        fit_influence(loss, params, train, method="lissa", scale=-1.0)


def _tiny_mlp():
    m = create_model("mlp", 10, hidden=(3,))
    v = init_variables(m, jax.random.PRNGKey(2), (2, 2, 1))
    x = jax.random.uniform(jax.random.PRNGKey(3), (30, 2, 2, 1), jnp.float64)
    train = {"x": x, "y": jnp.arange(30) % 10}
    test = {"x": x[:4] + 0.1, "y": jnp.array([1, 4, 7, 9])}
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), v["params"])
    return ClassifierLoss(m.apply), params, train, test


@pytest.mark.parametrize("damping", [0.5, 0.0])
def test_fitted_explicit_equals_dense_hessian_formula(damping):
    # a ReLU MLP at initialisation: with damping 0 its Hessian is indefinite -> the eigh path (and a warning)
    with jax.enable_x64(True):
        loss, params, train, test = _tiny_mlp()
        flat, unravel = ravel_pytree(params)
        h = jax.jit(jax.hessian(lambda f: training_objective(loss, unravel(f), train, 0.01)))(flat)
        h = h + damping * jnp.eye(flat.size)
        one = lambda f, x, y: loss(unravel(f), {"x": x[None], "y": y[None]})[0]
        grad = jax.jit(lambda b: jax.vmap(jax.grad(one), in_axes=(None, 0, 0))(flat, b["x"], b["y"]))
        expected = -grad(test) @ np.linalg.solve(h, grad(train).T)  # (M, N), Eq. 3.1
        if damping:
            fit = fit_influence(loss, params, train, l2=0.01, damping=damping)
        else:
            with pytest.warns(InfluenceWarning, match="not positive definite"):
                fit = fit_influence(loss, params, train, l2=0.01, damping=damping)
        scores, r = fit.scores(test)
    assert fit.factor[0] == ("cholesky" if damping else "eigh")
    assert r.converged and r.iterations.tolist() == [1] * 4
    np.testing.assert_allclose(scores, expected, rtol=1e-7, atol=1e-10 * float(np.abs(expected).max()))


def test_block_solve_reports_every_column_and_checks_its_input(logreg, monkeypatch):
    from repair_jax.influence import fitted

    loss, params, train, test, l2, _ = logreg
    test = _first(test, 5)
    with jax.enable_x64(True):
        fit = fit_influence(loss, params, train, method="cg", l2=l2, max_iter=2, tol=1e-10)
        b = fit.test_gradients(test).T
        with pytest.warns(InfluenceWarning, match="5 of 5 right-hand sides"):
            r = fit.solve(b)
        with pytest.warns(InfluenceWarning):
            one = fit.solve(b[:, 0])
        monkeypatch.setattr(fitted, "CG_COLUMNS", 2)  # 5 columns in blocks of 2, the last one padded
        with pytest.warns(InfluenceWarning):
            blocked = fit.solve(b)
    np.testing.assert_allclose(blocked.x, r.x, rtol=1e-12, atol=1e-15)
    assert blocked.iterations.tolist() == [2] * 5
    assert not r.converged and r.status == "not_converged" and r.iterations.tolist() == [2] * 5
    assert [c["converged"] for c in r.summary()["columns"]] == [False] * 5
    assert one.x.shape == (650, 1)
    np.testing.assert_allclose(one.residuals[0], r.residuals[0], rtol=1e-9)
    with pytest.raises(UserError, match=r"\(P,\) or \(P, M\)"):
        fit.solve(jnp.ones((3, 2)))
    with pytest.raises(UserError, match="tracin has no fitted inverse-HVP operator"):
        fit_influence(loss, params, train, method="tracin")
    with jax.enable_x64(True):
        with pytest.raises(UserError, match=r"per-example training gradients take .* GB \(240 x 650 float64"):
            fit_influence(loss, params, train, method="cg", store_gradients=True, max_gradient_bytes=1000)
        assert fit_influence(loss, params, train, method="cg", max_gradient_bytes=1000).grads is None


def test_influence_cli_several_test_indices_equal_single_runs(tmp_path, capsys):
    import json

    from repair_jax.cli import main
    from repair_jax.runs import train_run
    from repair_jax.train import TrainConfig

    cfg = TrainConfig(model="mlp", model_kwargs={"hidden": ()}, epochs=2, l2=1e-3, seed=0, train_limit=120)
    train_run(cfg, tmp_path / "run", progress=False)
    base = ["influence", "--run", str(tmp_path / "run"), "--method", "explicit", "--damping", "0.05", "--top", "3"]
    assert main(base + ["--test-index", "all", "--out", str(tmp_path / "all")]) == 0
    assert main(base + ["--test-index", "2", "--out", str(tmp_path / "one")]) == 0
    many, one = np.load(tmp_path / "all" / "scores.npy"), np.load(tmp_path / "one" / "scores.npy")
    s = json.loads((tmp_path / "all" / "summary.json").read_text())
    m, n = json.loads((tmp_path / "run" / "run.json").read_text())["split_sizes"]["test"], s["num_train"]
    assert many.shape == (m, n) and one.shape == (n,)  # one index keeps the (N,) layout
    np.testing.assert_allclose(many[2], one, rtol=1e-4, atol=1e-5 * np.abs(one).max())
    listing = json.loads((tmp_path / "all" / "influence.json").read_text())
    assert [e["test_index"] for e in listing] == list(range(m)) and len(listing[2]["top"]) == 3
    assert [e["train_index"] for e in listing[2]["top"]] == list(np.argsort(-np.abs(one), kind="stable")[:3])
    assert s["converged"] and [c["test_index"] for c in s["solver"]["columns"]] == list(range(m))
    assert parse_test_indices("7,2") == [7, 2] and parse_test_indices("all") == "all" and parse_test_indices(None) is None
    assert check_test_indices(3) == [3] and check_test_indices((7, 2)) == [7, 2] and check_test_indices(None) is None
    with pytest.raises(UserError, match="test_index must be an index, a sequence"):  # the library parses no text
        check_test_indices("7,2")
    for spec, msg in (("3,x", "bad --test-index"), ("3,3", "twice"), ("1,-2", ">= 0"), ("0,99999", "out of range")):
        capsys.readouterr()
        assert main(base + ["--test-index", spec, "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and msg in err
    assert not (tmp_path / "bad").exists()
    # LiSSA and TracIn score several test points too: LiSSA's rows agree with explicit's, TracIn's with single runs
    assert main(base[:3] + ["--method", "lissa", "--damping", "0.05", "--test-index", "1,2", "--out",
                            str(tmp_path / "lissa")]) == 0
    lissa = np.load(tmp_path / "lissa" / "scores.npy")
    np.testing.assert_allclose(lissa, many[[1, 2]], rtol=1e-2, atol=1e-3 * np.abs(many[[1, 2]]).max())
    for spec, out in (("1,2", "tr_many"), ("2", "tr_one")):
        assert main(base[:3] + ["--method", "tracin", "--test-index", spec, "--out", str(tmp_path / out)]) == 0
    tr_many, tr_one = np.load(tmp_path / "tr_many" / "scores.npy"), np.load(tmp_path / "tr_one" / "scores.npy")
    assert tr_many.shape == (2, n)
    np.testing.assert_allclose(tr_many[1], tr_one, rtol=1e-4, atol=1e-6 * np.abs(tr_one).max())


def test_cg_fits_of_one_loss_share_one_compiled_solve(logreg):
    """Two CG fits of the same loss and parameter structure (other parameters, other damping) reuse one
    compiled block solve: the operator's static part compares by value (hvp._BoundHVP), the solve is a
    module-level jit (hvp._cg_segment, whose segment length is an input too)."""
    from repair_jax.influence.hvp import _cg_segment as _cg_columns

    loss, params, train, test, l2, _ = logreg
    test = _first(test, 3)
    _cg_columns.clear_cache()
    with jax.enable_x64(True):
        first = fit_influence(loss, params, train, method="cg", l2=l2, damping=0.1, tol=1e-8)
        first.scores(test)
        moved = jax.tree_util.tree_map(lambda a: a * 1.01, params)
        second = fit_influence(loss, moved, train, method="cg", l2=l2, damping=0.2, tol=1e-8)
        scores, _ = second.scores(test)
        assert _cg_columns._cache_size() == 1
        # the second fit's scores are its own (not the first fit's operator reused)
        reference, _ = fit_influence(loss, moved, train, method="explicit", l2=l2, damping=0.2).scores(test)
    np.testing.assert_allclose(scores, reference, rtol=1e-5, atol=1e-8)


def _symmetric(rng, eigenvalues):
    """A symmetric matrix with these eigenvalues and a random orthonormal basis (float32)."""
    q, _ = np.linalg.qr(rng.normal(size=(len(eigenvalues), len(eigenvalues))))
    return jnp.asarray((q * np.asarray(eigenvalues)) @ q.T, jnp.float32)


def test_cg_on_an_indefinite_system_stops_early_and_names_a_damping_that_converges(rng):
    """Issue 26: CG on a Hessian that is not positive definite (an unregularised CNN) ran its 1000
    iterations silently; after negative curvature and no progress for `patience` iterations it stops as
    diverged, and the damping it suggests (from lambda_min = -5 here) converges."""
    from repair_jax.influence.hvp import damping_advice, solve_cg_block

    a = _symmetric(rng, np.concatenate([np.linspace(-5, -0.5, 300), np.linspace(0.5, 50, 1200)]))
    b = jnp.asarray(rng.normal(size=(1500, 2)), jnp.float32)
    _, report = solve_cg_block(lambda v: a @ v, b, 1e-5, 1000, patience=30)
    assert report.diverged.all() and report.negative_curvature.all() and report.iterations.max() < 1000
    assert np.all(report.min_curvature < 0) and np.all(report.min_curvature >= -5 - 1e-3)  # Rayleigh quotients
    advice = damping_advice(report, 0.0, None, lambda v: a @ v, 1500)
    d = advice["suggested_damping"]
    assert d > 5 and advice["suggested_relative_damping"] == pytest.approx(d / 50, rel=0.05)
    x, report = solve_cg_block(lambda v: a @ v + d * v, b, 1e-5, 1000)
    assert not report.diverged.any() and not report.negative_curvature.any()
    np.testing.assert_allclose(np.asarray(a @ x + d * x), np.asarray(b), atol=1e-3)
    assert damping_advice(report, d, None) == {}  # nothing diverged: no advice
    # an indefinite system CG does solve (a small one: at most P Krylov directions) is not called diverged
    small = _symmetric(rng, np.linspace(-0.5, 10, 40))
    x, report = solve_cg_block(lambda v: small @ v, b[:40], 1e-5, 1000)
    assert report.negative_curvature.all() and not report.diverged.any()


def test_cg_stops_on_a_growing_residual_and_reports_progress(rng):
    """A residual grown tenfold above its best with no new best for `patience` iterations stops the solve
    (here A = I + skew: p^T A p > 0 always, so no negative curvature warns of it); a solve over
    `report_after` seconds prints its iterations, residual and an estimate of the time left."""
    import io

    from repair_jax.influence.hvp import solve_cg_block

    s = rng.normal(size=(40, 40))
    a = jnp.asarray(np.eye(40) + 3 * (s - s.T), jnp.float32)
    stream = io.StringIO()
    _, report = solve_cg_block(lambda v: a @ v, jnp.asarray(rng.normal(size=(40, 2)), jnp.float32), 1e-5, 1000,
                               patience=20, progress=True, report_after=0, report_every=0, stream=stream)
    assert report.diverged.all() and not report.negative_curvature.any() and report.iterations.max() < 1000
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("cg solve: iteration ") and "of at most 1000, relative residual" in lines[0]
    assert "s left" in lines[0] and lines[-1].startswith("cg solve: done after")
    quiet = io.StringIO()
    solve_cg_block(lambda v: a @ v, jnp.asarray(rng.normal(size=(40, 1)), jnp.float32), 1e-5, 100,
                   progress=False, report_after=0, report_every=0, stream=quiet)
    assert quiet.getvalue() == ""


def test_a_diverged_fitted_cg_solve_is_marked_with_the_damping_that_converges(logreg):
    """The fitted block solve of an indefinite operator (the logistic-regression objective with an L2
    coefficient below minus its Hessian's smallest eigenvalue): diverged columns, a warning naming the
    damping, the suggestion in the summary, and a fit at that damping converges."""
    from repair_jax.influence.hvp import InfluenceWarning

    loss, params, train, test, l2, hess = logreg
    with jax.enable_x64(True):
        eigenvalues = np.linalg.eigvalsh(np.asarray(hess))
        top = float(np.quantile(eigenvalues, 0.9))
        shifted = l2 - top  # 90 % of the eigenvalues negative, the smallest eigenvalues[0] - top
        fit = fit_influence(loss, params, train, method="cg", l2=shifted, tol=1e-8, max_iter=300)
        with pytest.warns(InfluenceWarning, match="should make H \\+ damping I positive definite"):
            _, r = fit.scores(_first(test, 2))
        summary = r.summary()
        assert r.status == "diverged" and summary["suggested_damping"] > top - eigenvalues[0]
        assert max(c["iterations"] for c in summary["columns"]) < 300
        fixed = fit_influence(loss, params, train, method="cg", l2=shifted, damping=summary["suggested_damping"],
                              tol=1e-8, max_iter=300)
        _, r = fixed.scores(_first(test, 2))
        assert r.converged and "suggested_damping" not in r.summary()
