"""Universal perturbations and the adversarial defences (Pradhan et al. 2020, Sec. 3 "Robustness Enhancement Techniques")."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from repair_jax.errors import UserError
from repair_jax.objectives import forward, softmax_cross_entropy
from repair_jax.robustness import (
    adversarial_noise_step, deepfool, eval_logits_fn, fooling_rate, init_noise_training,
    init_universal_state, project, random_perturbation, scale_to_sphere, shared_adversarial_objective, uap_deepfool, uap_sgd,
    universal_adversarial_step,
)
from repair_jax.train import TrainConfig, fit, train_model


@pytest.fixture(scope="module")
def trained():
    config = TrainConfig(dataset="digits", model="mlp", model_kwargs={"hidden": (32,)}, epochs=10,
                         batch_size=64, lr=3e-3)
    _, state, _, ds = train_model(config, progress=False)
    return state, ds


def test_project_onto_balls():
    v = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 4, 1)), jnp.float32)
    p = project(v, 0.5, "l2")
    norms = np.linalg.norm(np.asarray(p).reshape(2, -1), axis=1)
    np.testing.assert_allclose(norms, 0.5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(p) / norms[:, None, None, None],
                               np.asarray(v) / np.linalg.norm(np.asarray(v).reshape(2, -1), axis=1)[:, None, None, None],
                               rtol=1e-5)
    np.testing.assert_allclose(project(v * 1e-3, 0.5, "l2"), v * 1e-3)
    np.testing.assert_allclose(project(v, 0.3, "linf"), np.clip(v, -0.3, 0.3))


def test_deepfool_on_a_linear_classifier_is_the_closed_form():
    rng = np.random.default_rng(1)
    w, b = jnp.asarray(rng.normal(size=(12, 4)), jnp.float32), jnp.asarray(rng.normal(size=4), jnp.float32)
    f = lambda x: x.reshape(x.shape[0], -1) @ w + b
    x = jnp.asarray(rng.normal(size=(3, 2, 2)), jnp.float32)
    fx = np.asarray(f(x[None])[0])
    k0 = fx.argmax()
    wk = np.asarray(w).T - np.asarray(w).T[k0]
    dist = np.abs(fx - fx[k0]) / np.maximum(np.linalg.norm(wk, axis=1), 1e-12)
    dist[k0] = np.inf
    l = dist.argmin()
    want = 1.02 * (abs(fx[l] - fx[k0]) + 1e-4) / np.sum(wk[l] ** 2) * wk[l]  # one step reaches the plane
    r = deepfool(f, x, overshoot=0.02)
    np.testing.assert_allclose(np.asarray(r).ravel(), want, rtol=1e-4, atol=1e-6)
    assert int(f((x + r)[None])[0].argmax()) != k0


def test_uap_fools_far_more_than_noise_and_stays_in_its_ball(trained):
    state, ds = trained
    f = eval_logits_fn(state)
    x, y = ds.test.x[:200], ds.test.y[:200]
    for norm, eps, make in (("l2", 2.0, lambda: uap_deepfool(f, x, 2.0, "l2", max_passes=2)),
                            ("linf", 0.2, lambda: uap_sgd(f, x, y, 0.2, "linf", epochs=3))):
        v = make()
        size = np.linalg.norm(v) if norm == "l2" else np.abs(v).max()
        assert size <= eps * (1 + 1e-5)
        uap = fooling_rate(f, x, v, y, 10)
        noise = fooling_rate(f, x, random_perturbation(jax.random.PRNGKey(0), x.shape[1:], eps, norm), y, 10)
        assert uap["fooling_rate"] > 2 * noise["fooling_rate"] and uap["fooling_rate"] > noise["fooling_rate"] + 0.3
        counts = np.bincount(y, minlength=10)
        np.testing.assert_allclose(np.nansum(np.asarray(uap["per_class"]) * counts) / counts.sum(), uap["fooling_rate"])


def _loss(state, params, x, y, delta):
    logits, _, _ = forward(state, params, x + delta, train=False)
    return float(jnp.mean(softmax_cross_entropy(logits, y)))


def test_one_uat_step_moves_delta_up_and_params_down(trained):
    state, ds = trained
    state = init_universal_state(state.replace(tx=optax.sgd(1e-2), opt_state=optax.sgd(1e-2).init(state.params)),
                                 ds.input_shape)
    x, y = jnp.asarray(ds.train.x[:64]), jnp.asarray(ds.train.y[:64])
    new = jax.jit(universal_adversarial_step(0.1, "linf", delta_step=0.01))(state, {"x": x, "y": y})[0]
    before = _loss(state, state.params, x, y, state.delta)
    assert _loss(state, state.params, x, y, new.delta) > before
    assert _loss(state, new.params, x, y, state.delta) < before
    assert float(jnp.abs(new.delta).max()) <= 0.1 + 1e-7


def test_shared_adversarial_objective(trained):
    state, ds = trained
    batch = {"x": jnp.asarray(ds.train.x[:32]), "y": jnp.asarray(ds.train.y[:32])}
    obj = shared_adversarial_objective(0.1, heap_size=8, norm="linf", adv_weight=0.5)
    loss, (_, m) = jax.jit(obj)(state.params, state, batch)
    assert float(m["adv_loss"]) > float(m["clean_loss"])
    np.testing.assert_allclose(loss, 0.5 * m["clean_loss"] + 0.5 * m["adv_loss"], rtol=1e-6)
    with pytest.raises(UserError):
        jax.jit(shared_adversarial_objective(0.1, heap_size=5))(state.params, state, batch)


def test_adversarial_noise_training(trained):
    state, ds = trained
    ant = init_noise_training(state, channels=1, seed=0, gen_lr=1e-4)
    x, y = jnp.asarray(ds.train.x[:64]), jnp.asarray(ds.train.y[:64])
    step = jax.jit(adversarial_noise_step(eps=2.0, seed=0))
    new, m = step(ant, {"x": x, "y": y})
    z = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(0), ant.step), x.shape)  # the step key
    noise = lambda gp: scale_to_sphere(ant.gen_apply({"params": gp}, z), 2.0)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(noise(ant.gen_params)).reshape(64, -1), axis=1), 2.0, rtol=1e-5)
    noisy = lambda gp: _loss(ant, ant.params, jnp.clip(x + noise(gp), 0, 1), y, 0.0)
    np.testing.assert_allclose(noisy(ant.gen_params), m["noisy_loss"], rtol=1e-5)
    assert noisy(new.gen_params) > noisy(ant.gen_params)  # the generator moved up the classifier's loss


def test_fit_with_a_robust_step_and_bad_options(trained):
    state, ds = trained
    uat = init_universal_state(state, ds.input_shape)
    out, hist = fit(uat, ds, TrainConfig(epochs=1, batch_size=64), step=universal_adversarial_step(0.1, "linf"),
                    progress=False)
    assert len(hist) == 1 and np.isfinite(hist[0]["train_loss"]) and float(jnp.abs(out.delta).max()) <= 0.1 + 1e-7
    for bad in (lambda: universal_adversarial_step(0.0), lambda: universal_adversarial_step(0.1, "l3"),
                lambda: shared_adversarial_objective(-1.0, 4), lambda: adversarial_noise_step(0.0),
                lambda: uap_deepfool(eval_logits_fn(state), ds.test.x[:4], 0.0),
                lambda: uap_sgd(eval_logits_fn(state), ds.test.x[:4], ds.test.y[:4], -0.1)):
        with pytest.raises(UserError):
            bad()
