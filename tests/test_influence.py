"""Per-example gradients, inverse-HVP solvers, influence functions (Adebayo 2022, Ch. 3.4, 6.4), the group
disparity metrics and the influence CLI, each against a reference: vmap(grad), explicit Hessians,
leave-one-out retraining, scikit-learn, finite differences."""

import os

os.environ.setdefault("TQDM_DISABLE", "1")

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from repair_jax.errors import UserError
from repair_jax.influence import (
    ClassifierLoss, InfluenceWarning, group_disparity_quantity, influence_pert_loss,
    influence_pert_loss_y, influence_up_disparity, influence_up_loss, influence_up_params, inverse_hvp,
    label_flip_scores, make_hvp, per_example_grad_dot, per_example_grads, tracin,
)
from repair_jax.influence.loo import leave_one_out
from repair_jax.stats import pearson
from repair_jax.models import create_model, init_variables


def _model(name, kw, shape=(8, 8, 1), seed=0, bn_shift=0.0):
    m = create_model(name, 10, **kw)
    v = init_variables(m, jax.random.PRNGKey(seed), shape)
    bs = jax.tree_util.tree_map(lambda a: a + bn_shift, v["batch_stats"])
    return m, v["params"], ClassifierLoss(m.apply, bs)


def _batch(n, shape=(8, 8, 1), seed=1):
    x = jax.random.uniform(jax.random.PRNGKey(seed), (n, *shape))
    return {"x": x, "y": jnp.arange(n) % 10}


@pytest.mark.parametrize("name,kw", [("mlp", {"hidden": (32, 16)}), ("cnn", {"width": 4, "dense": 8})])
def test_layerwise_per_example_grads_equal_vmap_grad(name, kw):
    # the CNN has Conv, eval-mode BatchNorm (shifted running stats) and Dense layers
    m, params, loss = _model(name, kw, bn_shift=0.3)
    b = _batch(13)
    fast = per_example_grads(loss, params, b, chunk_size=5, flat=True)  # 3 chunks, the last padded
    ref = per_example_grads(loss, params, b, method="vmap", flat=True)
    assert fast.shape == (13, ravel_pytree(params)[0].shape[0])
    np.testing.assert_allclose(fast, ref, rtol=1e-4, atol=1e-5)
    g3 = jax.grad(lambda p: loss(p, jax.tree_util.tree_map(lambda a: a[3:4], b))[0])(params)
    np.testing.assert_allclose(fast[3], ravel_pytree(g3)[0], rtol=1e-4, atol=1e-5)
    tree = per_example_grads(loss, params, b, method="vmap")  # the pytree form, rows = flat rows
    np.testing.assert_allclose(jax.vmap(lambda t: ravel_pytree(t)[0])(tree), ref, rtol=1e-6)


def test_conv_with_stride_and_bias_equals_vmap_grad():
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            h = nn.relu(nn.Conv(3, (3, 3), strides=(2, 2), padding="VALID")(x))
            h = nn.relu(nn.Conv(4, (2, 2), padding=1, kernel_dilation=(2, 2))(h))
            h = nn.LayerNorm()(h)  # not intercepted: falls back to vmap(grad) for its parameters
            return nn.Dense(10)(h.reshape(h.shape[0], -1)), h

    m = Net()
    params = m.init(jax.random.PRNGKey(0), jnp.zeros((1, 9, 9, 2)))["params"]
    loss = ClassifierLoss(m.apply)
    b = _batch(6, (9, 9, 2))
    fast = per_example_grads(loss, params, b, flat=True)
    ref = per_example_grads(loss, params, b, flat=True, method="vmap")
    np.testing.assert_allclose(fast, ref, rtol=1e-4, atol=1e-5)


def test_forward_mode_grad_dot_equals_explicit_dot_products():
    m, params, loss = _model("mlp", {"hidden": (32, 16)})
    b = _batch(11)
    v = jax.tree_util.tree_map(lambda a: jax.random.normal(jax.random.PRNGKey(a.size), a.shape), params)
    g = per_example_grads(loss, params, b, flat=True, method="vmap")
    for chunk in (4, 11, None):  # padded last chunk, exact single chunk, default
        d = per_example_grad_dot(loss, params, b, v, chunk_size=chunk)
        assert d.shape == (11,)
        np.testing.assert_allclose(d, g @ ravel_pytree(v)[0], rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- logistic regression on digits

def test_explicit_cg_lissa_agree(logreg):
    loss, params, train, test, l2, hess = logreg
    with jax.enable_x64(True):
        b = jax.grad(lambda p: jnp.mean(loss(p, test)))(params)
        res = {mth: inverse_hvp(loss, params, train, b, method=mth, l2=l2, tol=1e-6 if mth != "lissa" else 1e-5,
                                max_iter=20000 if mth == "lissa" else None, hessian=hess)
               for mth in ("explicit", "cg", "lissa")}
        x = {k: ravel_pytree(r.x)[0] for k, r in res.items()}
    for r in res.values():
        assert r.converged and r.residual <= r.tol and r.iterations >= 1
    rel = lambda a, c: float(jnp.linalg.norm(a - c) / jnp.linalg.norm(c))
    # relative error of the solutions against the explicit solve: CG < 1e-5, LiSSA < 1e-3
    assert rel(x["cg"], x["explicit"]) < 1e-5
    assert rel(x["lissa"], x["explicit"]) < 1e-3


def test_hvp_matches_dense_hessian(logreg):
    loss, params, train, test, l2, hess = logreg
    with jax.enable_x64(True):
        flat, unravel = ravel_pytree(params)
        # closed form for softmax regression: (1/n) sum_i (diag p_i - p_i p_i^T) (x) [1; x_i][1; x_i]^T + l2 I
        X = np.asarray(train["x"]).reshape(240, -1)
        P = np.asarray(jax.nn.softmax(loss.logits(params, train["x"])))
        A = np.einsum("nk,kl->nkl", P, np.eye(10)) - np.einsum("nk,nl->nkl", P, P)
        U = np.concatenate([np.ones((240, 1)), X], 1)  # ravel order: bias (10), then kernel (64, 10)
        h_ref = np.einsum("nd,ne,nkl->dkel", U, U, A).reshape(650, 650) / 240 + l2 * np.eye(650)
        np.testing.assert_allclose(hess, h_ref, rtol=1e-8, atol=1e-10)
        v = jax.random.normal(jax.random.PRNGKey(3), flat.shape, jnp.float64)
        hv = ravel_pytree(make_hvp(loss, params, train, l2=l2, damping=0.1, chunk_size=70)(unravel(v)))[0]
        np.testing.assert_allclose(hv, h_ref @ v + 0.1 * v, rtol=1e-8, atol=1e-10)


def test_influence_functions_equal_explicit_formulas(logreg):
    loss, params, train, test, l2, hess = logreg
    with jax.enable_x64(True):
        flat, unravel = ravel_pytree(params)
        hinv = jnp.linalg.inv(hess)
        one = {"x": test["x"][:1], "y": test["y"][:1]}
        g_t = ravel_pytree(jax.grad(lambda p: loss(p, one)[0])(params))[0]
        G = per_example_grads(loss, params, train, flat=True, method="vmap")
        # Eq. 3.1/6.2
        scores, r = influence_up_loss(loss, params, train, one, method="cg", l2=l2, tol=1e-8)
        np.testing.assert_allclose(scores, -G @ (hinv @ g_t), rtol=1e-5, atol=1e-9)
        # Eq. 6.1
        (p5,) = influence_up_params(loss, params, train, [5], method="explicit", l2=l2, hessian=hess)
        np.testing.assert_allclose(ravel_pytree(p5)[0], -hinv @ G[5], rtol=1e-6, atol=1e-10)
        # Eq. 3.3: -g_t^T H^-1 d/dx grad_theta l(z_j), against the explicit mixed Jacobian of point 7
        pert, _ = influence_pert_loss(loss, params, train, one, method="explicit", l2=l2, hessian=hess)
        gx = lambda x: ravel_pytree(jax.grad(lambda p: loss(p, {"x": x[None], "y": train["y"][7:8]})[0])(params))[0]
        J = jax.jacfwd(gx)(train["x"][7]).reshape(flat.size, -1)  # (P, D)
        np.testing.assert_allclose(pert[7].reshape(-1), -(hinv @ g_t) @ J, rtol=1e-5, atol=1e-10)
        # Eq. 6.3: the same with respect to the one-hot label
        pert_y, _ = influence_pert_loss_y(loss, params, train, one, 10, method="explicit", l2=l2, hessian=hess)
        gy = lambda y: ravel_pytree(jax.grad(lambda p: loss(p, {"x": train["x"][7:8], "y": y[None]})[0])(params))[0]
        Jy = jax.jacfwd(gy)(jax.nn.one_hot(train["y"][7], 10, dtype=jnp.float64))
        np.testing.assert_allclose(pert_y[7], -(hinv @ g_t) @ Jy, rtol=1e-5, atol=1e-10)
        s = label_flip_scores(pert_y, train["y"])
        k = int(train["y"][7])
        np.testing.assert_allclose(s[7], max(pert_y[7, k] - pert_y[7, j] for j in range(10) if j != k))


def test_disparity_influence_is_the_chain_rule(logreg):
    loss, params, train, test, l2, hess = logreg
    with jax.enable_x64(True):
        mask = (test["y"] == 3).astype(jnp.float64)
        flat, unravel = ravel_pytree(params)
        G = per_example_grads(loss, params, train, flat=True)
        for metric in ("ece", "brier", "fpr", "fnr", "er"):
            q = group_disparity_quantity(loss, test, metric, mask, positive=3)
            scores, r = influence_up_disparity(loss, params, train, q, method="explicit", l2=l2, hessian=hess)
            g = ravel_pytree(jax.grad(q)(params))[0]
            expect = -G @ jnp.linalg.solve(hess, g)
            np.testing.assert_allclose(scores, expect, rtol=1e-5, atol=1e-10)
            if metric != "ece":  # differentiable everywhere: check grad q by a finite difference
                d = jax.random.normal(jax.random.PRNGKey(1), flat.shape, jnp.float64)
                fd = (q(unravel(flat + 1e-6 * d)) - q(unravel(flat - 1e-6 * d))) / 2e-6
                np.testing.assert_allclose(g @ d, fd, rtol=1e-5, atol=1e-9)


def test_leave_one_out_logistic_regression_pearson(logreg):
    """Koh & Liang's check: predicted -I_up,loss/n vs. actual change on retraining without the point."""
    loss, params, train, test, l2, hess = logreg
    with jax.enable_x64(True):
        one = {"x": test["x"][:1], "y": test["y"][:1]}
        scores, _ = influence_up_loss(loss, params, train, one, method="cg", l2=l2, tol=1e-8)
        pred = -np.asarray(scores) / 240
        top = np.argsort(-np.abs(pred))[:8]
        res = leave_one_out(loss, params, train, lambda p: jnp.mean(loss(p, one)), top, l2=l2)
    assert res["grad_norms"].max() < 1e-6
    assert pearson(pred[top], res["actual"]) >= 0.95


def test_tracin_is_a_sum_of_weighted_dot_products():
    m, params, loss = _model("mlp", {"hidden": (8,)})
    _, params2, _ = _model("mlp", {"hidden": (8,)}, seed=1)
    b, t = _batch(9), _batch(2, seed=5)
    got = tracin(loss, [params, params2], [0.1, 0.05], b, test_batch=t)
    expect = 0
    for p, lr in ((params, 0.1), (params2, 0.05)):
        G = per_example_grads(loss, p, b, flat=True, method="vmap")
        gt = ravel_pytree(jax.grad(lambda q: jnp.mean(loss(q, t)))(p))[0]
        expect = expect + lr * G @ gt
    np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-6)


def test_non_converged_and_diverging_solves_are_reported(logreg):
    loss, params, train, test, l2, hess = logreg
    with jax.enable_x64(True):
        b = jax.grad(lambda p: jnp.mean(loss(p, test)))(params)
        with pytest.warns(InfluenceWarning, match="did not converge"):
            r = inverse_hvp(loss, params, train, b, method="cg", l2=l2, max_iter=2)
        assert not r.converged and r.iterations == 2 and np.isfinite(r.residual)
        with pytest.raises(UserError, match="diverged"):  # scale far below the largest eigenvalue
            inverse_hvp(loss, params, train, b, method="lissa", l2=l2, scale=1e-3, max_iter=500)
    with pytest.raises(UserError, match="empty"):
        group_disparity_quantity(loss, test, "ece", np.zeros(60))
    with pytest.raises(UserError, match="unknown"):
        inverse_hvp(loss, params, train, b, method="newton")


# ----------------------------------------------------------------------------- metrics vs scikit-learn

def test_group_metrics_against_sklearn_and_formulas(rng):
    from sklearn.metrics import accuracy_score, brier_score_loss, confusion_matrix

    from repair_jax.metrics import (brier_score, error_rate, expected_calibration_error, false_negative_rate,
                                    false_positive_rate, generalized_fnr, generalized_fpr, group_disparity,
                                    group_disparity_hard, soft_error_rate)
    logits = rng.normal(size=(300, 4)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = rng.integers(0, 4, 300)
    mask = rng.random(300) < 0.4
    pj, yj, mj = jnp.asarray(probs, jnp.float32), jnp.asarray(y), jnp.asarray(mask)
    ps, ys = probs[mask], y[mask]
    pred = ps.argmax(1)
    # ECE: the binned formula of Adebayo 2022, App. B.1.3, computed by a loop
    conf = ps.max(1)
    ece = 0.0
    for mbin in range(10):
        inb = (conf > mbin / 10) & (conf <= (mbin + 1) / 10)
        if inb.any():
            ece += inb.sum() / len(ys) * abs(conf[inb].mean() - (pred[inb] == ys[inb]).mean())
    np.testing.assert_allclose(expected_calibration_error(pj, yj, mj), ece, rtol=1e-5)
    # binary Brier score = scikit-learn's brier_score_loss for the positive class
    np.testing.assert_allclose(brier_score(pj, yj, mj, 2), brier_score_loss(ys == 2, ps[:, 2]), rtol=1e-5)
    np.testing.assert_allclose(brier_score(pj, yj, mj), np.mean(((ps - np.eye(4)[ys]) ** 2).sum(1)), rtol=1e-5)
    tn, fp, fn, tp = confusion_matrix(ys == 2, pred == 2).ravel()
    np.testing.assert_allclose(false_positive_rate(yj, pj.argmax(1), mj, 2), fp / (fp + tn), rtol=1e-6)
    np.testing.assert_allclose(false_negative_rate(yj, pj.argmax(1), mj, 2), fn / (fn + tp), rtol=1e-6)
    np.testing.assert_allclose(error_rate(yj, pj.argmax(1), mj), 1 - accuracy_score(ys, pred), rtol=1e-6)
    np.testing.assert_allclose(generalized_fpr(pj, yj, mj, 2), ps[ys != 2, 2].mean(), rtol=1e-5)
    np.testing.assert_allclose(generalized_fnr(pj, yj, mj, 2), (1 - ps[ys == 2, 2]).mean(), rtol=1e-5)
    np.testing.assert_allclose(soft_error_rate(pj, yj, mj), 1 - ps[np.arange(len(ys)), ys].mean(), rtol=1e-5)
    np.testing.assert_allclose(group_disparity_hard("fpr", pj, yj, mj, 2), fp / (fp + tn), rtol=1e-6)
    assert float(group_disparity("ece", pj, yj, jnp.zeros(300))) == 0.0  # empty group: 0, not NaN


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ----------------------------------------------------------------------------- CLI

def test_influence_cli(tmp_path, digits):
    import json

    from repair_jax.cli import main
    from repair_jax.runs import train_run
    from repair_jax.train import TrainConfig

    # a linear softmax model: with l2 > 0 the objective is strictly convex, so solvers must agree
    cfg = TrainConfig(model="mlp", model_kwargs={"hidden": ()}, epochs=3, l2=1e-3, seed=0, train_limit=200)
    train_run(cfg, tmp_path / "run", progress=False)
    out = tmp_path / "inf"
    assert main(["influence", "--run", str(tmp_path / "run"), "--test-index", "4", "--top", "7",
                 "--method", "explicit", "--damping", "0.05", "--out", str(out)]) == 0
    ranking = json.loads((out / "influence.json").read_text())
    assert len(ranking) == 7 and set(ranking[0]) == {"train_index", "score"}
    mags = [abs(r["score"]) for r in ranking]
    assert mags == sorted(mags, reverse=True)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["solver"]["converged"] and (out / "influence.png").stat().st_size > 0
    # the same ranking from CG
    out2 = tmp_path / "inf2"
    assert main(["influence", "--run", str(tmp_path / "run"), "--test-index", "4", "--top", "7",
                 "--damping", "0.05", "--tol", "1e-6", "--out", str(out2)]) == 0
    r2 = json.loads((out2 / "influence.json").read_text())
    assert [r["train_index"] for r in r2[:3]] == [r["train_index"] for r in ranking[:3]]
    assert main(["influence", "--run", str(tmp_path / "run"), "--metric", "ece", "--group", "intensity>0.3",
                 "--out", str(tmp_path / "inf3")]) == 0
    assert main(["influence", "--run", str(tmp_path / "run"), "--test-index", "4", "--method", "tracin",
                 "--out", str(tmp_path / "inf4")]) == 0
    tr = json.loads((tmp_path / "inf4" / "summary.json").read_text())
    assert tr["solver"]["method"] == "tracin" and len(tr["most_harmful"]) == 20
    assert main(["influence", "--run", str(tmp_path / "run"), "--test-index", "99999",
                 "--out", str(tmp_path / "bad")]) == 2
    assert main(["influence", "--run", str(tmp_path / "run"), "--metric", "fpr",
                 "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()


def test_tracincp_over_kept_checkpoints(tmp_path, capsys):
    """``train --checkpoint-every`` keeps the weights every K epochs and the last, with the step size of
    each epoch's last step; ``influence --method tracin`` sums over them, each checkpoint with its own
    BatchNorm statistics, and equals the sum written out with vmap(grad) gradients."""
    import json

    from repair_jax.cli import main
    from repair_jax.runs import train_run
    from repair_jax.runs import load_run
    from repair_jax.train import TrainConfig, learning_rate_at, steps_per_epoch

    cfg = TrainConfig(model="cnn", model_kwargs={"width": 2, "dense": 8}, epochs=3, batch_size=50,
                      schedule="cosine", lr=1e-2, seed=0, train_limit=100)
    train_run(cfg, tmp_path / "run", progress=False, checkpoint_every=2)
    run = load_run(tmp_path / "run")
    kept = run.epoch_checkpoints()
    per_epoch = steps_per_epoch(cfg, 100)
    assert [r["epoch"] for r, _ in kept] == [2, 3] and per_epoch == 2
    assert [r["learning_rate"] for r, _ in kept] == [learning_rate_at(cfg, 6, 3), learning_rate_at(cfg, 6, 5)]
    assert kept[0][1]["params"] is not None and kept[1][0]["learning_rate"] < kept[0][0]["learning_rate"]
    same = jax.tree_util.tree_map(np.array_equal, kept[1][1], run.variables)
    assert all(jax.tree_util.tree_leaves(same))  # the last kept checkpoint is the final model
    assert not np.array_equal(kept[0][1]["batch_stats"]["BatchNorm_0"]["mean"],
                              run.variables["batch_stats"]["BatchNorm_0"]["mean"])

    out = tmp_path / "inf"
    assert main(["influence", "--run", str(tmp_path / "run"), "--test-index", "3", "--method", "tracin",
                 "--top", "100", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["solver"]["checkpoints"] == 2 and summary["solver"]["epochs"] == [2, 3]
    got = {r["train_index"]: r["score"] for r in json.loads((out / "influence.json").read_text())}
    ds = run.dataset()
    train = {"x": jnp.asarray(ds.train.x), "y": jnp.asarray(ds.train.y)}
    t = {"x": jnp.asarray(ds.test.x[3:4]), "y": jnp.asarray(ds.test.y[3:4])}
    expect = 0.0
    for rec, v in kept:
        loss = ClassifierLoss(run.model.apply, v["batch_stats"])
        G = per_example_grads(loss, v["params"], train, flat=True, method="vmap")
        gt = ravel_pytree(jax.grad(lambda p: jnp.mean(loss(p, t)))(v["params"]))[0]
        expect = expect + rec["learning_rate"] * G @ gt
    idx = np.array(sorted(got))
    np.testing.assert_allclose([got[i] for i in idx], -np.asarray(expect)[idx], rtol=1e-3, atol=1e-7)

    # a corrupt kept checkpoint is a clear error; so are a bad --checkpoint-every and mismatched lists
    path = tmp_path / "run" / kept[0][0]["file"]
    path.write_bytes(path.read_bytes()[:-3] + b"xyz")
    with pytest.raises(UserError, match="checksum mismatch"):
        load_run(tmp_path / "run").epoch_checkpoints()
    capsys.readouterr()
    assert main(["train", "--checkpoint-every", "-1", "--out", str(tmp_path / "bad")]) == 2
    assert capsys.readouterr().err.startswith("repair-jax train: error: --checkpoint-every")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(UserError, match="1 loss functions for 2 checkpoints"):
        tracin([ClassifierLoss(run.model.apply, kept[0][1]["batch_stats"])], [kept[0][1]["params"]] * 2,
               [0.1, 0.1], train, test_batch=t)


def test_influence_notebook_runs_at_smoke_size(run_notebook):
    _, outputs = run_notebook("influence.ipynb", timeout=300)
    assert "most responsible for the group's ECE" in outputs and "CG:" in outputs


SHARDED_GRADS_SCRIPT = """
import os
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
import jax, jax.numpy as jnp, numpy as np
from repair_jax.data import load_dataset
from repair_jax.models import create_model, init_variables
from repair_jax.influence import ClassifierLoss, per_example_grads
assert jax.local_device_count() == 4
ds = load_dataset("digits", seed=0)
model = create_model("cnn", 10, width=4, dense=8)
v = init_variables(model, jax.random.PRNGKey(0), ds.input_shape)
loss = ClassifierLoss(model.apply, v["batch_stats"])
batch = {"x": jnp.asarray(ds.test.x[:16]), "y": jnp.asarray(ds.test.y[:16])}
g = per_example_grads(loss, v["params"], batch, chunk_size=8, flat=True)
ref = np.stack([np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(
    jax.grad(lambda p: loss(p, {"x": batch["x"][i:i+1], "y": batch["y"][i:i+1]})[0])(v["params"]))])
    for i in range(16)])
print("MAXDIFF", float(np.max(np.abs(np.asarray(g) - ref))), "SCALE", float(np.max(np.abs(ref))))
"""


def test_per_example_grads_sharded_over_four_devices_equal_reference():
    import os
    import subprocess
    import sys
    env = dict(os.environ, JAX_PLATFORMS="cpu")  # the script adds the device count to the inherited XLA_FLAGS
    r = subprocess.run([sys.executable, "-c", SHARDED_GRADS_SCRIPT], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    diff = float(r.stdout.split("MAXDIFF")[1].split()[0])
    scale = float(r.stdout.split("SCALE")[1])
    assert diff <= 1e-5 * max(scale, 1.0)


# ----------------------------------------------------------------------------- issue 12, point 4

def test_lissa_divergence_is_reported_as_diverged():
    """H = diag(1, -0.001), b = (0, 1): x = (0, -1000). LiSSA's recursion grows without bound along the
    negative eigenvalue (main returned ~ +93,094 as 'approximate, raise the iteration limit')."""
    h = jnp.array([1.0, -0.001])
    loss = lambda p, batch: jnp.full(batch["x"].shape[:1], 0.5 * jnp.sum(h * p["w"] ** 2))
    batch, b = {"x": jnp.zeros((1, 1))}, {"w": jnp.array([0.0, 1.0])}
    with pytest.warns(InfluenceWarning) as caught:
        r = inverse_hvp(loss, {"w": jnp.zeros(2)}, batch, b, method="lissa")
    msg = " ".join(str(w.message) for w in caught)
    assert r.status == "diverged" and not r.converged and "diverged" in msg
    assert "raise the iteration limit" not in msg and "negative eigenvalue" in msg
    x = ravel_pytree(r.x)[0]
    assert r.residual == pytest.approx(float(jnp.linalg.norm(h * x - jnp.array([0.0, 1.0]))), rel=1e-5)
    assert r.residual > 1  # worse than returning x = 0
    # CG solves this small indefinite system exactly (one Krylov direction): converged, x = -1000
    r = inverse_hvp(loss, {"w": jnp.zeros(2)}, batch, b, method="cg")
    assert r.status == "converged"
    np.testing.assert_allclose(ravel_pytree(r.x)[0], [0.0, -1000.0], rtol=1e-5)


def test_the_one_cg_is_jittable_on_pytrees_and_equals_a_direct_solve(rng):
    from repair_jax.influence import cg_solve_tree

    a = rng.normal(size=(7, 7))
    spd = jnp.asarray(a @ a.T + 0.5 * np.eye(7), jnp.float32)
    b = {"u": jnp.asarray(rng.normal(size=3), jnp.float32), "v": jnp.asarray(rng.normal(size=4), jnp.float32)}
    flat, unravel = ravel_pytree(b)
    matvec = lambda t: unravel(spd @ ravel_pytree(t)[0])
    x = jax.jit(lambda bb: cg_solve_tree(matvec, bb, tol=1e-6, maxiter=100))(b)
    np.testing.assert_allclose(ravel_pytree(x)[0], np.linalg.solve(np.asarray(spd, np.float64), flat),
                               rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def relu_run(tmp_path_factory):
    """A 64-16-10 ReLU MLP trained without L2 (train's default) on 200 digits: main's damping 0.01 left
    CG at a relative residual of 0.86 and 2.5 here."""
    from repair_jax.runs import train_run
    from repair_jax.train import TrainConfig

    path = tmp_path_factory.mktemp("relu") / "run"
    cfg = TrainConfig(model="mlp", model_kwargs={"hidden": (16,)}, epochs=40, lr=1e-2, seed=0, train_limit=200)
    train_run(cfg, path, progress=False)
    return path


def test_influence_defaults_converge_and_write_all_scores(relu_run, tmp_path):
    import json
    import warnings

    from repair_jax.cli import main
    from repair_jax.runs import load_run

    out = tmp_path / "inf"
    assert main(["influence", "--run", str(relu_run), "--test-index", "0", "--top", "5", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["converged"] and s["status"] == "converged" and s["dtype"] == "float32"
    assert s["solver"]["residual"] <= s["solver"]["tol"]
    assert s["solver"]["damping"] == pytest.approx(0.01 * s["solver"]["largest_eigenvalue"], rel=0.05)
    scores = np.load(out / "scores.npy")
    ranking = json.loads((out / "influence.json").read_text())
    run = load_run(relu_run)
    ds, state = run.dataset(), run.state()
    assert scores.shape == (len(ds.train),) and s["num_train"] == len(ds.train) and len(ranking) == 5
    assert [r["train_index"] for r in ranking] == list(np.argsort(-np.abs(scores), kind="stable")[:5])
    # the scores are I_up with the reported damping: against the explicit Hessian of the run
    loss = ClassifierLoss.from_state(state)
    train = {"x": jnp.asarray(ds.train.x), "y": jnp.asarray(ds.train.y)}
    one = {"x": jnp.asarray(ds.test.x[:1]), "y": jnp.asarray(ds.test.y[:1])}
    with warnings.catch_warnings():  # H + damping I keeps a tiny negative eigenvalue here; the solve is exact
        warnings.simplefilter("ignore", InfluenceWarning)
        ref, _ = influence_up_loss(loss, state.params, train, one, method="explicit", damping=s["solver"]["damping"])
    np.testing.assert_allclose(scores, ref, rtol=2e-3, atol=2e-3 * float(np.abs(ref).max()))


def test_influence_not_converged_exits_3_unless_allow_inexact(relu_run, tmp_path, capsys):
    import json

    from repair_jax.cli import main
    from repair_jax.influence import plot_title

    args = ["influence", "--run", str(relu_run), "--test-index", "0", "--max-iter", "2"]
    capsys.readouterr()
    assert main(args + ["--out", str(tmp_path / "a")]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("repair-jax influence: error: the cg solve not converged (relative residual")
    s = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert not s["converged"] and s["solver"]["status"] in ("not_converged", "diverged")
    assert np.isfinite(s["solver"]["residual"]) and (tmp_path / "a" / "scores.npy").exists()
    assert plot_title(s).startswith("NOT CONVERGED")
    assert main(args + ["--allow-inexact", "--out", str(tmp_path / "b")]) == 0


def test_influence_flags_are_checked_before_loading(tmp_path, capsys):
    from repair_jax.cli import main

    missing = str(tmp_path / "no-such-run")
    for argv, msg in ((["--test-index", "0", "--metric", "ece", "--group", "all"], "not both"),
                      ([], "pass test_index"),
                      (["--metric", "fpr", "--group", "all"], "needs positive"),
                      (["--metric", "ece"], "pass --group"),
                      (["--pair", "1,2,3"], "--pair needs 2 classes"),
                      (["--test-index", "x"], "bad --test-index"),
                      (["--metric", "ece", "--group", "colour=3"], "bad --group"),
                      (["--test-index", "0", "--damping", "0.1", "--relative-damping", "0.1"], "not both"),
                      (["--test-index", "0", "--tol", "0"], "tol must be positive")):
        capsys.readouterr()
        assert main(["influence", "--run", missing, "--out", str(tmp_path / "o")] + argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and msg in err and "not found" not in err
    assert not (tmp_path / "o").exists()


def test_float32_underflow_is_detected_and_x64_computes_in_float64(relu_run, tmp_path):
    import json

    from repair_jax.cli import main
    from repair_jax.influence import float32_loss_underflow
    from repair_jax.influence.workflow import _test_loss_target
    from repair_jax.runs import load_run

    # a confident point: logit margin 20 over 9 classes; float32 cross-entropy is exactly 0
    z = jnp.zeros((1, 10), jnp.float32).at[0, 3].set(20.0)
    l32 = float(ClassifierLoss(lambda p, s, x, train: (x, None, s))({}, {"x": z, "y": jnp.array([3])})[0])
    with jax.enable_x64(True):
        l64 = float(ClassifierLoss(lambda p, s, x, train: (x, None, s))(
            {}, {"x": jnp.asarray(z, jnp.float64), "y": jnp.array([3])})[0])
    assert l32 == 0.0 and l64 > 0
    assert float32_loss_underflow(z[0], 3, l32) == pytest.approx(l64, rel=1e-10)
    assert float32_loss_underflow(z[0], 3, l64) is None
    # the workflow warns for such a test point and not in float64: the run's output layer scaled so that the
    # most confident test point's smallest logit margin is 23 (loss ~ 1e-10: 0 in float32, resolved in float64)
    run = load_run(relu_run)
    ds, state = run.dataset(), run.state()
    loss = ClassifierLoss.from_state(state)
    logits = np.sort(np.asarray(loss.logits(state.params, jnp.asarray(ds.test.x))), 1)
    i = int(np.argmax(logits[:, -1] - logits[:, -2]))
    params = dict(state.params)
    last = max((k for k in params if k.startswith("Dense_")), key=lambda k: int(k.split("_")[1]))
    params[last] = jax.tree_util.tree_map(lambda a: a * 23 / (logits[i, -1] - logits[i, -2]), params[last])
    _, target, warns = _test_loss_target(loss, params, ds.test, i, jnp.float32)
    assert target["predicted"] == target["label"] and target["value"] == 0.0
    assert 1e-12 < target["accurate_value"] < 1e-8 and "x64" in warns[0]
    with jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
        _, t64, w64 = _test_loss_target(loss, p64, ds.test, i, jnp.float64)
    assert not w64 and t64["value"] == pytest.approx(target["accurate_value"], rel=1e-3)
    # --x64 runs the whole computation in float64
    out = tmp_path / "x64"
    assert main(["influence", "--run", str(relu_run), "--test-index", "0", "--x64", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["dtype"] == "float64" and s["converged"] and s["solver"]["tol"] == 1e-5
    assert np.load(out / "scores.npy").dtype == np.float64
