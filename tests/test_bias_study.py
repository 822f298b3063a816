"""The 004 Que-2 analogue study: config loading, a smoke-size run on digits, resume, DOB test."""

import dataclasses

import numpy as np
from scipy import stats

from repair_jax.bias.study import BiasMitigationStudy, dob_test
from repair_jax.experiment import load_config, run_experiment
from repair_jax.io import read_json, read_jsonl

CONFIG = "experiments/configs/bias_que2_fashion_mnist.py"


def test_configs_load():
    full, smoke = load_config(CONFIG), load_config(CONFIG, smoke=True)
    assert isinstance(full, BiasMitigationStudy) and isinstance(smoke, BiasMitigationStudy)
    assert smoke.variants == full.variants and smoke.model == full.model == "pyramidnet"
    assert smoke.epochs < full.epochs and len(smoke.seeds) < len(full.seeds)


def test_dob_test_is_welch():
    rows = [{"variant": v, "dob": d} for v, d in
            [("plain", 0.10), ("plain", 0.12), ("plain", 0.11), ("x", 0.05), ("x", 0.06), ("x", 0.055)]]
    got = dob_test(rows, "x")
    want = stats.ttest_ind([0.05, 0.06, 0.055], [0.10, 0.12, 0.11], equal_var=False).pvalue
    np.testing.assert_allclose(got["p_value"], want)
    np.testing.assert_allclose(got["dob_minus_plain"], 0.055 - 0.11)
    assert got["lowers_dob"] is bool(want < 0.05)


def test_smoke_study_on_digits_runs_and_resumes(tmp_path):
    config = dataclasses.replace(load_config(CONFIG, smoke=True), dataset="digits", train_limit=200,
                                 model="mlp", model_kwargs=(("hidden", (16,)),),
                                 variants=("plain", "mtl_augment"), seeds=(0, 1))
    out = tmp_path / "study"
    summary = run_experiment(config, out, progress=False, command="test")
    table = summary["table"]
    assert [e["name"] for e in table] == ["plain", "mtl_augment"]
    runs = read_jsonl(out / "runs.jsonl")[1:]
    assert len(runs) == 4
    dobs = [r["dob"] for r in runs if r["variant"] == "plain"]
    np.testing.assert_allclose(table[0]["dob"], np.mean(dobs))
    assert set(table[1]["head_accuracies"]) == {"head1", "head2", "head3", "ensemble"}
    assert table[1]["dob_test"]["p_value"] is not None
    assert {"results.json", "results.md", "comparison.png", "experiment.json"} <= {p.name for p in out.iterdir()}
    before = (out / "runs.jsonl").read_text()
    again = run_experiment(config, out, progress=False, command="test")  # resumed: nothing retrained
    assert (out / "runs.jsonl").read_text() == before
    assert again["table"] == read_json(out / "results.json")["table"]


def test_que1_config_and_smoke_run_on_digits_captions(tmp_path):
    from repair_jax.bias.multimodal_study import MultimodalBiasStudy

    full = load_config("experiments/configs/bias_que1_fashion_mnist_captions.py")
    smoke = load_config("experiments/configs/bias_que1_fashion_mnist_captions.py", smoke=True)
    assert isinstance(full, MultimodalBiasStudy) and smoke.variants == full.variants
    config = dataclasses.replace(smoke, captions="digits_captions", backbone_kwargs=(("mlp", (("hidden", (16,)),)),),
                                 variants=("mlp", "mlp+mtl"), seeds=(0,))
    table = run_experiment(config, tmp_path / "q1", progress=False, command="test")["table"]
    assert [e["name"] for e in table] == ["mlp", "mlp+mtl"]
    assert set(table[1]["head_accuracies"]) == {"fusion", "cnn", "lstm", "ensemble"}
    assert "disparate_impact" in table[0]["per_class"]
