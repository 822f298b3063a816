"""Models, weighted BatchNorm, jitted training, determinism, data parallelism, checkpoints."""

import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from repair_jax.errors import UserError
from repair_jax.models import BatchNorm, MODELS, create_model, has_batch_norm, init_variables
from repair_jax.runs import restore_checkpoint, save_checkpoint
from repair_jax.train import (
    TrainConfig, create_train_state, erm_objective, evaluate, make_train_step, train_model,
)

SMALL = {"mlp": {"hidden": (16,)}, "cnn": {"width": 4, "dense": 8}, "resnet18": {"width": 4},
         "resnet34": {"width": 2}, "vgg11_bn": {"width_mult": 0.0625}, "mobilenet_v2": {"width_mult": 0.1},
         "squeezenet": {"width_mult": 0.0625}, "resnet50": {"width": 2, "stage_sizes": (1, 1, 1, 1)},
         "shufflenet_v2": {"stage_channels": (8, 16, 32), "stage_repeats": (1, 1, 1), "stem": 8, "last": 16},
         "pyramidnet": {"depth": 8, "alpha": 4},
         "multi_head": {"backbone": "cnn", "head_widths": (0, 4), "width": 4, "dense": 8}}


@pytest.mark.parametrize("name", MODELS)
def test_every_model_gives_logits_and_features(name):
    """Shapes only, so traced abstractly (jax.eval_shape: nothing compiled); the models' numbers are
    exercised by the training, BatchNorm and per-example-gradient tests."""
    model = create_model(name, 7, **SMALL[name])
    v = jax.eval_shape(lambda k: init_variables(model, k, (8, 8, 3)), jax.random.PRNGKey(0))
    x = jnp.ones((3, 8, 8, 3))
    (logits, feats), mutated = jax.eval_shape(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]),
                                              v, x)
    assert logits.shape == (3, 7) and feats.ndim == 2 and feats.shape[0] == 3
    assert has_batch_norm(v) == (name != "mlp")
    assert jax.tree_util.tree_structure(mutated["batch_stats"]) == jax.tree_util.tree_structure(v["batch_stats"])
    logits_eval, _ = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), v, x)
    assert logits_eval.shape == (3, 7)


def test_unknown_model_and_bad_options():
    with pytest.raises(UserError, match="unknown model"):
        create_model("transformer", 10)
    with pytest.raises(UserError, match="bad options"):
        create_model("mlp", 10, depth=3)
    for name, kw in (("cnn", {"width": 0}), ("resnet18", {"width": -4}), ("mlp", {"hidden": [16, 0]}),
                     ("vgg11_bn", {"width_mult": 0.0}), ("cnn", {"dense": "8"})):
        with pytest.raises(UserError, match="must be a positive number"):
            create_model(name, 10, **kw)


def test_weighted_batchnorm_reduces_to_plain_and_to_subsets():
    bn = BatchNorm()
    x = jax.random.normal(jax.random.PRNGKey(1), (6, 3, 3, 4)) * 2 + 1
    v = bn.init(jax.random.PRNGKey(0), x, train=True)
    plain, s_plain = bn.apply(v, x, train=True, mutable=["batch_stats"])
    uniform, s_uni = bn.apply(v, x, train=True, sample_weight=jnp.ones(6) * 3.0, mutable=["batch_stats"])
    np.testing.assert_allclose(plain, uniform, atol=1e-5)
    np.testing.assert_allclose(s_plain["batch_stats"]["mean"], s_uni["batch_stats"]["mean"], atol=1e-6)
    # weights on the first 2 examples only: the statistics are those of that sub-batch
    w = jnp.array([1.0, 1.0, 0, 0, 0, 0])
    _, s_sub = bn.apply(v, x, train=True, sample_weight=w, mutable=["batch_stats"])
    _, s_ref = bn.apply(v, x[:2], train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(s_sub["batch_stats"]["mean"], s_ref["batch_stats"]["mean"], atol=1e-6)
    np.testing.assert_allclose(s_sub["batch_stats"]["var"], s_ref["batch_stats"]["var"], atol=1e-5)
    # running update: 0.9 * init + 0.1 * batch mean
    mean = x.mean(axis=(0, 1, 2))
    np.testing.assert_allclose(s_plain["batch_stats"]["mean"], 0.1 * mean, atol=1e-6)


def test_mlp_on_digits_reaches_095(digits):
    _, state, _, ds = train_model(TrainConfig(model="mlp", epochs=20, seed=0), dataset=digits, progress=False)
    assert evaluate(state, ds.test) >= 0.95


def test_same_seed_same_parameters():
    from repair_jax.data import load_dataset
    small = load_dataset("digits", seed=5, train_limit=200)
    cfg = TrainConfig(model="cnn", model_kwargs={"width": 4, "dense": 16}, epochs=2, seed=5)
    a = train_model(cfg, dataset=small, progress=False)[1]
    b = train_model(cfg, dataset=small, progress=False)[1]
    for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        np.testing.assert_array_equal(x, y)


def test_custom_objective_composes_with_train_step(digits):
    """A repair-style objective (here: class-weighted loss) runs through the same jitted step."""
    model = create_model("mlp", 10, hidden=(16,))
    v = init_variables(model, jax.random.PRNGKey(0), digits.input_shape)
    state = create_train_state(model, v, optax.sgd(0.1))

    def weighted(params, state, batch, class_w):
        from repair_jax.train import forward, softmax_cross_entropy
        logits, _, bs = forward(state, params, batch["x"], train=True)
        loss = jnp.mean(class_w[batch["y"]] * softmax_cross_entropy(logits, batch["y"]))
        return loss, (bs, {"loss": loss})

    step = make_train_step(functools.partial(weighted, class_w=jnp.zeros(10)))
    new, metrics = step(state, digits.train.batch(np.arange(32)))
    for x, y in zip(jax.tree_util.tree_leaves(v["params"]), jax.tree_util.tree_leaves(new.params)):
        np.testing.assert_array_equal(x, y)  # zero weights -> zero gradient -> no change
    assert int(new.step) == 1


def test_l2_term_is_in_the_objective(digits):
    model = create_model("mlp", 10, hidden=(8,))
    v = init_variables(model, jax.random.PRNGKey(0), digits.input_shape)
    state = create_train_state(model, v, optax.sgd(0.1))
    batch = digits.train.batch(np.arange(16))
    l0, _ = erm_objective(state.params, state, batch)
    l1, _ = erm_objective(state.params, state, batch, l2=0.1)
    sq = sum(float(jnp.sum(p ** 2)) for p in jax.tree_util.tree_leaves(state.params))
    assert float(l1 - l0) == pytest.approx(0.05 * sq, rel=1e-4)


def test_checkpoint_round_trip_is_exact_and_corruption_is_caught(tmp_path, trained_digits_mlp):
    model, state, ds = trained_digits_mlp
    v = {"params": state.params, "batch_stats": state.batch_stats}
    sha = save_checkpoint(tmp_path / "c.msgpack", v)
    template = init_variables(model, jax.random.PRNGKey(9), ds.input_shape)
    r = restore_checkpoint(tmp_path / "c.msgpack", template, sha)
    for x, y in zip(jax.tree_util.tree_leaves(v["params"]), jax.tree_util.tree_leaves(r["params"])):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    raw = bytearray((tmp_path / "c.msgpack").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "c.msgpack").write_bytes(bytes(raw))
    with pytest.raises(UserError, match="corrupt"):
        restore_checkpoint(tmp_path / "c.msgpack", template, sha)
    (tmp_path / "t.msgpack").write_bytes(bytes(raw[:100]))
    with pytest.raises(UserError, match="corrupt"):
        restore_checkpoint(tmp_path / "t.msgpack", template)
    with pytest.raises(UserError, match="not found"):
        restore_checkpoint(tmp_path / "none.msgpack", template)
    other = init_variables(create_model("mlp", 10, hidden=(32,)), jax.random.PRNGKey(0), ds.input_shape)
    sha2 = save_checkpoint(tmp_path / "o.msgpack", other)
    with pytest.raises(UserError):
        restore_checkpoint(tmp_path / "o.msgpack", template, sha2)


SHARDING_SCRIPT = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    import jax, numpy as np
    from repair_jax.data import load_dataset
    from repair_jax.models import create_model, init_variables
    from repair_jax.train import TrainConfig, create_train_state, data_mesh, fit, make_optimizer
    assert jax.device_count() == 4, jax.devices()
    ds = load_dataset("digits", seed=0, train_limit=256)
    cfg = TrainConfig(model="cnn", model_kwargs={"width": 4, "dense": 16}, epochs=2, batch_size=64, seed=0)
    out = []
    for mesh in (None, data_mesh()):
        model = create_model("cnn", 10, width=4, dense=16)
        v = init_variables(model, jax.random.PRNGKey(0), ds.input_shape)
        st = create_train_state(model, v, make_optimizer(cfg, 8))
        st, _ = fit(st, ds, cfg, mesh=mesh, progress=False)
        out.append(jax.device_get((st.params, st.batch_stats)))
    if out[1] is not None:
        leaves = jax.tree_util.tree_leaves(out[1][0])
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree_util.tree_leaves(out[0]), jax.tree_util.tree_leaves(out[1])))
    print("MAXDIFF", diff)
""")


def test_sharded_training_equals_single_device(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")  # the script adds the device count to the inherited XLA_FLAGS
    r = subprocess.run([sys.executable, "-c", SHARDING_SCRIPT], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    diff = float(r.stdout.split("MAXDIFF")[1])
    assert diff <= 1e-5


def test_split_init_and_order_seeds_are_independent():
    """Issue 12: changing only init_seed keeps the split and the batch order and changes the weights;
    changing only split_seed changes the split; by default all three follow ``seed``."""
    from repair_jax.models import init_variables as init

    base = TrainConfig(model="mlp", model_kwargs={"hidden": (8,)}, epochs=1, seed=3, train_limit=100)
    assert [base.seed_for(w) for w in ("split", "init", "order")] == [3, 3, 3]
    other_init = TrainConfig(**{**base.__dict__, "init_seed": 4})
    a, b = base.load_dataset(), other_init.load_dataset()
    np.testing.assert_array_equal(a.train.x, b.train.x)
    np.testing.assert_array_equal(a.test.y, b.test.y)
    wa = train_model(base, dataset=a, progress=False)[1].params
    wb = train_model(other_init, dataset=b, progress=False)[1].params
    leaves = jax.tree_util.tree_leaves
    assert not any(np.allclose(x, y) for x, y in zip(leaves(wa), leaves(wb)))
    w3 = init(create_model("mlp", 10, hidden=(8,)), jax.random.PRNGKey(3), a.input_shape)["params"]
    untrained = train_model(TrainConfig(**{**base.__dict__, "epochs": 0}), dataset=a, progress=False)[1].params
    for x, y in zip(leaves(w3), leaves(untrained)):  # the initialisation is drawn from init_seed
        np.testing.assert_array_equal(x, y)
    c = TrainConfig(**{**base.__dict__, "split_seed": 4}).load_dataset()
    assert not np.array_equal(a.test.y, c.test.y) or not np.array_equal(a.train.x, c.train.x)
    assert base.resolved().split_seed == 3 and TrainConfig(seed=1, order_seed=7).resolved().order_seed == 7


def test_bad_seeds_are_refused():
    for bad in (-1, 2**32, 1.5, True):
        with pytest.raises(UserError, match="seed"):
            TrainConfig(seed=bad).validate()
    with pytest.raises(UserError, match="init_seed"):
        TrainConfig(init_seed=-2).validate()


def test_an_exploding_loss_stops_training(digits):
    """Issue 12 point 5: `--lr 1e6` gave a finite loss of 4e21 and a run; now training stops with one line."""
    cfg = TrainConfig(model="mlp", model_kwargs={"hidden": (16,)}, epochs=3, lr=1e6, seed=0)
    with pytest.raises(UserError, match="diverged at epoch 1"):
        train_model(cfg, dataset=digits, progress=False)


def test_training_prints_one_line_per_epoch_when_not_on_a_terminal(digits, capsys):
    """Issue 12 point 6: with stderr not a terminal, progress is one line per finished epoch."""
    cfg = TrainConfig(model="mlp", model_kwargs={"hidden": (8,)}, epochs=3, seed=0)
    train_model(cfg, dataset=digits, progress=True)
    lines = capsys.readouterr().err.strip().splitlines()
    assert [ln.split(" loss")[0] for ln in lines] == ["train mlp: 1/3", "train mlp: 2/3", "train mlp: 3/3"]
    train_model(cfg, dataset=digits, progress=False)
    assert capsys.readouterr().err == ""
