"""The registry of influence methods (repair_jax.influence.methods): every entry's declared capabilities
against its behaviour (a fitted operator, the Hessian, a projection, checkpoints, the models it takes, its
own options), the CLI's --method choices and the LDS harness against the registry, and the docs' table of
methods against the registry."""

import os

os.environ.setdefault("TQDM_DISABLE", "1")

import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from repair_jax.errors import UserError
from repair_jax.influence import (
    FIT_METHODS, INFLUENCE_METHODS, KFAC_METHODS, ClassifierLoss, InfluenceFit, fit_influence, get_influence_method,
)
from repair_jax.influence import hvp
from repair_jax.influence.evaluate import LDS_METHODS, attribution_scores, self_influence, validate_lds_args
from repair_jax.models import create_model, init_variables

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small(digits):
    """Softmax regression (a linen module) on 30 real digits at 4 x 4, float32: (loss, params, train, test)."""
    m = create_model("mlp", 10, hidden=())
    params = init_variables(m, jax.random.PRNGKey(0), (4, 4, 1))["params"]
    x, y = jnp.asarray(digits.train.x[:36, ::2, ::2]), jnp.asarray(digits.train.y[:36])
    return ClassifierLoss(m.apply), params, {"x": x[:30], "y": y[:30]}, {"x": x[30:], "y": y[30:]}


def test_registry_names_and_lookup():
    assert all(name == m.name for name, m in INFLUENCE_METHODS.items())
    assert set(INFLUENCE_METHODS) >= {"explicit", "cg", "lissa", "kfac", "ekfac", "tracin", "trak"}
    assert FIT_METHODS == tuple(n for n, m in INFLUENCE_METHODS.items() if m.fits)
    assert KFAC_METHODS == ("kfac", "ekfac")
    for name, m in INFLUENCE_METHODS.items():
        assert get_influence_method(name) is m and m.description and m.citation and " 20" in m.citation
    with pytest.raises(UserError, match="unknown influence method 'nope'; choose one of " + ", ".join(INFLUENCE_METHODS)):
        get_influence_method("nope")


@pytest.mark.parametrize("name", list(INFLUENCE_METHODS))
def test_every_method_scores_and_its_fit_is_declared(small, name):
    """attribute / self_influence give finite (T, N) / (K,) scores; a method declaring a fitted operator has
    one (its block solve gives the same scores), a method declaring none is refused by fit_influence."""
    loss, params, train, test = small
    m = get_influence_method(name)
    scores = attribution_scores(name, loss, params, train, test, damping=0.1, projection_dim=16)
    assert scores.shape == (6, 30) and np.all(np.isfinite(scores))
    si = self_influence(name, loss, params, train, [0, 3, 5], damping=0.1, projection_dim=16)
    assert si.shape == (3,) and np.all(np.isfinite(si))
    if m.fits:
        fit = fit_influence(loss, params, train, method=name, damping=0.1, chunk_size=None)
        assert isinstance(fit, InfluenceFit)
        np.testing.assert_allclose(fit.scores(test)[0], scores, rtol=1e-4, atol=1e-6)
    else:
        with pytest.raises(UserError, match=f"{name} has no fitted inverse-HVP operator; choose one of "
                                            + ", ".join(FIT_METHODS)):
            fit_influence(loss, params, train, method=name, damping=0.1)


def test_needs_hessian_is_exactly_the_methods_that_form_hessian_vector_products(small, monkeypatch):
    loss, params, train, test = small

    def no_hessian(*args, **kwargs):
        raise RuntimeError("a Hessian-vector product")
    monkeypatch.setattr(hvp, "shifted_operator", no_hessian)
    for name, m in INFLUENCE_METHODS.items():
        if m.needs_hessian:
            with pytest.raises(RuntimeError, match="Hessian-vector product"):
                attribution_scores(name, loss, params, train, test, damping=0.1)
        else:
            attribution_scores(name, loss, params, train, test, damping=0.1, projection_dim=16)


def test_needs_projection_is_exactly_the_methods_whose_scores_depend_on_projection_dim(small):
    loss, params, train, test = small
    for name, m in INFLUENCE_METHODS.items():
        if m.needs_projection:
            with pytest.raises(UserError, match="projection dimension"):
                attribution_scores(name, loss, params, train, test, damping=0.1, projection_dim=0)
            a, b = (attribution_scores(name, loss, params, train, test, damping=0.1, projection_dim=k) for k in (8, 64))
            assert not np.allclose(a, b)
        elif m.curvature == "none":  # the cheap one: the others never read projection_dim either (keyword ignored)
            a, b = (attribution_scores(name, loss, params, train, test, projection_dim=k) for k in (0, 64))
            np.testing.assert_array_equal(a, b)


def test_own_options_are_refused_by_the_methods_that_do_not_declare_them(small):
    loss, params, train, _ = small
    values = {"max_iter": 5, "scale": 2.0, "fisher": "empirical", "seed": 1}
    for name in FIT_METHODS:
        m = get_influence_method(name)
        for option, value in values.items():
            if option in m.options:
                fit_influence(loss, params, train, method=name, damping=0.1, **{option: value})
            else:
                takers = [n for n, e in INFLUENCE_METHODS.items() if option in e.options]
                with pytest.raises(UserError, match=f"{option} is an option of the {', '.join(takers)} method"):
                    fit_influence(loss, params, train, method=name, damping=0.1, **{option: value})


def _nnx_model():
    from flax import nnx

    class Linear(nnx.Module):
        def __init__(self, rngs):
            self.fc = nnx.Linear(16, 10, rngs=rngs)

        def __call__(self, x):
            return self.fc(x.reshape(x.shape[0], -1))
    return Linear(nnx.Rngs(0))


def test_linen_only_methods_refuse_an_nnx_model_and_name_the_others(small):
    from repair_jax.classifier import as_classifier

    _, _, train, test = small
    model = _nnx_model()
    loss, params = ClassifierLoss.from_classifier(model), as_classifier(model).params
    takers = [n for n, m in INFLUENCE_METHODS.items() if "nnx" in m.model_kinds]
    assert set(takers) == set(INFLUENCE_METHODS) - set(KFAC_METHODS)
    for name, m in INFLUENCE_METHODS.items():
        if m.linen_only:
            with pytest.raises(UserError, match=f"{name} supports linen models only .* not this nnx model; "
                                                f"choose one of {', '.join(takers)}"):
                fit_influence(loss, params, train, method=name, damping=0.1)
            with pytest.raises(UserError, match="not this nnx model"):
                attribution_scores(name, loss, params, train, test, damping=0.1)
    assert np.isfinite(attribution_scores("cg", loss, params, train, test, damping=0.1)).all()


def test_uses_checkpoints_tracin_scores_a_run_without_them_at_its_final_weights_and_says_so(small):
    from repair_jax.influence.workflow import METHODS, _tracin_scores
    from repair_jax.models import create_model

    loss, params, train, test = small
    assert [n for n in METHODS if INFLUENCE_METHODS[n].uses_checkpoints] == ["tracin"]
    m = create_model("mlp", 10, hidden=())
    run = types.SimpleNamespace(epoch_checkpoints=lambda: [], config=types.SimpleNamespace(epochs=3, lr=0.1),
                                variables={"params": params, "batch_stats": {}})
    state = types.SimpleNamespace(apply_fn=m.apply)
    scores, solver = _tracin_scores(run, state, train, None, jnp.float32, None, test)
    assert solver["checkpoints"] == 1 and "final weights only" in solver["note"] and scores.shape == (6, 30)


def test_the_cli_method_choices_are_the_registry_methods_that_score_a_run():
    from repair_jax.cli import build_parser
    from repair_jax.influence.workflow import METHODS, validate_influence_args

    parser = build_parser(["influence"])
    sub = next(a for a in parser._actions if getattr(a, "choices", None) and "influence" in a.choices)
    method = next(a for a in sub.choices["influence"]._actions if a.dest == "method")
    assert tuple(method.choices) == METHODS
    assert set(METHODS) == {n for n, m in INFLUENCE_METHODS.items() if m.fits or m.uses_checkpoints}
    with pytest.raises(UserError, match="scale is an option of the lissa method"):
        validate_influence_args(test_index=0, method="cg", scale=2.0)  # before any data is loaded


def test_every_lds_method_is_a_registry_method():
    from repair_jax.studies.influence_lds import LdsStudy

    assert set(LDS_METHODS) == set(INFLUENCE_METHODS) and set(LdsStudy().methods) <= set(LDS_METHODS)
    with pytest.raises(UserError, match="unknown influence method 'bogus'"):
        validate_lds_args(0.5, 2, ("bogus",))


def test_the_docs_table_of_methods_is_the_registry():
    from repair_jax.influence.workflow import METHODS

    page = (ROOT / "docs" / "papers" / "influence.md").read_text()
    yn = lambda b: "yes" if b else "no"
    expected = [f"| `{n}` | {m.description} | {m.curvature} | {yn(m.fits)} | {yn(m.uses_checkpoints)} | "
                f"{', '.join(m.model_kinds)} | {', '.join(m.options) or '-'} | {yn(n in METHODS)} | {m.citation} |"
                for n, m in INFLUENCE_METHODS.items()]
    section = page.split("## The methods (`repair_jax.influence.INFLUENCE_METHODS`)")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert rows == expected
