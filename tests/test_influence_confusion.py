"""Influence on group confusion (soft type1conf / cd, Zhong et al. 2022, Sec. 2.2; Eq. 6.4 of Adebayo 2022): the soft metrics
against the hard ones, the quantity's gradient against finite differences and the influence against an
explicit Hessian and against retraining without the most harmful points; the CLI's --pair / --triplet."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from repair_jax.errors import UserError
from repair_jax.influence import (
    confusion_quantity, influence_up, s_test,
)
from repair_jax.influence.loo import remove_top_k
from repair_jax.metrics import (
    confusion_disparity, confusion_matrix, soft_cd, soft_type1conf, top_pairs, type1conf, type1conf_matrix,
)
from repair_jax.stats import pearson, spearman


def test_soft_confusion_on_one_hot_probabilities_equals_the_hard_metrics():
    rng = np.random.default_rng(0)
    y = jnp.asarray(rng.integers(0, 5, 200))
    pred = jnp.where(jnp.asarray(rng.random(200)) < 0.6, y, jnp.asarray(rng.integers(0, 5, 200)))
    y = y.at[:10].set(4)  # class 4 sits only in y[:10]
    onehot = jax.nn.one_hot(pred, 5)
    cm = confusion_matrix(y, pred, 5)
    err = type1conf_matrix(cm)
    for a, b, c in ((0, 1, 2), (1, 0, 4), (4, 2, 3), (3, 4, 0), (2, 2, 1)):
        np.testing.assert_allclose(soft_type1conf(onehot, y, a, b), type1conf(cm, a, b), atol=1e-7)
        np.testing.assert_allclose(soft_cd(onehot, y, a, b, c), confusion_disparity(err, a, b, c), atol=1e-7)
    # by the definition: P(a|b) = mean over true-b of p_a, averaged with P(b|a)
    probs = jax.nn.softmax(jnp.asarray(rng.normal(size=(200, 5))))
    p = np.asarray(probs)
    yy = np.asarray(y)
    ref = 0.5 * (p[yy == 1, 3].mean() + p[yy == 3, 1].mean())
    np.testing.assert_allclose(soft_type1conf(probs, y, 3, 1), ref, rtol=1e-6)
    t = lambda a, b: 0.5 * (p[yy == b, a].mean() + p[yy == a, b].mean())
    np.testing.assert_allclose(soft_cd(probs, y, 0, 2, 4), abs(t(0, 4) - t(2, 4)), rtol=1e-5)


@pytest.fixture(scope="module")
def fitted(digits):
    """L2-regularized softmax regression on 240 real digits (float64, L-BFGS to convergence)."""
    from repair_jax.influence.full_batch import fit_full_batch

    l2 = 0.01
    with jax.enable_x64(True):
        loss, params, gnorm, train = fit_full_batch(digits, digits.train.y, hidden=(), l2=l2, max_iter=2000, seed=0,
                                                    tol=1e-8, dtype=jnp.float64, train_limit=240)
        test = {"x": jnp.asarray(digits.test.x, jnp.float64), "y": jnp.asarray(digits.test.y)}
    assert gnorm < 1e-6
    return loss, params, train, test, l2


def test_confusion_quantity_gradient_matches_finite_differences(fitted):
    """The influence is s_test / influence_up on this q (checked against explicit Hessians in
    test_influence.py); what is new is q and its gradient."""
    loss, params, train, test, l2 = fitted
    with jax.enable_x64(True):
        flat, unravel = ravel_pytree(params)
        d = jax.random.normal(jax.random.PRNGKey(1), flat.shape, jnp.float64)
        for kw in ({"pair": (3, 8)}, {"triplet": (3, 5, 8)}):
            q = jax.jit(confusion_quantity(loss, test, **kw))
            g = ravel_pytree(jax.grad(q)(params))[0]
            fd = (q(unravel(flat + 1e-6 * d)) - q(unravel(flat - 1e-6 * d))) / 2e-6
            np.testing.assert_allclose(g @ d, fd, rtol=1e-5, atol=1e-10)
    for bad in ({"pair": (3, 3)}, {"pair": (3, 8), "triplet": (1, 2, 3)}, {}, {"triplet": (1, 2)}):
        with pytest.raises(UserError):
            confusion_quantity(loss, test, **bad)


def test_removing_the_most_harmful_points_changes_the_confusion_as_predicted(fitted):
    """Group removal: predicted sum -I_up/n over the k most harmful points vs. retraining without them."""
    loss, params, train, test, l2 = fitted
    with jax.enable_x64(True):
        probs = jax.nn.softmax(loss.logits(params, test["x"]))
        pred, actual = [], []
        for pr in top_pairs(type1conf_matrix(confusion_matrix(test["y"], probs.argmax(-1), 10)), 1):
            q = jax.jit(confusion_quantity(loss, test, pair=pr["classes"]))
            scores = influence_up(loss, params, train, s_test(loss, params, train, q, method="cg", l2=l2,
                                                              tol=1e-10).x)
            res = remove_top_k(loss, params, train, q, scores, (5, 10, 20), l2=l2)
            assert res["grad_norms"].max() < 1e-6
            pred += list(res["predicted"])
            actual += list(res["actual"])
    assert np.all(np.asarray(actual) < 0)  # removing harmful points lowers the confusion
    assert pearson(pred, actual) > 0.8 and spearman(pred, actual) > 0.5


def test_influence_cli_pair_and_triplet(tmp_path, capsys):
    from repair_jax.cli import main
    from repair_jax.runs import train_run
    from repair_jax.train import TrainConfig

    cfg = TrainConfig(model="mlp", model_kwargs={"hidden": ()}, epochs=2, l2=1e-3, seed=0, train_limit=150)
    train_run(cfg, tmp_path / "run", progress=False)
    run = str(tmp_path / "run")
    out = tmp_path / "pair"
    assert main(["influence", "--run", run, "--pair", "3,8", "--top", "6", "--split", "val", "--damping", "0.01",
                 "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["target"]["kind"] == "pair" and s["target"]["classes"] == [3, 8] and s["converged"]
    scores = np.load(out / "scores.npy")
    assert scores.shape == (s["num_train"],) and (out / "influence.png").stat().st_size > 0
    ranking = json.loads((out / "influence.json").read_text())
    assert [r["train_index"] for r in ranking] == list(np.argsort(-np.abs(scores), kind="stable")[:6])
    assert s["most_harmful"][0]["train_index"] == int(np.argmax(scores))
    assert main(["influence", "--run", run, "--triplet", "3,5,8", "--split", "val", "--damping", "0.01",
                 "--out", str(tmp_path / "tri")]) == 0
    assert json.loads((tmp_path / "tri" / "summary.json").read_text())["target"]["metric"] == "cd"
    for argv, msg in ((["--pair", "3,3"], "distinct"), (["--pair", "3,10"], "out of range"),
                      (["--pair", "3,8", "--test-index", "0"], "not both"),
                      (["--pair", "3,8", "--metric", "ece", "--group", "all"], "not both"),
                      (["--triplet", "1,2"], "3 classes"), (["--pair", "1,2", "--triplet", "1,2,3"], "not both")):
        capsys.readouterr()
        assert main(["influence", "--run", run, "--out", str(tmp_path / "bad")] + argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and msg in err
    assert not (tmp_path / "bad").exists()
