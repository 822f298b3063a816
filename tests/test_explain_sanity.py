"""Cascading parameter randomisation (Adebayo 2022, Sec. 4.4) as a config: the smoke size through the driver."""

import dataclasses

import numpy as np
import pytest

from repair_jax.errors import UserError
from repair_jax.experiment import load_config, run_experiment
from repair_jax.io import read_json

CONFIG = "experiments/configs/explain_cascading_randomization.py"


def test_cascading_randomization_smoke_steps_and_bounds(tmp_path):
    import jax

    from repair_jax.models import create_model, init_variables

    config = load_config(CONFIG, smoke=True)
    run_experiment(config, tmp_path, progress=False)
    result = read_json(tmp_path / "results.json")
    fresh = init_variables(create_model(config.train.model, 10, **config.train.model_kwargs), jax.random.PRNGKey(0), (8, 8, 1))
    assert result["layers"] == ["none"] + list(reversed(list(fresh["params"])))  # every layer, top down
    assert set(result["curves"]) == set(config.methods)
    for curves in result["curves"].values():
        for measure in ("ssim", "rank"):
            steps = curves[measure]
            assert len(steps) == len(fresh["params"]) + 1
            assert steps[0] == {"mean": 1.0, "sem": 0.0}  # nothing randomised: identical maps
            assert all(-1 <= s["mean"] <= 1 and s["sem"] >= 0 for s in steps)
    assert "| grad |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "cascading.png").stat().st_size > 0 and (tmp_path / "maps.png").stat().st_size > 0
    run_experiment(config, tmp_path / "again", progress=False)  # same seeds, same numbers
    assert read_json(tmp_path / "again" / "results.json") == result


def test_similarity_curves_use_magnitudes():
    """A sign flip keeps |attribution|: SSIM of heat maps and rank correlation of |maps| stay 1 (scipy's
    spearmanr of the absolute values is the reference for an unrelated map)."""
    from scipy import stats

    from repair_jax.studies.explain_sanity import similarity_curves

    rng = np.random.default_rng(0)
    ref, other = rng.normal(size=(2, 3, 8, 8, 1))
    curves = similarity_curves({"m": [ref, -ref, other]})["m"]
    assert curves["ssim"][1][0] == pytest.approx(1.0) and curves["rank"][1][0] == pytest.approx(1.0)
    expected = np.mean([stats.spearmanr(np.abs(a).ravel(), np.abs(b).ravel()).statistic for a, b in zip(ref, other)])
    assert curves["rank"][2][0] == pytest.approx(expected)


@pytest.mark.parametrize("change", [{"methods": ("grad", "nope")}, {"explain_examples": 0}])
def test_bad_options_raise_before_training(change, tmp_path, monkeypatch):
    import repair_jax.studies.explain_sanity as sanity

    monkeypatch.setattr(sanity, "train_study_model", lambda *a: pytest.fail("trained before checking options"))
    config = dataclasses.replace(load_config(CONFIG, smoke=True), **change)
    with pytest.raises(UserError):
        run_experiment(config, tmp_path, progress=False)


def test_rank_correlation_leaves_out_constant_maps():
    """A constant (e.g. all-zero GradCAM) map has no ranking: that pair is left out of the mean."""
    from scipy import stats

    from repair_jax.explain import rank_correlation

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 3, 16))
    b[1] = 0.0
    mean, _ = rank_correlation(a, b)
    assert mean == pytest.approx(np.mean([stats.spearmanr(a[i], b[i]).statistic for i in (0, 2)]))
    assert np.isnan(rank_correlation(a[1:2], b[1:2])[0])
    assert rank_correlation(a, a) == (1.0, 0.0)
