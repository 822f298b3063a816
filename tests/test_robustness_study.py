"""The Table 1 driver of 003 (repair_jax.robustness.study) on its smoke config."""

import json

import numpy as np
import pytest

from repair_jax.errors import UserError
from repair_jax.experiment import load_config, run_experiment
from repair_jax.robustness.study import RobustnessStudy, aggregate, check_study


def test_smoke_config_runs_every_method(tmp_path):
    config = load_config("experiments/configs/robustness_fashion_mnist.py", smoke=True)
    summary = run_experiment(config, tmp_path, progress=False)
    rows = json.loads((tmp_path / "summary.json").read_text())["rows"]
    assert summary["cells"] == len(config.methods) * len(config.levels) == len(rows)
    for row in rows:
        assert 0 <= row["balanced_accuracy"]["mean"] <= 1 and 0 <= row["fooling_rate"]["mean"] <= 1
        assert len(row["recall"]) == 10
    records = [json.loads(l) for l in (tmp_path / "results.jsonl").read_text().splitlines()[1:]]
    lt = [r for r in records if r["level"] == "longtail(10)"][0]
    assert lt["dataset"] == "digits:longtail(10)" and lt["train_counts"][0] == 10 * lt["train_counts"][-1]
    # balanced accuracy is the mean of the per-class recalls on the (balanced) test split
    np.testing.assert_allclose(lt["balanced_accuracy"], np.mean(lt["recall"]), rtol=1e-6)
    assert "balanced_accuracy" in (tmp_path / "tables.md").read_text()
    again = run_experiment(config, tmp_path, progress=False)  # resumed: nothing retrained
    assert again == summary


def test_aggregate_mean_std_and_bad_method():
    recs = [{"model": "m", "method": "plain", "level": "balanced", "seed": s, "recall": [s, 1.0],
             **{k: float(s) for k in ("balanced_accuracy", "macro_f1", "accuracy", "dob", "fooling_rate")}}
            for s in (1, 2, 6)]
    row = aggregate(recs)[0]
    assert row["macro_f1"] == {"mean": 3.0, "std": pytest.approx(np.std([1, 2, 6]))}
    assert row["recall"] == [3.0, 1.0]
    with pytest.raises(UserError):
        check_study(RobustnessStudy(methods=("plain", "mixup")))
