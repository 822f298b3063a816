"""Model guiding (Adebayo 2022, Ch. 5): hypergradients vs finite differences and unrolling, simplex, carving,
file validation, Algorithm 1, group DRO."""

from __future__ import annotations

import functools
import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import enable_x64

from repair_jax.errors import UserError
from repair_jax.guiding import (
    AuditSet, BilevelConfig, ConceptLibrary, LowerLevelNotConverged, bilevel_update, fit_concept_basis,
    hypergradient, load_audit, load_concepts, save_audit, save_concepts, solve_lower_level, sort_filter,
    unrolled_lower_solution, upper_objective,
)
from repair_jax.guiding.bilevel import initial_delta, init_theta, project_simplex_rows


def _problem(task, n=40, d=4, m=12, k=3, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d))
    za = rng.normal(size=(m, d))
    if task == "classification":
        W = rng.normal(size=(d, k))
        y = (z @ W).argmax(1)
        ya = (za @ W).argmax(1)
    else:
        w = rng.normal(size=d)
        y = z @ w + 0.3 * rng.normal(size=n)
        ya = za @ w
    p = {"z": z, "y": y, "z_audit": za, "y_audit": ya, "a_audit": rng.integers(0, 2, (m, d)),
         "s_audit": rng.integers(-1, 2, (m, d)), "c_audit": rng.uniform(0.5, 1, m)}
    return {key: jnp.asarray(v.astype(dtype) if v.dtype.kind == "f" else v) for key, v in p.items()}


def _perturbed_delta(task, y, k, rng):
    d0 = initial_delta(y, k, task, jnp.float64)
    if task == "classification":
        return project_simplex_rows(0.7 * d0 + 0.3 * jnp.asarray(rng.dirichlet(np.ones(k), len(y))))
    return d0 + 0.2 * jnp.asarray(rng.normal(size=y.shape))


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_implicit_hypergradient_matches_central_differences_and_unrolling(task):
    cfg = BilevelConfig(gamma=0.5, fi_weight=0.3, l2=0.5, inner_maxiter=2000, inner_tol=1e-12,
                        cg_maxiter=500, cg_tol=1e-14)
    with enable_x64():
        k = 3 if task == "classification" else 1
        p = _problem(task)
        rng = np.random.default_rng(1)
        delta = _perturbed_delta(task, p["y"], k, rng)
        theta0 = init_theta(p["z"].shape[1], k, jnp.float64)
        _, grad, _, err = jax.jit(functools.partial(hypergradient, config=cfg, task=task, num_classes=k))(
            delta, theta0, p)
        assert float(err) < 1e-9

        def f(dl):
            th, _ = solve_lower_level(theta0, dl, p["z"], p["y"], cfg, task)
            return upper_objective(dl, th, p, cfg, task, k, include_l1=False)

        f = jax.jit(f)
        # central finite differences (float64), along a random direction and a few coordinates
        direction = jnp.asarray(rng.normal(size=delta.shape))
        eps = 1e-5
        fd = (f(delta + eps * direction) - f(delta - eps * direction)) / (2 * eps)
        an = jnp.vdot(grad, direction)
        assert abs(float(an - fd)) <= 1e-3 * abs(float(fd))
        flat = np.asarray(grad).ravel()
        for j in (0, 5, 17):
            e = jnp.zeros(delta.size).at[j].set(1.0).reshape(delta.shape)
            fdj = (f(delta + eps * e) - f(delta - eps * e)) / (2 * eps)
            assert abs(flat[j] - float(fdj)) <= 1e-3 * max(abs(float(fdj)), 1e-6)

        # back-propagation through 300 unrolled gradient-descent steps of the lower level
        def unrolled(dl):
            th = unrolled_lower_solution(theta0, dl, p["z"], p["y"], cfg.l2, task, steps=300, lr=0.3)
            return upper_objective(dl, th, p, cfg, task, k, include_l1=False)

        g_unr = jax.jit(jax.grad(unrolled))(delta)
        np.testing.assert_allclose(np.asarray(g_unr), np.asarray(grad), rtol=1e-4, atol=1e-8)


def test_delta_stays_on_simplex_and_flags_flipped_labels():
    rng = np.random.default_rng(0)
    n, d, k = 120, 5, 3
    centers = rng.normal(size=(k, d)) * 3
    y_true = rng.integers(0, k, n)
    z = centers[y_true] + rng.normal(size=(n, d))
    flipped = rng.choice(n, 15, replace=False)
    y = y_true.copy()
    y[flipped] = (y[flipped] + 1) % k
    ya = rng.integers(0, k, 30)
    za = centers[ya] + rng.normal(size=(30, d))
    p = {"z": z.astype(np.float32), "y": y, "z_audit": za.astype(np.float32), "y_audit": ya,
         "a_audit": np.zeros((30, d), np.float32), "s_audit": np.zeros((30, d), np.float32),
         "c_audit": np.ones(30, np.float32)}
    cfg = BilevelConfig(gamma=0.05, fi_weight=0.0, l2=1e-2, outer_steps=30, outer_lr=0.05)
    res = bilevel_update(p, cfg, "classification", k)
    assert res.delta.shape == (n, k)
    assert np.all(res.delta >= -1e-6)
    np.testing.assert_allclose(res.delta.sum(1), 1.0, atol=1e-5)
    from repair_jax.metrics import binary_auroc
    change = 1 - res.delta[np.arange(n), y]
    is_flip = np.zeros(n)
    is_flip[flipped] = 1
    assert float(binary_auroc(is_flip, change)) > 0.75  # random scores give 0.5


def test_lower_level_not_converged_warns():
    p = _problem("classification", dtype=np.float32)
    cfg = BilevelConfig(l2=1e-3, outer_steps=1, inner_maxiter=2, inner_tol=1e-10)
    with pytest.warns(LowerLevelNotConverged):
        res = bilevel_update(p, cfg, "classification", 3)
    assert not res.lower_converged


def test_converged_lower_level_does_not_warn():
    p = _problem("regression", dtype=np.float32)
    cfg = BilevelConfig(l2=0.1, outer_steps=3, inner_maxiter=500, inner_tol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LowerLevelNotConverged)
        res = bilevel_update(p, cfg, "regression")
    assert res.lower_converged and res.delta.shape == (40,)


def test_carving_recovers_known_concept_directions():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(500, 16))
    U = rng.normal(size=(3, 16))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    a = np.stack([h @ U[0] > 0, h @ U[1] > 0.3, 2 * (h @ U[2]) + 1], 1).astype(np.float32)
    lib = ConceptLibrary(("round", "striped", "size"), ("binary", "binary", "scalar"))
    basis = fit_concept_basis(h, a, lib, l2=1e-3)
    cos = np.sum(basis.B * U, axis=1)  # h is ~isotropic, so standardisation keeps directions
    assert np.all(cos > 0.97), cos


def test_sort_filter_budget():
    s = np.array([0.5, 0.05, 0.9, 0.3, 0.7])
    np.testing.assert_array_equal(sort_filter(s, 0.1, 2), [2, 4])
    np.testing.assert_array_equal(sort_filter(s, 0.1, 10), [2, 4, 0, 3])


# ----------------------------------------------------------------------------- formats

def _lib():
    return ConceptLibrary(("a", "b"), ("binary", "scalar"))


def _audit(m=5):
    rng = np.random.default_rng(0)
    return AuditSet(rng.uniform(size=(m, 4, 4, 1)).astype(np.float32), np.arange(m) % 3,
                    np.stack([np.arange(m) % 2, rng.normal(size=m)], 1).astype(np.float32),
                    np.ones((m, 2), np.float32), np.full(m, 0.9, np.float32))


def test_audit_round_trip_and_reordering(tmp_path):
    save_concepts(tmp_path / "c.json", _lib())
    lib = load_concepts(tmp_path / "c.json")
    assert lib.names == ("a", "b")
    save_audit(tmp_path / "audit.json", _audit(), lib)
    # a library listing the concepts in the other order gets reordered columns
    lib2 = ConceptLibrary(("b", "a"), ("scalar", "binary"))
    au = load_audit(tmp_path / "audit.json", lib2, num_classes=3)
    np.testing.assert_allclose(au.a[:, 1], _audit().a[:, 0])


@pytest.mark.parametrize("mutate, msg", [
    (lambda meta, arr: meta.update(concepts=["a", "b", "zz"]), "not in the concept library"),
    (lambda meta, arr: meta.update(concepts=["a"]), "does not annotate"),
    (lambda meta, arr: meta.update(format="nope"), "not an audit set"),
    (lambda meta, arr: arr.update(s=arr["s"] * 2), "importance"),
    (lambda meta, arr: arr.update(c=arr["c"] + 1), "confidence"),
    (lambda meta, arr: arr.update(y=arr["y"] + 5), "labels y"),
    (lambda meta, arr: arr.update(a=arr["a"] * np.nan), "NaN"),
    (lambda meta, arr: arr.pop("c"), "missing arrays"),
    (lambda meta, arr: arr.update(a=arr["a"][:, :1]), "shape"),
])
def test_malformed_audit_is_user_error(tmp_path, mutate, msg):
    lib = _lib()
    au = _audit()
    meta = {"format": "repair_jax.audit/1", "arrays": "audit.npz", "task": "classification",
            "concepts": ["a", "b"]}
    arr = {"x": au.x, "y": au.y, "a": au.a, "s": au.s, "c": au.c}
    mutate(meta, arr)
    (tmp_path / "audit.json").write_text(json.dumps(meta))
    np.savez(tmp_path / "audit.npz", **arr)
    with pytest.raises(UserError, match=msg):
        load_audit(tmp_path / "audit.json", lib, num_classes=3)


@pytest.mark.parametrize("text, msg", [
    ("{", "JSON|json"),
    ('{"format": "repair_jax.concepts/1", "concepts": []}', "non-empty"),
    ('{"format": "repair_jax.concepts/1", "concepts": [{"name": "a", "type": "color"}]}', "binary or scalar"),
    ('{"format": "repair_jax.concepts/1", "concepts": [{"name": "a", "type": "binary"}, '
     '{"name": "a", "type": "scalar"}]}', "duplicate"),
    ('{"concepts": [{"name": "a", "type": "binary"}]}', "not a concept library"),
])
def test_malformed_concepts_is_user_error(tmp_path, text, msg):
    (tmp_path / "c.json").write_text(text)
    with pytest.raises(UserError, match=msg):
        load_concepts(tmp_path / "c.json")


# ----------------------------------------------------------------------------- group DRO

def test_group_dro_objective_weights_worst_group():
    from repair_jax.models import create_model, init_variables
    from repair_jax.train import create_train_state, group_dro_objective, softmax_cross_entropy
    import optax

    model = create_model("mlp", 3, hidden=(8,))
    variables = init_variables(model, jax.random.PRNGKey(0), (4, 4, 1))
    state = create_train_state(model, variables, optax.sgd(0.1))
    rng = np.random.default_rng(0)
    batch = {"x": jnp.asarray(rng.uniform(size=(12, 4, 4, 1)), jnp.float32),
             "y": jnp.asarray(rng.integers(0, 3, 12)), "group": jnp.asarray(np.repeat([0, 2], 6))}
    logits, _ = model.apply(variables, batch["x"])
    per = np.asarray(softmax_cross_entropy(logits, batch["y"]))
    g = np.array([per[:6].mean(), per[6:].mean()])
    # eta -> large: the worst group's mean loss; eta = 0: the plain mean of present groups (group 1 absent)
    big, _ = group_dro_objective(state.params, state, batch, num_groups=3, eta=1e4)
    zero, _ = group_dro_objective(state.params, state, batch, num_groups=3, eta=0.0)
    np.testing.assert_allclose(float(big), g.max(), rtol=1e-5)
    np.testing.assert_allclose(float(zero), g.mean(), rtol=1e-5)


def test_worst_group_accuracy_matches_numpy():
    from repair_jax.metrics import worst_group_accuracy
    rng = np.random.default_rng(0)
    y, p, g = rng.integers(0, 3, 200), rng.integers(0, 3, 200), rng.choice([0, 1, 3], 200)
    ref = min(np.mean(y[g == k] == p[g == k]) for k in (0, 1, 3))
    np.testing.assert_allclose(float(worst_group_accuracy(y, p, g, 5)), ref, rtol=1e-6)


# ----------------------------------------------------------------------------- CLI and folding

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from repair_jax.runs import train_run
    from repair_jax.data import load_dataset
    from repair_jax.guiding.synthetic import audit_from_split, concept_library
    from repair_jax.train import TrainConfig

    d = tmp_path_factory.mktemp("guide")
    cfg = TrainConfig(dataset="digits", model="mlp", model_kwargs={"hidden": [32]}, epochs=2, train_limit=200)
    train_run(cfg, d / "run", progress=False)
    ds = load_dataset("digits", seed=0)
    lib = concept_library("digits", ds.class_names)
    save_concepts(d / "concepts.json", lib)
    save_audit(d / "audit.json", audit_from_split(ds.pool.x[:60], ds.pool.y[:60], "digits", ds.class_names), lib)
    return d


def test_guide_cli_writes_report_and_loadable_guided_run(tiny_run, capsys):
    from repair_jax.cli import main
    from repair_jax.io import read_json
    from repair_jax.runs import load_run
    from repair_jax.train import evaluate

    out = tiny_run / "out"
    rc = main(["guide", "--run", str(tiny_run / "run"), "--audit", str(tiny_run / "audit.json"),
               "--concepts", str(tiny_run / "concepts.json"), "--out", str(out), "--outer-steps", "3",
               "--budget", "7", "--tau-nl", "0", "--no-progress"])
    assert rc == 0
    rep = read_json(out / "guide.json")
    assert len(rep["F_nl"]) == 7 and all(r["suggested_label"] != r["label"] for r in rep["F_nl"])
    scores = [r["label_change"] for r in rep["F_nl"]]
    assert scores == sorted(scores, reverse=True)
    guided = load_run(out / "run")
    ds = guided.dataset()
    # the folded network reproduces the guided concept head's accuracy exactly
    acc = evaluate(guided.state(), ds.test)
    assert abs(acc - rep["metrics"]["test"]["guided_accuracy"]) < 1e-6


def test_guide_cli_bad_audit_exits_2(tiny_run, capsys):
    from repair_jax.cli import main

    (tiny_run / "bad.json").write_text('{"format": "repair_jax.audit/1", "concepts": ["nope"]}')
    rc = main(["guide", "--run", str(tiny_run / "run"), "--audit", str(tiny_run / "bad.json"),
               "--concepts", str(tiny_run / "concepts.json"), "--out", str(tiny_run / "o2")])
    assert rc == 2
    assert "not in the concept library" in capsys.readouterr().err
    assert not (tiny_run / "o2").exists()


def test_influence_explicit_hessian_matches_leave_one_out():
    """The first-order influence of removing a point ~ the change of the audit loss on retraining."""
    from repair_jax.guiding.baselines import influence_on_audit
    from repair_jax.guiding.bilevel import audit_loss
    from repair_jax.guiding.carving import fit_linear_head

    with enable_x64():
        p = _problem("classification", n=60, seed=3)
        z, y = np.asarray(p["z"]), np.asarray(p["y"])
        l2 = 0.1
        theta = fit_linear_head(z, y, "classification", 3, l2=l2, maxiter=1000)
        detect, _ = influence_on_audit(theta, z, y, p["z_audit"], p["y_audit"], p["c_audit"], l2, 3)
        base = float(audit_loss(theta, p["z_audit"], p["y_audit"], p["c_audit"], "classification", 3))
        n = len(y)
        for i in (0, 7):
            keep = np.arange(n) != i
            # removing i from the mean over n points = reweighting; compare -detect/n with retraining,
            # the lower level rescaled so the L2 weight per point is unchanged
            th = fit_linear_head(z[keep], y[keep], "classification", 3, l2=l2 * n / (n - 1), maxiter=1000)
            th = jax.tree_util.tree_map(jnp.asarray, th)
            change = float(audit_loss(th, p["z_audit"], p["y_audit"], p["c_audit"], "classification", 3)) - base
            np.testing.assert_allclose(change * (n - 1) / n, -detect[i] / n, rtol=0.15, atol=2e-4)


def test_influence_baseline_equals_explicit_hessian_formula_for_every_solver():
    """detect = -g_audit^T H^-1 g_i and fix_ik = g_audit^T H^-1 (g_i(k) - g_i(y_i)) with H formed by
    jax.hessian of the lower level; the baseline (repair_jax.influence) matches for explicit and CG."""
    from jax.flatten_util import ravel_pytree

    from repair_jax.guiding.baselines import influence_on_audit
    from repair_jax.guiding.bilevel import audit_loss, lower_objective, per_example_loss
    from repair_jax.guiding.carving import fit_linear_head

    with enable_x64():
        p = _problem("classification", n=40, seed=5)
        z, y = jnp.asarray(p["z"]), jnp.asarray(p["y"])
        k, l2 = 3, 0.1
        theta = jax.tree_util.tree_map(jnp.asarray, fit_linear_head(np.asarray(z), np.asarray(y), "classification",
                                                                    k, l2=l2, maxiter=500))
        flat, unravel = ravel_pytree(theta)
        H = jax.hessian(lambda f: lower_objective(unravel(f), jax.nn.one_hot(y, k), z, y, l2, "classification"))(flat)
        ga = jax.grad(lambda f: audit_loss(unravel(f), p["z_audit"], p["y_audit"], p["c_audit"],
                                           "classification", k))(flat)
        v = np.linalg.solve(np.asarray(H), np.asarray(ga))
        g = np.stack([[np.asarray(jax.grad(lambda f: per_example_loss(
            unravel(f), z[i:i + 1], jax.nn.one_hot(jnp.array([c]), k), "classification")[0])(flat)) @ v
            for c in range(k)] for i in range(len(y))])  # (n, K): g_i(c) . H^-1 g_audit
        own = g[np.arange(len(y)), np.asarray(y)]
        # explicit: a dense solve (float64); CG stops at its default relative residual 1e-5
        for method, rtol, atol in (("explicit", 1e-8, 1e-12), ("cg", 1e-3, 1e-5)):
            detect, fix = influence_on_audit(theta, z, y, p["z_audit"], p["y_audit"], p["c_audit"], l2, k,
                                             method=method)
            np.testing.assert_allclose(detect, -own, rtol=rtol, atol=atol)
            np.testing.assert_allclose(fix, g - own[:, None], rtol=rtol, atol=atol)


def test_model_guiding_notebook_runs_at_smoke_size(run_notebook):
    _, outputs = run_notebook("model_guiding.ipynb")
    assert "worst-group" in outputs and "F_spu" in outputs


def test_regression_path_removes_spurious_dependence_on_credit_table():
    """Algorithm 1, regression: the expert marks gender irrelevant and gives clean limits on the audit
    set; the guided model's gender weight shrinks and the gender = 1 rows get the largest attribution change."""
    from repair_jax.guiding import GuidingConfig, model_guiding
    from repair_jax.guiding.carving import fit_linear_head
    from repair_jax.guiding.synthetic import credit_table
    from repair_jax.metrics import binary_auroc

    X, _, y_obs, noisy = credit_table(400, 0, noise_fraction=0.1)
    Xa, ya, _, _ = credit_table(60, 1, noise_fraction=0.0, spurious=0.0)
    theta = fit_linear_head(X, y_obs, "regression", 1, l2=1e-2)
    s = np.tile(np.array([1, 1, 0, 1, 0], np.float32), (60, 1))
    res = model_guiding({"z": X, "y": y_obs, "z_audit": Xa, "y_audit": ya, "a_audit": Xa, "s_audit": s,
                         "c_audit": np.ones(60, np.float32)}, theta,
                        GuidingConfig(BilevelConfig(gamma=0.5, fi_weight=0.1, outer_steps=60), budget=20),
                        "regression")
    assert abs(float(res.bilevel.theta["w"][4, 0])) < 0.5 * abs(float(theta["w"][4, 0]))
    assert float(binary_auroc(X[:, 4] > 0.5, res.spu_scores)) > 0.9
    assert float(binary_auroc(noisy, res.nl_scores)) > 0.8
    assert len(res.F_nl) <= 20
    np.testing.assert_allclose(res.suggested, y_obs + res.bilevel.delta, rtol=1e-6)

