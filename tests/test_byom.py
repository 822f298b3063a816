"""Bring your own model: an NNX CNN with nnx.BatchNorm, a linen CNN returning logits only and a plain
function, each trained by its own optax loop (tests/byom_models.py), through every package of the
library with zero adapter lines beyond from_nnx / from_linen / from_apply_fn."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import flax.serialization
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from sklearn.metrics import accuracy_score, confusion_matrix

import repair_jax as rj
from repair_jax.errors import UserError
from repair_jax.influence import ClassifierLoss, confusion_quantity, influence_up, s_test
from repair_jax.repair import RepairConfig, Targets, i_repair, mm_repair, run_study
from repair_jax.repair.irepair import IRepairConfig

sys.path.insert(0, str(Path(__file__).parent))
import byom_models as bm  # noqa: E402

SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def models(digits):
    """The three user models, trained on digits in their own loops, as Classifiers."""
    x, y = digits.train.x, digits.train.y
    nnx_model = bm.train_nnx(bm.nnx_cnn(), x, y)
    linen_vars = bm.train_linen(bm.linen_cnn(), x, y)
    fn_params = bm.train_function(x, y)
    return {
        "nnx": rj.from_nnx(nnx_model, input_shape=SHAPE),
        "linen": rj.from_linen(bm.linen_cnn(), linen_vars, input_shape=SHAPE),
        "function": rj.from_apply_fn(bm.softmax_regression, fn_params, input_shape=SHAPE),
    }


def test_adapters_describe_the_models(models):
    assert {k: (c.kind, c.num_classes, c.has_features, c.has_batch_norm) for k, c in models.items()} == {
        "nnx": ("nnx", 10, True, True), "linen": ("linen", 10, True, True),
        "function": ("function", 10, False, False)}
    assert list(models["nnx"].layers(conv_only=True)) == ["conv1", "conv2"]
    assert list(models["linen"].layers(conv_only=True)) == ["Conv_0", "Conv_1"]


@pytest.mark.parametrize("kind", ["nnx", "linen", "function"])
def test_diagnose_any_model_against_sklearn(models, digits, kind):
    d = rj.diagnose(models[kind], digits, split="test")
    pred = np.asarray(models[kind].logits(digits.test.x)).argmax(-1)
    assert d["accuracy"] == pytest.approx(accuracy_score(digits.test.y, pred))
    np.testing.assert_array_equal(np.asarray(d["confusion_matrix"]), confusion_matrix(digits.test.y, pred, labels=range(10)))
    assert d["accuracy"] > 0.8
    again = rj.diagnose_arrays(digits.test.y, models[kind].logits(digits.test.x), digits.class_names)
    assert again["top_pairs"] == d["top_pairs"] and again["macro_f1"] == pytest.approx(d["macro_f1"])


def test_diagnose_arrays_refuses_mismatched_inputs(digits):
    with pytest.raises(UserError, match="shape"):
        rj.diagnose_arrays(digits.test.y, np.zeros((len(digits.test.y), 3)), digits.class_names)
    with pytest.raises(UserError, match="non-finite"):
        rj.diagnose_arrays([0, 1], [[np.nan, 0.0], [0.0, 1.0]], ["a", "b"])


def test_two_examples_predict_two_labels(models, digits):
    from repair_jax.train import create_train_state, predict_labels
    state = create_train_state(models["linen"], optax.identity())
    assert predict_labels(state, digits.test.x[:2]).shape == (2,)


def test_export_gives_the_users_own_objects_back(models, digits):
    m = models["nnx"].export()
    assert isinstance(m, bm.NNXCNN)
    m.eval()
    np.testing.assert_allclose(m(jnp.asarray(digits.test.x[:5])), models["nnx"].logits(digits.test.x[:5]), atol=1e-6)
    v = models["linen"].export()
    np.testing.assert_allclose(bm.linen_cnn().apply(v, digits.test.x[:5]), models["linen"].logits(digits.test.x[:5]),
                               atol=1e-6)


# ----------------------------------------------------------------------------- w-bn on flax's BatchNorm

def test_weighted_batch_norm_equals_repair_jaxs_own_on_flax_layers():
    """One BatchNorm layer with identical weights, statistics and example weights: repair_jax's own
    weighted BatchNorm, flax.linen.BatchNorm (intercepted) and flax.nnx.BatchNorm (substituted) give
    the same output and the same updated running averages (Zhong et al. 2022, Sec. 3.3)."""
    from repair_jax.models import BatchNorm as OwnBN

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(6, 4, 4, 3)), jnp.float32)
    w = jnp.asarray([1.0, 1.0, 0.2, 0.2, 0.2, 1.0])
    scale, bias = jnp.asarray([1.5, 0.5, 2.0]), jnp.asarray([0.1, -0.2, 0.3])
    mean0, var0 = jnp.asarray([0.2, -0.1, 0.0]), jnp.asarray([1.2, 0.8, 1.0])

    own_vars = {"params": {"scale": scale, "bias": bias}, "batch_stats": {"mean": mean0, "var": var0}}
    own, own_upd = OwnBN(momentum=0.9).apply(own_vars, x, True, w, mutable=["batch_stats"])

    class LinenBN(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            return nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)

    lv = {"params": {"BatchNorm_0": {"scale": scale, "bias": bias}},
          "batch_stats": {"BatchNorm_0": {"mean": mean0, "var": var0}}}
    lin = rj.from_linen(LinenBN(), lv)
    out_l, _, st_l = lin.apply(lin.params, lin.state, x, train=True, sample_weight=w)

    class NNXBN(nnx.Module):
        def __init__(self):
            self.bn = nnx.BatchNorm(3, momentum=0.9, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return self.bn(x)

    m = NNXBN()
    m.bn.scale[...], m.bn.bias[...], m.bn.mean[...], m.bn.var[...] = scale, bias, mean0, var0
    nx = rj.from_nnx(m)
    out_n, _, st_n = nx.apply(nx.params, nx.state, x, train=True, sample_weight=w)

    for out, stats in ((out_l, st_l["BatchNorm_0"]), (out_n, st_n["bn"])):
        np.testing.assert_allclose(out, own, atol=1e-5)
        np.testing.assert_allclose(stats["mean"], own_upd["batch_stats"]["mean"], atol=1e-6)
        np.testing.assert_allclose(stats["var"], own_upd["batch_stats"]["var"], atol=1e-6)
    plain, _, _ = lin.apply(lin.params, lin.state, x, train=True)
    assert float(jnp.abs(plain - out_l).max()) > 1e-3  # the weights matter


# ----------------------------------------------------------------------------- WR, I-REPAIR, MM

WR = ("orig", "orig-ft", "w-aug", "w-bn", "w-os", "w-loss", "w-dbr")


@pytest.mark.parametrize("kind", ["nnx", "linen"])
def test_all_five_wr_methods_on_user_models(models, digits, tmp_path, kind):
    cfg = RepairConfig(epochs=1, lr=3e-4, seeds=1, rhos=(0.5,), methods=WR)
    s = run_study(models[kind], digits, Targets(((3, 5),)), tmp_path / kind, cfg, progress=False, plots=False)
    ran = {r["method"] for r in (json.loads(line) for line in (tmp_path / kind / "results.jsonl").read_text().splitlines())
           if "method" in r}
    assert ran == set(WR)
    assert set(s["selected"]) == set(WR) - {"orig", "orig-ft"}  # every tuned method had its rho chosen


def test_wr_refuses_what_a_plain_function_cannot_do(models, digits, tmp_path):
    for method, what in (("w-bn", "BatchNorm"), ("w-dbr", "features")):
        cfg = RepairConfig(epochs=1, seeds=1, rhos=(0.5,), methods=("orig", "orig-ft", method))
        with pytest.raises(UserError, match=what):
            run_study(models["function"], digits, Targets(((3, 5),)), tmp_path / method, cfg, progress=False)
    cfg = RepairConfig(epochs=1, lr=1e-2, seeds=1, rhos=(0.5,), methods=("orig", "orig-ft", "w-loss", "w-os"))
    run_study(models["function"], digits, Targets(((3, 5),)), tmp_path / "ok", cfg, progress=False, plots=False)


def _sets(clf, ds, k=2):
    pred = np.asarray(clf.logits(ds.pool.x)).argmax(-1)
    wrong, right = np.flatnonzero(pred != ds.pool.y)[:k], np.flatnonzero(pred == ds.pool.y)[:40]
    return ds.pool.x[wrong], ds.pool.y[wrong], ds.pool.x[right], ds.pool.y[right]


@pytest.mark.parametrize("kind", ["nnx", "linen", "function"])
def test_irepair_and_mm_on_user_models(models, digits, kind):
    clf = models[kind]
    xr, yr, xc, yc = _sets(clf, digits)
    res = i_repair(clf, xr, yr, xc, yc, IRepairConfig(gamma=0.5, lr=1e-2, ub=200))
    assert res.repaired.all()
    assert (np.asarray(res.classifier.logits(xr)).argmax(-1) == yr).all()
    if kind == "function":
        with pytest.raises(UserError, match="features"):
            mm_repair(clf, xr, yr)
        return
    mm = mm_repair(clf, xr, yr, margin=1e-3)
    assert mm.status == "optimal" and (np.asarray(mm.classifier.logits(xr)).argmax(-1) == yr).all()
    if kind == "nnx":  # the user's own NNX model comes back repaired
        back = mm.classifier.export()
        back.eval()
        assert (np.asarray(back(jnp.asarray(xr))).argmax(-1) == yr).all()


# ----------------------------------------------------------------------------- influence

@pytest.mark.parametrize("kind", ["nnx", "linen", "function"])
def test_influence_on_a_pair_confusion_explicit_equals_cg(models, digits, kind):
    """The influence of training points on the soft type1conf of (3, 5) (Zhong et al. 2022, Sec. 2.2;
    Koh & Liang 2017): explicit Hessian and CG agree on every user model. The CNNs' Hessians are
    indefinite, so the damping lifts the smallest eigenvalue to 0.05 (Koh & Liang's damped Hessian)."""
    from repair_jax.influence import hessian_matrix

    clf = models[kind]
    loss = ClassifierLoss.from_classifier(clf)
    train = {"x": jnp.asarray(digits.train.x[:60]), "y": jnp.asarray(digits.train.y[:60])}
    test = {"x": jnp.asarray(digits.test.x), "y": jnp.asarray(digits.test.y)}
    q = confusion_quantity(loss, test, pair=(3, 5))
    h = hessian_matrix(loss, clf.params, train, l2=1e-2)
    smallest = float(jnp.linalg.eigvalsh(h)[0])
    assert (smallest > 0) == (kind == "function")  # softmax regression with l2 is convex, the CNNs are not
    damping = max(0.0, 0.05 - smallest)
    s_exp = s_test(loss, clf.params, train, q, method="explicit", l2=1e-2, damping=damping,
                   hessian=h + damping * jnp.eye(h.shape[0]))
    # float32 CG reaches a relative residual of about 1e-5 at best
    s_cg = s_test(loss, clf.params, train, q, method="cg", l2=1e-2, damping=damping, tol=1e-4, max_iter=3000)
    assert s_cg.converged, s_cg.status
    a = np.asarray(influence_up(loss, clf.params, train, s_exp.x))
    b = np.asarray(influence_up(loss, clf.params, train, s_cg.x))
    np.testing.assert_allclose(b, a, atol=1e-3 * np.abs(a).max())
    assert np.abs(a).max() > 0


# ----------------------------------------------------------------------------- the door

def test_bad_models_get_one_clear_error():
    with pytest.raises(UserError, match=r"shape \(N, num_classes\)"):
        rj.from_apply_fn(lambda p, x: x.reshape(-1), {}, input_shape=SHAPE)
    with pytest.raises(UserError, match="3 logits per example but the data has 10 classes"):
        rj.from_apply_fn(lambda p, x: x.reshape(x.shape[0], -1)[:, :3], {}, input_shape=SHAPE, num_classes=10)
    with pytest.raises(UserError, match="non-finite"):
        rj.from_apply_fn(lambda p, x: jnp.full((x.shape[0], 10), jnp.nan), {}, input_shape=SHAPE)
    with pytest.raises(UserError, match="fails on inputs of shape"):
        rj.from_nnx(bm.nnx_cnn(), input_shape=(5, 5, 3))
    with pytest.raises(UserError, match="no layer 'fc9'"):
        rj.from_nnx(bm.nnx_cnn(), input_shape=SHAPE, features="fc9")
    with pytest.raises(UserError, match="no layer 'conv9'"):
        rj.from_nnx(bm.nnx_cnn(), input_shape=SHAPE).tapped("conv9")
    with pytest.raises(UserError, match="flax.nnx Module"):
        rj.from_nnx(bm.linen_cnn())


# ----------------------------------------------------------------------------- the command line

def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "repair_jax", *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.slow
def test_cli_import_then_every_step(models, tmp_path):
    """`repair-jax import` of an NNX model (orbax checkpoint), a linen model and a plain function
    (msgpack), then diagnose and explain on each run, influence and irepair on the NNX run, and
    one-line errors for bad models."""
    import orbax.checkpoint as ocp

    shutil.copy(Path(__file__).parent / "byom_models.py", tmp_path / "byom_models.py")
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save((tmp_path / "nnx_ckpt").resolve(), nnx.state(models["nnx"].export()))
    (tmp_path / "linen.msgpack").write_bytes(flax.serialization.to_bytes(models["linen"].export()))
    (tmp_path / "fn.msgpack").write_bytes(flax.serialization.to_bytes(models["function"].export()))
    pool = rj.load_dataset("digits").pool
    for name, spec, ckpt in (("nnx", "byom_models:nnx_cnn", "nnx_ckpt"), ("linen", "byom_models:linen_cnn", "linen.msgpack"),
                             ("function", "byom_models:function_model", "fn.msgpack")):
        wrong = pool.y[np.asarray(models[name].logits(pool.x)).argmax(-1) != pool.y]  # classes I-REPAIR can take
        r = _cli("import", "--model", spec, "--checkpoint", ckpt, "--out", f"run_{name}", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        acc = json.loads((tmp_path / f"run_{name}" / "run.json").read_text())["test_accuracy"]
        assert acc == pytest.approx(float(np.mean(np.asarray(models[name].logits(rj.load_dataset("digits").test.x)).argmax(-1)
                                                  == rj.load_dataset("digits").test.y)), abs=1e-6)
        methods = "grad,ig" if name == "function" else "grad,gradcam"  # a function has no layers for GradCAM
        steps = [["diagnose", "--run", f"run_{name}", "--out", f"diag_{name}"],
                 ["explain", "--run", f"run_{name}", "--index", "0", "--methods", methods, "--out", f"ex_{name}"]]
        if name == "nnx":  # the NNX run also through influence and I-REPAIR (the linen run shares their code path)
            steps += [["influence", "--run", f"run_{name}", "--test-index", "0", "--method", "cg",
                       "--damping", "3", "--out", f"inf_{name}"],
                      ["irepair", "--run", f"run_{name}", "--classes", str(wrong[0]), "--repair-size", "1", "--out", f"ir_{name}"]]
        for args in steps:
            r = _cli(*args, "--no-progress", cwd=tmp_path)
            assert r.returncode == 0, (args, r.stderr[-2000:])
    r = _cli("explain", "--run", "run_function", "--index", "0", "--methods", "gradcam", "--out", "ex_bad", cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "ex_bad").exists(), r.stderr
    bad = [("byom_models:nope", "linen.msgpack", "has no function 'nope'"),
           ("nomodule:f", "linen.msgpack", "cannot import 'nomodule'"),
           ("byom_models:linen_cnn", "nnx_ckpt", "checkpoint"),
           ("byom_models:softmax_regression", "linen.msgpack", "factory")]
    for spec, ckpt, msg in bad:
        r = _cli("import", "--model", spec, "--checkpoint", ckpt, "--out", "bad", cwd=tmp_path)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, (spec, r.stderr)
        assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_byom_notebook_runs_at_smoke_size(run_notebook):
    _, text = run_notebook("bring_your_own_model.ipynb", timeout=600)
    assert "nnx nnx features: True BatchNorm: True convs: ['conv1', 'conv2']" in text
    assert "linen linen features: True BatchNorm: True convs: ['Conv_0', 'Conv_1']" in text
    assert "CNN predicts" in text and "w-bn" in text
