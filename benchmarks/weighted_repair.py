"""WR costs on this machine (Zhong et al. 2022, Sec. 3.3-3.4), ratios taken in one run:

* ``w_bn_step_over_orig_ft_step``: a w-bn fine-tuning step (regular + target batch through every
  BatchNorm, loss on the regular half) over an orig-ft step, same model and batch size;
* ``w_os_over_plain_inference``: inference + w-os output smoothing over plain inference (softmax);
* ``digits_study_wall_time_s``: the whole quickstart-sized digits study (every method, rho grid
  {0.1, 0.5, 0.9}, 3 seeds; ``quick``: w-os/w-bn only, one rho, 2 seeds).
"""

from __future__ import annotations

import functools
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax


def _time(fn, n: int) -> float:
    fn()  # compile / warm up
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def run(quick: bool) -> dict:
    from repair_jax.data import load_dataset
    from repair_jax.models import create_model, init_variables
    from repair_jax.repair import RepairConfig, Targets, run_study, weighted_output_smoothing
    from repair_jax.repair.weighted import weighted_batch_norm_objective
    from repair_jax.train import create_train_state, erm_objective, make_train_step, train_model, TrainConfig

    ds = load_dataset("digits")
    model = create_model("cnn", 10, width=8, dense=32)
    v = init_variables(model, jax.random.PRNGKey(0), ds.input_shape)
    bs, n = 64, (30 if quick else 100)
    rng = np.random.default_rng(0)
    idx, tidx = rng.choice(len(ds.train), bs), rng.choice(np.flatnonzero(np.isin(ds.train.y, [3, 5])), bs)
    plain = {"x": jnp.asarray(ds.train.x[idx]), "y": jnp.asarray(ds.train.y[idx])}
    wbn = {**plain, "x_target": jnp.asarray(ds.train.x[tidx])}
    steps = {}
    w_bn_objective = functools.partial(weighted_batch_norm_objective, rho=0.5)
    for name, obj, batch in (("orig-ft", erm_objective, plain), ("w-bn", w_bn_objective, wbn)):
        step = make_train_step(obj)
        holder = [create_train_state(model, jax.tree_util.tree_map(jnp.array, v), optax.adam(1e-4))]  # donated

        def once(step=step, batch=batch, holder=holder):
            holder[0], m = step(holder[0], batch)
            jax.block_until_ready(m["loss"])
        steps[name] = _time(once, n)

    state = create_train_state(model, v, optax.identity())
    x = jnp.asarray(ds.test.x)
    apply = jax.jit(lambda s, x: jax.nn.softmax(s.apply_fn(s.params, s.batch_stats, x, train=False)[0], -1))
    targets = Targets(((3, 5),))
    apply_os = jax.jit(lambda s, x: weighted_output_smoothing(apply(s, x), targets, 0.1))
    t_plain = _time(lambda: jax.block_until_ready(apply(state, x)), n)
    t_os = _time(lambda: jax.block_until_ready(apply_os(state, x)), n)

    _, st, _, _ = train_model(TrainConfig(dataset="digits", model="cnn", model_kwargs={"width": 8, "dense": 32},
                                          epochs=1 if quick else 3, lr=3e-3), ds, progress=False)
    variables = {"params": st.params, "batch_stats": st.batch_stats}
    cfg = (RepairConfig(epochs=1, lr=3e-4, seeds=2, rhos=(0.5,), methods=("orig", "orig-ft", "w-bn", "w-os"))
           if quick else RepairConfig(epochs=1, lr=3e-4, seeds=3, rhos=(0.1, 0.5, 0.9)))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        run_study(model, variables, ds, targets, d, cfg, progress=False, plots=False)
    wall = time.perf_counter() - t0
    return {"w_bn_step_over_orig_ft_step": steps["w-bn"] / steps["orig-ft"],
            "orig_ft_step_ms": 1e3 * steps["orig-ft"], "w_bn_step_ms": 1e3 * steps["w-bn"],
            "w_os_over_plain_inference": t_os / t_plain, "plain_inference_ms": 1e3 * t_plain,
            "digits_study_wall_time_s": wall, "batch_size": bs, "timed_steps": n,
            "study": "quick" if quick else "quickstart-sized"}
