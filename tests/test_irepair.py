"""I-REPAIR (Henriksen et al. 2022): Algorithm 1-2, Observations 1-2, masking, baselines, MM LP."""

import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from repair_jax.errors import UserError
from repair_jax.models import create_model, init_variables
from repair_jax.repair import (
    IRepairConfig, correct_set, estimate_influence, i_repair, influence_scores, mm_repair,
    random_locking_repair, repair_set, retrain,
)
from repair_jax.repair.irepair import cross_entropy_loss, is_repaired, output_magnitude_loss
from repair_jax.repair.protocol import summary_table
from repair_jax.repair.mm import minimal_last_layer_change
from repair_jax.stats import mean_ci, t_test_p


@pytest.fixture(scope="module")
def problem():
    """A small random MLP; R = inputs given a label it does not predict, C = inputs it predicts."""
    model = create_model("mlp", 4, hidden=(16, 12))
    variables = init_variables(model, jax.random.PRNGKey(0), (6,))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 6)).astype(np.float32)
    pred = np.asarray(model.apply(variables, x)[0]).argmax(-1)
    xr, yr = x[:5], ((pred[:5] + 1) % 4).astype(np.int32)
    xc, yc = x[5:25], pred[5:25].astype(np.int32)
    return model, variables, xr, yr, xc, yc


def apply_fn(model):
    return lambda p, x: model.apply({"params": p}, x)[0]


def flat(tree):
    return np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(tree)])


def test_estimate_influence_is_algorithm_1(problem):
    model, variables, xr, yr, xc, yc = problem
    params, f = variables["params"], apply_fn(model)
    estimate = jax.jit(estimate_influence, static_argnums=(0, 1, 6))
    one = jax.jit(jax.grad(lambda p, x, y: cross_entropy_loss(f(p, x), y)[0]))
    per_ex = [flat(one(params, xr[i:i + 1], yr[i:i + 1])) for i in range(len(xr))]
    w = jnp.ones(len(xr))
    mean = flat(estimate(f, cross_entropy_loss, params, xr, yr, w, "mean"))
    np.testing.assert_allclose(mean, np.mean(per_ex, 0), rtol=1e-4, atol=1e-6)
    mean_abs = flat(estimate(f, cross_entropy_loss, params, xr, yr, w, "mean_abs"))
    np.testing.assert_allclose(mean_abs, np.mean(np.abs(per_ex), 0), rtol=1e-4, atol=1e-6)
    # a 0/1 mask selects the inputs (R-perp inside a fixed-shape R)
    w2 = jnp.array([1.0, 0.0, 1.0, 0.0, 0.0])
    sub = flat(estimate(f, cross_entropy_loss, params, xr, yr, w2, "mean"))
    np.testing.assert_allclose(sub, (per_ex[0] + per_ex[2]) / 2, rtol=1e-4, atol=1e-6)


def test_output_magnitude_loss_and_scores():
    logits = jnp.array([[1.0, -2.0, 0.5]])
    np.testing.assert_allclose(output_magnitude_loss(logits, jnp.array([0])), [3.5])
    s = influence_scores({"a": jnp.array([2.0, -1.0])}, {"a": jnp.array([1.0, 4.0])}, 0.5, 1e-8)
    np.testing.assert_allclose(s["a"], [4.0, 0.5], rtol=1e-6)
    assert np.all(np.isinf(influence_scores({"a": jnp.ones(2)}, {"a": jnp.ones(2)}, 0.0, 1e-8)["a"]))


def test_observation_1_repaired_inputs_are_classified_correctly(problem):
    model, variables, xr, yr, xc, yc = problem
    for margin, ub, lr in [(0.0, 2000, 1e-2), (0.2, 2000, 1e-2), (0.0, 3, 1e-5)]:
        res = i_repair(model, variables, xr, yr, xc, yc, IRepairConfig(gamma=0.5, lr=lr, ub=ub, margin=margin))
        logits = model.apply(res.variables, xr)[0]
        assert np.array_equal(res.repaired, np.asarray(is_repaired(logits, yr, margin)))
        assert np.all(np.asarray(logits).argmax(-1)[res.repaired] == yr[res.repaired])
        probs = np.asarray(jax.nn.softmax(logits))
        for i in np.flatnonzero(res.repaired):
            others = np.delete(probs[i], yr[i])
            assert probs[i, yr[i]] - others.max() > margin
        assert res.iterations <= ub
        if res.unrepaired.any():
            assert res.iterations == ub
    assert res.iterations == 3  # the ub=3 run stops at the bound


def plain_backprop(model, variables, xr, yr, lr, ub):
    """Reference: RMSprop steps on the mean cross-entropy over the still-misclassified inputs."""
    params, tx = variables["params"], optax.rmsprop(lr)
    opt = tx.init(params)
    f = apply_fn(model)
    grad = jax.jit(jax.grad(lambda p, xs, ys: jnp.mean(cross_entropy_loss(f(p, xs), ys))))
    update = jax.jit(tx.update)
    it = 0
    for it in range(ub + 1):
        wrong = np.asarray(f(params, xr)).argmax(-1) != yr
        if not wrong.any() or it == ub:
            break
        upd, opt = update(grad(params, xr[wrong], yr[wrong]), opt, params)
        params = optax.apply_updates(params, upd)
    return params, it


@pytest.mark.parametrize("gamma", [0.0, 1e-30])
def test_observation_2_gamma_to_zero_is_back_propagation(problem, gamma):
    model, variables, xr, yr, xc, yc = problem
    ref, it = plain_backprop(model, variables, xr, yr, 3e-3, 30)
    res = i_repair(model, variables, xr, yr, xc, yc, IRepairConfig(gamma=gamma, lr=3e-3, ub=30))
    assert res.iterations == it and it > 1
    assert res.unlocked_fraction == 1.0
    np.testing.assert_allclose(flat(res.variables["params"]), flat(ref), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("influence", ["mean", "mean_abs"])
def test_masking_parameters_with_score_below_one_do_not_move(problem, influence):
    model, variables, xr, yr, xc, yc = problem
    params, f = variables["params"], apply_fn(model)
    estimate = jax.jit(estimate_influence, static_argnums=(0, 1, 6))
    cfg = IRepairConfig(gamma=1.0, lr=1e-2, ub=1, influence=influence)
    w = jnp.ones(len(xr))
    i_c = estimate(f, output_magnitude_loss, params, xc, yc, jnp.ones(len(xc)), influence)
    i_r = estimate(f, cross_entropy_loss, params, xr, yr, w, influence)
    scores = flat(influence_scores(i_r, i_c, cfg.gamma, cfg.epsilon))
    res = i_repair(model, variables, xr, yr, xc, yc, cfg)
    assert res.iterations == 1
    moved = flat(res.variables["params"]) != flat(params)
    locked = scores < 1
    assert 0 < locked.sum() < locked.size
    assert not np.any(moved[locked])
    grad = flat(estimate(f, cross_entropy_loss, params, xr, yr, w, "mean"))
    assert np.all(moved[~locked & (np.abs(grad) > 1e-6)])
    assert res.unlocked_fraction == pytest.approx(float(np.mean(~locked)), abs=1e-6)


def test_random_locking(problem):
    model, variables, xr, yr, xc, yc = problem
    cfg = IRepairConfig(lr=1e-2, ub=5)
    frozen = random_locking_repair(model, variables, xr, yr, xc, yc, p=1.0, config=cfg)
    assert frozen.iterations == 5 and frozen.unlocked_fraction == 0.0
    np.testing.assert_array_equal(flat(frozen.variables["params"]), flat(variables["params"]))
    half = random_locking_repair(model, variables, xr, yr, xc, yc, p=0.5, seed=3, config=cfg)
    moved = flat(half.variables["params"]) != flat(variables["params"])
    assert 0.3 < half.unlocked_fraction < 0.7
    assert moved.mean() <= half.unlocked_fraction + 1e-6
    again = random_locking_repair(model, variables, xr, yr, xc, yc, p=0.5, seed=3, config=cfg)
    np.testing.assert_array_equal(flat(again.variables["params"]), flat(half.variables["params"]))
    with pytest.raises(UserError):
        random_locking_repair(model, variables, xr, yr, xc, yc, p=1.5, config=cfg)


def last_layer_only(s):
    """A locking rule written outside the library: only the last Dense layer may move."""
    last = sorted(s.grads)[-1]
    return {k: jax.tree_util.tree_map(lambda g, keep=(k == last): jnp.full(g.shape, keep), v)
            for k, v in s.grads.items()}


def test_locking_rules_are_mask_functions_of_one_loop(problem):
    """The loop takes any mask function: a new rule moves only what it unlocks; a fixed all-ones
    mask is no locking (up to float32 rounding: XLA compiles a constant and a given mask differently)."""
    from repair_jax.repair import fixed_locking, no_locking, repair_loop

    model, variables, xr, yr, xc, yc = problem
    cfg = IRepairConfig(lr=1e-2, ub=5)
    res = repair_loop(model, variables, xr, yr, xc, yc, cfg, locking=last_layer_only)
    for name in ("Dense_0", "Dense_1"):
        np.testing.assert_array_equal(flat(res.variables["params"][name]), flat(variables["params"][name]))
    assert np.any(flat(res.variables["params"]["Dense_2"]) != flat(variables["params"]["Dense_2"]))
    a = repair_loop(model, variables, xr, yr, xc, yc, cfg, locking=no_locking)
    b = repair_loop(model, variables, xr, yr, xc, yc, cfg, locking=fixed_locking)  # default mask: all True
    np.testing.assert_allclose(flat(a.variables["params"]), flat(b.variables["params"]), rtol=1e-5, atol=1e-7)
    assert a.unlocked_fraction == b.unlocked_fraction == 1.0
    with pytest.raises(UserError, match="backprop_on"):
        repair_loop(model, variables, xr, yr, xc, yc, cfg, locking=no_locking, backprop_on="all")


def test_retrain_uses_repair_and_correct_sets(problem):
    model, variables, xr, yr, xc, yc = problem
    res = retrain(model, variables, xr, yr, xc, yc, IRepairConfig(lr=1e-2, ub=1))
    f = apply_fn(model)
    x, y = np.concatenate([xr, xc]), np.concatenate([yr, yc])
    tx = optax.rmsprop(1e-2)
    g = jax.grad(lambda p: jnp.mean(cross_entropy_loss(f(p, x), y)))(variables["params"])
    upd, _ = tx.update(g, tx.init(variables["params"]), variables["params"])
    ref = optax.apply_updates(variables["params"], upd)
    np.testing.assert_allclose(flat(res.variables["params"]), flat(ref), rtol=1e-5, atol=1e-6)
    full = retrain(model, variables, xr, yr, xc, yc, IRepairConfig(lr=1e-2, ub=2000))
    assert full.repaired.all() and full.unlocked_fraction == 1.0


def test_bad_inputs_are_user_errors(problem):
    model, variables, xr, yr, xc, yc = problem
    with pytest.raises(UserError):
        i_repair(model, variables, xr[:0], yr[:0], xc, yc)
    with pytest.raises(UserError):
        i_repair(model, variables, xr, yr, xc, yc, IRepairConfig(gamma=-1))
    with pytest.raises(UserError):
        i_repair(model, variables, xr, yr, xc, yc, IRepairConfig(margin=1.5))
    with pytest.raises(UserError):
        i_repair(model, variables, xr, yr[:3], xc, yc)


def test_repair_and_correct_sets():
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    preds = np.array([1, 0, 2, 1, 1, 0, 2, 2, 2, 0])
    r, notes = repair_set(labels, preds, [0, 1], 2, np.random.default_rng(0))
    assert set(r[:2]) == {0, 2} and list(r[2:]) == [5]  # class 1 has one error: used, with a note
    assert len(notes) == 1 and "class 1" in notes[0]
    assert np.all(labels[r] != preds[r])
    c = correct_set(labels, preds, 3, 3, np.random.default_rng(0))
    assert np.all(labels[c] == preds[c]) and sorted(labels[c]) == [0, 1, 2]
    with pytest.raises(UserError):
        repair_set(labels, labels, [0], 1, np.random.default_rng(0))
    c = correct_set(labels, preds, 6, 3, np.random.default_rng(0))  # class 0 has 1: others fill in
    assert len(c) == 6 and np.all(labels[c] == preds[c])
    with pytest.raises(UserError):
        correct_set(labels, preds, 50, 3, np.random.default_rng(0))


# ----------------------------------------------------------------------------- MM repair LP

def test_mm_lp_is_feasible_and_minimal_on_two_classes():
    """Two classes, one repair input with features h = (1, 0.5) labelled 1 but scored 0.

    Each of the 2*2 + 2 changed weights enters the gap with coefficient |h_j| or 1, so the gap grows
    by at most t * 2 * (||h||_1 + 1) and the minimal L-inf change is t* = (margin - gap) / (2 (||h||_1 + 1)).
    """
    h = np.array([[1.0, 0.5]])
    kernel = np.array([[1.0, 0.0], [0.0, 0.0]])
    bias = np.array([0.2, 0.0])
    gap = (h @ kernel + bias)[0, 1] - (h @ kernel + bias)[0, 0]  # -1.2
    margin = 0.1
    status, dw, db, t = minimal_last_layer_change(h, np.array([1]), kernel, bias, margin)
    assert status == "optimal"
    expected = (margin - gap) / (2 * (np.abs(h).sum() + 1))
    assert t == pytest.approx(expected, rel=1e-6)
    new = h @ (kernel + dw) + bias + db
    assert new[0, 1] - new[0, 0] >= margin - 1e-7
    assert max(np.abs(dw).max(), np.abs(db).max()) <= t + 1e-9
    # a second repair input (features 0, bias only) does not change the optimum here
    status2, _, _, t2 = minimal_last_layer_change(np.vstack([h, [[0.0, 0.0]]]), np.array([1, 1]),
                                                  kernel, bias, margin)
    assert status2 == "optimal" and t2 == pytest.approx(expected, rel=1e-6)


def test_mm_reports_infeasible_instead_of_failing():
    h = np.array([[1.0, 0.5]])
    kernel, bias = np.array([[1.0, 0.0], [0.0, 0.0]]), np.array([0.2, 0.0])
    status, dw, _, t = minimal_last_layer_change(h, np.array([1]), kernel, bias, 0.1, epsilon=0.1)
    assert status == "infeasible" and dw is None and t is None
    # the same features with two labels: no last layer classifies both correctly
    status, *_ = minimal_last_layer_change(np.vstack([h, h]), np.array([0, 1]), kernel, bias, 0.1)
    assert status == "infeasible"


def test_mm_repair_changes_only_the_last_layer(problem):
    model, variables, xr, yr, xc, yc = problem
    res = mm_repair(model, variables, xr, yr, margin=1e-3)
    assert res.feasible and res.layer == ("Dense_2",)
    logits = np.asarray(model.apply(res.variables, xr)[0])
    assert np.all(logits.argmax(-1) == yr)
    for name in ("Dense_0", "Dense_1"):
        np.testing.assert_array_equal(flat(res.variables["params"][name]), flat(variables["params"][name]))
    change = np.abs(flat(res.variables["params"]["Dense_2"]) - flat(variables["params"]["Dense_2"])).max()
    assert change == pytest.approx(res.max_change, rel=1e-3, abs=1e-6)
    bad = mm_repair(model, variables, xr, yr, margin=1e-3, epsilon=res.max_change / 2)
    assert bad.status == "infeasible" and bad.variables["params"] is variables["params"]  # the originals


def test_statistics_helpers_match_scipy():
    import scipy.stats
    a, b = [1.0, 2.0, 3.5, 2.2], [2.0, 3.0, 4.1, 5.0]
    m, h = mean_ci(a)
    lo, hi = scipy.stats.t.interval(0.95, len(a) - 1, loc=np.mean(a), scale=scipy.stats.sem(a))
    assert m == pytest.approx(np.mean(a)) and h == pytest.approx((hi - lo) / 2)
    assert t_test_p(a, b) == pytest.approx(scipy.stats.ttest_ind(a, b).pvalue)


# ----------------------------------------------------------------------------- CLI

@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    from repair_jax.runs import train_run
    from repair_jax.train import TrainConfig
    out = tmp_path_factory.mktemp("irepair") / "run"
    train_run(TrainConfig(dataset="digits", model="mlp", model_kwargs={"hidden": [32]}, epochs=5,
                          batch_size=64, lr=3e-3), out, progress=False)
    return out


def test_cli_writes_irepair_json(digits_run, tmp_path, capsys):
    from repair_jax.cli import main
    out = tmp_path / "ir"
    rc = main(["irepair", "--run", str(digits_run), "--class", "8", "--repair-size", "2",
               "--correct-size", "10", "--lr", "1e-3", "--ub", "500", "--baseline", "mm", "--seeds", "2",
               "--out", str(out), "--no-progress"])
    assert rc == 0
    data = json.loads((out / "irepair.json").read_text())
    assert len(data["runs"]) == 4 and {r["method"] for r in data["runs"]} == {"irepair", "mm"}
    for r in data["runs"]:
        for key in ("method", "seed", "repaired", "unrepaired", "accuracy_before", "accuracy_after",
                    "iterations", "unlocked_fraction", "wall_time"):
            assert key in r
        assert r["repaired"] + r["unrepaired"] == r["repair_size"]
    assert (out / "summary.md").read_text().startswith("| R | method")
    # bad class -> exit 2, nothing written
    rc = main(["irepair", "--run", str(digits_run), "--class", "12", "--repair-size", "2",
               "--out", str(tmp_path / "bad"), "--no-progress"])
    assert rc == 2 and not (tmp_path / "bad").exists()
    assert "out of range" in capsys.readouterr().err


def test_run_jobs_is_resumable_and_paired(digits_run, tmp_path):
    from repair_jax.io import read_jsonl
    from repair_jax.repair.protocol import RepairContext, run_jobs, summary_table
    from repair_jax.runs import load_run
    ctx = RepairContext.from_run(load_run(digits_run))
    cfg = IRepairConfig(lr=1e-3, ub=500)
    job = dict(classes=[8], repair_size=2, correct_size=10, seed=0, group=2, config=cfg)
    jobs = [{**job, "key": "a", "method": "irepair"}, {**job, "key": "b", "method": "retrain"}]
    out = tmp_path / "jobs.jsonl"
    first = run_jobs(ctx, jobs, out, progress=False)
    assert len(read_jsonl(out)) == 1 + 2  # the configuration line and two records
    again = run_jobs(ctx, jobs, out, progress=False)  # nothing re-run
    assert len(read_jsonl(out)) == 1 + 2 and [r["wall_time"] for r in again] == [r["wall_time"] for r in first]
    assert first[0]["accuracy_before"] == first[1]["accuracy_before"]
    assert first[0]["repair_size"] == first[1]["repair_size"]  # the same problem for both methods
    table = summary_table(first)
    assert "| 2 | irepair (gamma=1) | 1 | 2 |" in table and "| 2 | retrain | 1 | 2 |" in table


def test_run_jobs_refuses_another_configuration(digits_run, tmp_path):
    """A job key already in the log with another learning rate, or the log of another model, is a
    one-line error naming the field; a torn last line is cut; force restarts."""
    from repair_jax.repair.protocol import RepairContext, run_jobs
    from repair_jax.runs import load_run
    ctx = RepairContext.from_run(load_run(digits_run))
    job = dict(key="a", method="irepair", classes=[8], repair_size=2, correct_size=10, seed=0,
               config=IRepairConfig(lr=1e-3, ub=50))
    out = tmp_path / "jobs.jsonl"
    run_jobs(ctx, [job], out, progress=False)
    with pytest.raises(UserError, match=r"job 'a' was run with another config\.lr"):
        run_jobs(ctx, [{**job, "config": IRepairConfig(lr=1e-2, ub=50)}], out, progress=False)
    with pytest.raises(UserError, match=r"another correct_size"):
        run_jobs(ctx, [{**job, "correct_size": 12}], out, progress=False)
    other = RepairContext.from_model(ctx.model, jax.tree_util.tree_map(lambda a: a * 1.01, ctx.variables),
                                     ctx.dataset)
    with pytest.raises(UserError, match=r"model\.variables_sha256"):
        run_jobs(other, [job], out, progress=False)
    text = out.read_text()
    out.write_text(text + '{"key": "b", "meth')  # a kill mid-append
    assert len(run_jobs(ctx, [job], out, progress=False)) == 1
    assert out.read_text() == text
    again = run_jobs(other, [job], out, progress=False, force=True)
    assert again[0]["accuracy_before"] == other.accuracy_before


class _CompileLog(logging.Handler):
    """The names of the programs JAX compiles while attached (with ``jax_log_compiles``): one
    "Compiling NAME with global shapes ..." record per jit cache miss, persistent-cache hit or not."""

    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith("Compiling "):
            self.names.append(msg.split(" with ")[0][len("Compiling "):])


def _compiles_in(fn) -> list[str]:
    log, logger = _CompileLog(), logging.getLogger("jax")
    logger.addHandler(log)
    try:
        with jax.log_compiles(True):
            fn()
    finally:
        logger.removeHandler(log)
    return log.names


def test_run_jobs_compiles_nothing_per_job(digits_run, tmp_path):
    """A sweep compiles its programs once, not once per job: after one job of each kind, more jobs of
    the same shapes (other seeds) compile nothing, for 2 jobs as for 6. The evaluation of each job
    built a TrainState with a fresh optax.identity() (a static field), so predict compiled again per
    job (3 programs, ~4 MB and 37 memory maps a job): 4,800-job sweeps ran out of memory maps."""
    from repair_jax.repair.protocol import RepairContext, run_jobs
    from repair_jax.runs import load_run
    ctx = RepairContext.from_run(load_run(digits_run))
    cfg = IRepairConfig(lr=1e-3, ub=20)

    def jobs(seeds):
        return [dict(key=f"{m}/{s}", method=m, classes=[8], repair_size=2, correct_size=10, seed=s, config=cfg)
                for s in seeds for m in ("irepair", "retrain")]

    out = tmp_path / "jobs.jsonl"
    run_jobs(ctx, jobs([0]), out, progress=False)  # compiles each program once
    two = _compiles_in(lambda: run_jobs(ctx, jobs([0, 1]), out, progress=False))
    six = _compiles_in(lambda: run_jobs(ctx, jobs([0, 1, 2, 3, 4]), out, progress=False))
    assert two == [] and six == [], f"compiled per job: {two} (2 jobs), {six} (6 jobs)"


def test_predict_compiles_once_whatever_the_optimizer():
    """predict's jitted forward is keyed by the model, not by the TrainState's optimizer (a fresh
    optax.identity() per state compiled it again each time)."""
    from repair_jax.train import _eval_logits, create_train_state, predict
    model = create_model("mlp", 3, hidden=(5,))
    variables = init_variables(model, jax.random.PRNGKey(0), (4,))
    x = np.ones((7, 4), np.float32)
    predict(create_train_state(model, variables, optax.identity()), x)
    before = _eval_logits._cache_size()
    for scale in (2.0, 3.0):
        moved = jax.tree_util.tree_map(lambda a: a * scale, variables)
        predict(create_train_state(model, moved, optax.identity()), x)
    assert _eval_logits._cache_size() == before


def test_summary_table_shows_used_size_and_no_nan(digits_run):
    """|R| actually used is shown (a class with fewer misclassified inputs than asked gives fewer), and
    cells that do not apply are '—', never 'nan'."""
    runs = [{"method": "irepair", "gamma": 1.0, "repair_size": 3, "group": 5, "accuracy_drop": 0.01,
             "unrepaired": 0, "iterations": 4, "unlocked_fraction": 0.5},
            {"method": "mm", "mm_epsilon": None, "repair_size": 5, "group": 5, "accuracy_drop": 0.02,
             "unrepaired": 0, "iterations": 0, "unlocked_fraction": None}]
    table = summary_table(runs, baseline="retrain")
    assert "| 5 | irepair (gamma=1) | 1 | 3 |" in table and "| 5 | mm (eps=None) | 1 | 5 |" in table
    assert "nan" not in table.lower() and "| — |" in table and "R used" in table
