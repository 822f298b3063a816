"""The Sharma n.d., Que-2 analogue study: config loading, a smoke-size run on digits, resume, DOB test, and the
WR rows (w-os / w-loss of Zhong et al. 2022 on the plain model's most confused pair)."""

import dataclasses

import jax
import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import confusion_matrix

from repair_jax.classifier import as_classifier
from repair_jax.studies import bias as study
from repair_jax.bias.compare import AVERAGE_COLUMNS, evaluate_predictions
from repair_jax.studies.bias import BiasMitigationStudy, baseline_of, dob_test
from repair_jax.errors import UserError
from repair_jax.experiment import load_config, run_experiment
from repair_jax.io import read_json, read_jsonl

CONFIG = "experiments/configs/bias_que2_fashion_mnist.py"


def _digits_config(**changes):
    config = load_config(CONFIG, smoke=True)
    train = dataclasses.replace(config.train, dataset="digits", train_limit=200, model="mlp",
                                model_kwargs={"hidden": (16,)})
    return dataclasses.replace(config, train=train, **changes)


def test_configs_load():
    full, smoke = load_config(CONFIG), load_config(CONFIG, smoke=True)
    assert isinstance(full, BiasMitigationStudy) and isinstance(smoke, BiasMitigationStudy)
    assert smoke.variants == full.variants and smoke.train.model == full.train.model == "pyramidnet"
    assert smoke.train.epochs < full.train.epochs and len(smoke.seeds) < len(full.seeds)
    assert {"wr_w-os", "wr_w-loss"} <= set(full.variants)
    assert study.wr_rhos(full) == study.wr_rhos(smoke) == {"w-os": 0.1, "w-loss": 0.5}


@pytest.mark.parametrize("name", ["bias_que2_fashion_mnist", "bias_que1_fashion_mnist_captions"])
def test_cpu_configs_shrink_the_full_ones_and_share_their_smoke_size(name):
    """bias_que2_fashion_mnist_cpu / bias_que1_fashion_mnist_captions_cpu (the committed CPU tables): same
    type, variants and seeds as the full config, fewer epochs on a train limit; at smoke size the full
    config's (run by this file's smoke tests, so tests/test_experiments.py leaves them here)."""
    full, cpu = load_config(name), load_config(f"{name}_cpu")
    assert type(cpu) is type(full) and cpu.variants == full.variants and cpu.seeds == full.seeds == (0, 1, 2)
    assert cpu.train.epochs < full.train.epochs and cpu.train.train_limit < (full.train.train_limit or 60000)
    assert load_config(f"{name}_cpu", smoke=True) == load_config(name, smoke=True)


def test_dob_test_is_welch():
    rows = [{"variant": v, "dob": d} for v, d in
            [("plain", 0.10), ("plain", 0.12), ("plain", 0.11), ("x", 0.05), ("x", 0.06), ("x", 0.055)]]
    got = dob_test(rows, "x")
    want = stats.ttest_ind([0.05, 0.06, 0.055], [0.10, 0.12, 0.11], equal_var=False).pvalue
    np.testing.assert_allclose(got["p_value"], want)
    np.testing.assert_allclose(got["dob_minus_baseline"], 0.055 - 0.11)
    assert got["lowers_dob"] is bool(want < 0.05) and got["baseline"] == "plain"
    # Que-1 has no plain row: a variant is tested against its backbone without the "+mtl" suffix
    assert baseline_of("resnet18+mtl", ("resnet18", "resnet18+mtl")) == "resnet18"
    assert baseline_of("resnet18", ("resnet18", "resnet18+mtl")) is None
    assert baseline_of("augment", ("plain", "augment")) == "plain" and baseline_of("plain", ("plain",)) is None
    rows += [{"variant": "x+mtl", "dob": d} for d in (0.02, 0.03, 0.025)]
    np.testing.assert_allclose(dob_test(rows, "x+mtl", "x")["dob_minus_baseline"], 0.025 - 0.055)


@pytest.mark.slow
def test_smoke_config_runs_every_variant_and_resumes(tmp_path, monkeypatch):
    """The config at smoke size (this is its smoke test: tests/test_experiments.py leaves it here)."""
    trained = []  # (variant, seed) of every model trained: the plain model of a seed serves its WR rows
    train = study.trained_variant
    monkeypatch.setattr(study, "trained_variant", lambda c, v, s, d: trained.append((v, s)) or train(c, v, s, d))
    config = load_config(CONFIG, smoke=True)
    assert config.train.dataset == "digits" and len(config.seeds) == 2
    out = tmp_path / "study"
    summary = run_experiment(config, out, progress=False, command="test")
    models = [v for v in config.variants if not v.startswith(study.WR_PREFIX)]
    assert sorted(trained) == sorted((v, s) for v in models for s in config.seeds)
    table = summary["table"]
    assert [e["name"] for e in table] == list(config.variants)
    runs = read_jsonl(out / "runs.jsonl")[1:]
    assert len(runs) == len(config.variants) * len(config.seeds)
    dobs = [r["dob"] for r in runs if r["variant"] == "plain"]
    np.testing.assert_allclose(table[0]["dob"], np.mean(dobs))
    by_name = {e["name"]: e for e in table}
    assert set(by_name["mtl_augment"]["head_accuracies"]) == {"head1", "head2", "head3", "ensemble"}
    for e in table[1:]:
        assert e["dob_test"] == dob_test(runs, e["name"]) and e["dob_test"]["p_value"] is not None
    wr = by_name["wr_w-os"]
    assert (wr["wr_method"], wr["rho"]) == ("w-os", 0.1) and set(wr["repaired_pairs"]) == {"0", "1"}
    assert "WR rows" in (out / "results.md").read_text()
    assert {"results.json", "results.md", "comparison.png", "experiment.json"} <= {p.name for p in out.iterdir()}
    before, n_trained = (out / "runs.jsonl").read_text(), len(trained)
    again = run_experiment(config, out, progress=False, command="test")  # resumed: nothing retrained
    assert (out / "runs.jsonl").read_text() == before and len(trained) == n_trained
    assert again["table"] == read_json(out / "results.json")["table"]


@pytest.fixture(scope="module")
def plain_digits():
    from repair_jax.data import load_dataset

    config = _digits_config(seeds=(0,))
    ds = load_dataset("digits", seed=0, train_limit=200)
    return config, ds, study.trained_variant(config, "plain", 0, ds)


def _most_confused_pair(state, split) -> tuple:
    """Reference: the pair of largest type1conf = mean(P(a|b), P(b|a)) (Zhong et al. 2022, Sec. 2.2.1), via sklearn."""
    from repair_jax.train import predict

    p = confusion_matrix(split.y, predict(state, split.x)[0].argmax(1), labels=range(10), normalize="true")
    m = np.triu(0.5 * (p + p.T), 1)
    return m, np.unravel_index(m.argmax(), m.shape)


def test_wr_w_os_row_scales_only_the_pair(plain_digits):
    config, ds, plain = plain_digits
    row = study.run_wr_variant(config, "wr_w-os", 0, ds, plain)
    m, (a, b) = _most_confused_pair(plain[0], ds.val)
    assert m[tuple(row["repaired_pair"])] == m[a, b]
    a, b = row["repaired_pair"]
    probs = np.array(jax.nn.softmax(plain[1]))  # w-os by hand (Zhong et al. 2022, Sec. 3.4.1): rho on A, B where predicted A or B
    hit = np.isin(probs.argmax(1), [a, b])
    probs[np.ix_(hit, [a, b])] *= 0.1
    want = evaluate_predictions("wr_w-os", ds.test.y, np.log(probs), ds.num_classes, curves=False)
    for c in AVERAGE_COLUMNS:
        np.testing.assert_allclose(row[c], want[c], rtol=1e-5, atol=1e-6)
    assert row["confusion_matrix"] == want["confusion_matrix"]
    cm = confusion_matrix(ds.test.y, probs.argmax(1), labels=range(10), normalize="true")
    np.testing.assert_allclose(row["pair_confusion"], 0.5 * (cm[a, b] + cm[b, a]), rtol=1e-6)
    assert (row["wr_method"], row["rho"], row["variant"]) == ("w-os", 0.1, "wr_w-os")


def test_wr_w_loss_row_is_the_fine_tuned_models(plain_digits):
    from repair_jax.models import create_model
    from repair_jax.repair import RepairConfig, Targets, fine_tune, make_method
    from repair_jax.train import predict

    config, ds, (state, _, _) = plain_digits
    row = study.run_wr_variant(config, "wr_w-loss", 0, ds, plain_digits[2])
    method = make_method("w-loss", Targets((tuple(row["repaired_pair"]),)), 0.5)
    cfg = RepairConfig(epochs=config.wr_epochs, lr=config.wr_lr, batch_size=config.train.batch_size)
    tuned = fine_tune(method, 0, as_classifier(create_model("mlp", 10, hidden=(16,)),
                                                  {"params": state.params, "batch_stats": state.batch_stats}), ds, cfg)
    want = evaluate_predictions("wr_w-loss", ds.test.y, predict(tuned, ds.test.x)[0], 10, curves=False)
    for c in AVERAGE_COLUMNS:
        np.testing.assert_allclose(row[c], want[c], rtol=1e-5, atol=1e-6)
    assert row["confusion_matrix"] == want["confusion_matrix"]


@pytest.mark.parametrize("changes, message", [
    (dict(variants=("plain", "wr_w-foo")), "unknown study variant"),
    (dict(variants=("plain", "wr_orig-ft")), "unknown study variant"),
    (dict(variants=("wr_w-dbr",)), "needs a rho"),
    (dict(wr_rhos=(("w-os", 1.0), ("w-loss", 0.5))), r"\(0, 1\)"),
    (dict(wr_rhos=(("w-os", 0.1), ("w-loss", 0.0))), r"\(0, 1\)"),
])
def test_bad_wr_options_fail_before_training(tmp_path, monkeypatch, changes, message):
    monkeypatch.setattr(study, "trained_variant", lambda *a: pytest.fail("trained before checking"))
    with pytest.raises(UserError, match=message):
        run_experiment(_digits_config(**changes), tmp_path / "bad", progress=False, command="test")


@pytest.mark.slow
def test_que1_config_at_smoke_size_on_digits_captions(tmp_path):
    """The Que-1 config at smoke size (its smoke test: tests/test_experiments.py leaves it here)."""
    from repair_jax.studies.bias_multimodal import MultimodalBiasStudy

    full = load_config("experiments/configs/bias_que1_fashion_mnist_captions.py")
    smoke = load_config("experiments/configs/bias_que1_fashion_mnist_captions.py", smoke=True)
    assert isinstance(full, MultimodalBiasStudy) and smoke.variants == full.variants
    assert smoke.captions == "digits_captions" and full.captions == "fashion_mnist_captions"
    table = run_experiment(smoke, tmp_path / "q1", progress=False, command="test")["table"]
    assert [e["name"] for e in table] == ["resnet18", "shufflenet_v2", "resnet18+mtl", "shufflenet_v2+mtl"]
    assert set(table[2]["head_accuracies"]) == {"fusion", "cnn", "lstm", "ensemble"}
    assert "disparate_impact" in table[0]["per_class"]


@pytest.mark.parametrize("config, message", [
    ("BiasMitigationStudy(padain_p=1.5)", r"PAdaIN probability p must be in \[0, 1\], got 1.5"),
    ("BiasMitigationStudy(padain_p=-0.1)", r"PAdaIN probability p must be in \[0, 1\]"),
    ("BiasMitigationStudy(head_alphas=(1.0, -1.0, 1.0))", "head weight alpha must be >= 0, got -1.0"),
    ("MultimodalBiasStudy(alphas=(-1.0, 1.0))", "head weight alpha must be >= 0, got -1.0"),
    ("MultimodalBiasStudy(captions='fashion_mnist')", "'fashion_mnist' is not a captioned"),
    ("MultimodalBiasStudy(variants=('resnet18+foo',))", "unknown variant 'resnet18\\+foo'"),
])
def test_bad_bias_configs_exit_2_with_one_line_before_loading(tmp_path, capsys, config, message):
    """Bad options in a config (the acceptance criteria of the Sharma n.d. study: alpha < 0, p outside [0, 1], a multimodal model on an
    image-only data set) through the driver: one line, exit 2, nothing written."""
    import re

    from experiments.run import main

    path = tmp_path / "bad_bias.py"
    path.write_text("from repair_jax.studies.bias import BiasMitigationStudy\n"
                    "from repair_jax.studies.bias_multimodal import MultimodalBiasStudy\n\n\n"
                    f"def get_config(smoke=False):\n    return {config}\n")
    assert main([str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err), err
    assert not (tmp_path / "out").exists()
