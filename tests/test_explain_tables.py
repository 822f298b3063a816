"""Thesis Tables 4.2-4.4 analogues (repair_jax.studies.explain_tables): the three configs at smoke size (their smoke
tests: tests/test_experiments.py leaves them here), each KS test against scipy.stats.ks_2samp on the samples
the records keep, the influence ranking against a closed-form Hessian, ICM by hand."""

import dataclasses
import json

import jax
import numpy as np
import pytest
from scipy import stats

from repair_jax.errors import UserError
from repair_jax.experiment import load_config, run_experiment

CONCEPTS = "experiments/configs/explain_concepts_table4_2.py"
RANKING = "experiments/configs/explain_training_ranking_table4_3.py"
OOD = "experiments/configs/explain_ood_table4_4.py"


def _records(out):
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()[1:]]


def _check_ks(test, a, b):
    ref = stats.ks_2samp(a, b)
    assert test["statistic"] == ref.statistic and np.isclose(test["p"], ref.pvalue)
    assert test["rejected"] == (ref.pvalue < 0.05)


@pytest.mark.slow  # a smoke run of a whole config, as in tests/test_experiments.py
def test_concept_study_smoke_ks_tests_are_ks_2samp_of_the_tcav_scores(tmp_path):
    config = load_config(CONCEPTS, smoke=True)
    summary = run_experiment(config, tmp_path, progress=False)
    (rec,) = _records(tmp_path)
    t = rec["tcav"]
    assert len(t["spurious_signal"]["scores"]) == config.random_sets
    _check_ks(rec["tests"]["k_ssd"], t["spurious_signal"]["scores"], t["spurious_signal"]["random_scores"])
    _check_ks(rec["tests"]["fam"], t["normal_signal"]["scores"], t["normal_signal"]["random_scores"])
    pooled = lambda cs: np.concatenate([c["scores"] for c in cs.values()])
    _check_ks(rec["tests"]["ccm"], pooled(t["spurious_concepts"]), pooled(t["normal_concepts"]))
    assert summary["table"]["stripe"]["k_ssd"]["statistic"] == rec["tests"]["k_ssd"]["statistic"]
    md = (tmp_path / "results.md").read_text()
    assert "| K-SSD |" in md and "| CCM |" in md and "| FAM |" in md and "thesis (Tag)" in md
    assert run_experiment(config, tmp_path, progress=False) == summary  # resumed: the same numbers


@pytest.mark.slow  # a smoke run of a whole config, as in tests/test_experiments.py
def test_ranking_study_smoke_ks_tests_are_ks_2samp_of_the_icm(tmp_path):
    config = load_config(RANKING, smoke=True)
    summary = run_experiment(config, tmp_path, progress=False)
    (rec,) = _records(tmp_path)
    icm = {cell: v["icm"] for cell, v in rec["rankings"].items()}
    assert all(len(v) == config.models.explain_examples for v in icm.values())
    _check_ks(rec["tests"]["k_ssd"], icm["spurious_spu"], icm["spurious_norm"])
    _check_ks(rec["tests"]["ccm"], icm["spurious_norm"], icm["normal_norm"])
    _check_ks(rec["tests"]["fam"], icm["normal_spu"], icm["normal_norm"])
    assert json.loads((tmp_path / "results.json").read_text())["table"] == summary["table"]


def test_ranking_metrics_by_hand():
    from repair_jax.studies.explain_tables import ranking_metrics

    ranking = np.array([[2, 0, 1, 3], [3, 1, 0, 2]])
    train_y = np.array([0, 1, 1, 0])
    # row 0, top 2 = points 2, 0 (labels 1, 0); row 1, top 2 = points 3, 1 (labels 0, 1)
    m = ranking_metrics(ranking, train_y, test_y=[1, 0], aligned_class=0, top=2)
    assert m == {"icm": [0.5, 0.5], "aligned": [0.5, 0.5]}
    m = ranking_metrics(ranking, train_y, test_y=[1, 1], aligned_class=1, top=3)
    assert m == {"icm": [2 / 3, 1 / 3], "aligned": [2 / 3, 1 / 3]}  # row 1: points 3, 1, 0 (labels 0, 1, 0)


def test_training_point_ranking_matches_a_closed_form_hessian(trained_digits_mlp):
    """-grad l(z_t)^T (H + damping I)^{-1} grad l(z_i) (Adebayo 2022, Eq. 3.1) of the last dense layer in numpy: for
    softmax regression on features h (with a 1 for the bias), grad l = h (p - e_y)^T and
    H = mean_i (h_i h_i^T) kron (diag(p_i) - p_i p_i^T)."""
    from repair_jax.explain import eval_apply_fn
    from repair_jax.studies.explain_spurious import StudyModel
    from repair_jax.studies.explain_tables import training_point_ranking
    from repair_jax.train import predict, predict_labels

    _, state, ds = trained_digits_mlp
    apply_fn, params = eval_apply_fn(state)
    model = StudyModel(apply_fn, params, lambda x: predict_labels(state, x), lambda x: predict(state, x)[1])
    train, x, damping = ds.train.subset(np.arange(60)), ds.test.x[:3], 0.05
    ranking = training_point_ranking(model, train, x, damping)
    assert ranking.shape == (3, 60)

    w, b = (np.asarray(params["Dense_1"][k], np.float64) for k in ("kernel", "bias"))
    k = len(b)

    def grads_and_probs(feats, y):
        h = np.hstack([np.asarray(feats, np.float64), np.ones((len(feats), 1))])
        logits = h[:, :-1] @ w + b
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        return np.einsum("nd,nk->ndk", h, p - np.eye(k)[y]).reshape(len(h), -1), h, p

    g_train, h, p = grads_and_probs(predict(state, train.x)[1], train.y)
    g_test, _, _ = grads_and_probs(predict(state, x)[1], np.asarray(model.predict(x)))
    curv = np.stack([np.diag(q) - np.outer(q, q) for q in p])
    hess = np.mean([np.kron(np.outer(a, a), c) for a, c in zip(h, curv)], axis=0) + damping * np.eye(h.shape[1] * k)
    scores = -g_test @ np.linalg.solve(hess, g_train.T)
    ordered = np.take_along_axis(scores, ranking, axis=1)
    assert np.all(np.diff(ordered, axis=1) >= -1e-4 * np.abs(scores).max())  # most helpful (most negative) first
    assert not np.all(np.diff(np.sort(scores, axis=1), axis=1) == 0)  # the order is informative


@pytest.mark.slow  # a smoke run of a whole config, as in tests/test_experiments.py
def test_ood_study_smoke_and_resized_digits(tmp_path, fashion_mnist_idx):  # the IDX files of conftest
    from repair_jax.data import Split, load_dataset
    from repair_jax.studies.explain_tables import resized_dataset

    config = load_config(OOD, smoke=True)
    summary = run_experiment(config, tmp_path, progress=False)
    assert summary["accuracies"]["ood_dataset_name"] == "digits resized to 28x28"
    table = json.loads((tmp_path / "results.json").read_text())["table"]
    assert set(table) == set(config.methods)
    for cells in table.values():
        assert -1 <= cells["ssim"]["mean"] <= 1 and -1 <= cells["rank"]["mean"] <= 1
    assert "SSIM (fashion_mnist → digits model)" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "maps.png").is_file()

    ds = load_dataset("digits", seed=0)
    flat = ds.train.x.copy()
    flat[:] = 0.25  # a constant image stays constant under bilinear resizing
    big = resized_dataset(dataclasses.replace(ds, train=Split(flat, ds.train.y)), (28, 28, 1))
    assert big.train.x.shape == (len(ds.train), 28, 28, 1) and big.test.x.shape[1:] == (28, 28, 1)
    np.testing.assert_allclose(big.train.x, 0.25, atol=1e-6)
    np.testing.assert_array_equal(big.train.y, ds.train.y)


def test_module_outputs_traces_a_model_once():
    from repair_jax.explain.cam import module_outputs
    from repair_jax.models import create_model, init_variables

    model = create_model("cnn", 3, width=2, dense=4)
    variables = jax.eval_shape(lambda: init_variables(model, jax.random.PRNGKey(0), (8, 8, 1)))  # shapes suffice
    params, calls = variables["params"], []
    stats = jax.tree_util.tree_map(lambda v: np.ones(v.shape, v.dtype), variables["batch_stats"])

    def apply_fn(p, x):
        calls.append(1)
        return model.apply({"params": p, "batch_stats": stats}, x, train=False)[0]

    first = module_outputs(apply_fn, params, (8, 8, 1))
    assert module_outputs(apply_fn, params, (8, 8, 1)) == first and len(calls) == 1
    assert list(first) == ["Conv_0", "Conv_1", "Conv_2", "Conv_3"]
    module_outputs(apply_fn, params, (8, 8, 1), conv_only=False)  # another question: traced again
    assert len(calls) == 2


@pytest.mark.slow  # a smoke run of a whole config, as in tests/test_experiments.py
def test_mislabelled_study_smoke_explains_flipped_points_with_both_labels(tmp_path, fashion_mnist_idx):
    from repair_jax.studies.explain_tables import MislabelledExplanationStudy

    config = load_config("experiments/configs/explain_mislabelled_sec4_3.py", smoke=True)
    summary = run_experiment(config, tmp_path, progress=False)
    numbers = summary["numbers"]
    assert numbers["explained"] == config.explain_examples
    assert numbers["noisy_dataset_name"] == "fashion_mnist with 10% of training labels flipped (synthetic)"
    table = json.loads((tmp_path / "results.json").read_text())["table"]
    assert set(table) == set(config.methods)
    for cells in table.values():
        assert -1 <= cells["ssim"]["mean"] <= 1 and -1 <= cells["rank"]["mean"] <= 1
    assert "SSIM (clean → noisy model)" in (tmp_path / "results.md").read_text()
    # the Sec. 4.3 precondition is measured over every flipped label and written by the driver
    assert 0 <= numbers["noisy_fits_all_flipped_labels"] <= 1 and numbers["flipped"] > 0
    check = json.loads((tmp_path / "preconditions.json").read_text())["checks"][0]
    assert check["value"] == numbers["noisy_fits_all_flipped_labels"] and check["passed"] is not None
    assert (tmp_path / "results.md").read_text().startswith("**Preconditions: ")
    for bad in ({"flip_fraction": 0.0}, {"flip_fraction": 1.0}, {"explain_examples": 1}, {"methods": ("nope",)}):
        with pytest.raises(UserError):
            dataclasses.replace(config, **bad).validate()
