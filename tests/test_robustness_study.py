"""The Table 1 driver of Pradhan et al. 2020 (repair_jax.studies.robustness) on its smoke config."""

import dataclasses
import json

import numpy as np
import pytest

from repair_jax.errors import UserError
from repair_jax.experiment import load_config, run_experiment
from repair_jax.studies.robustness import RobustnessStudy, aggregate, check_study
from repair_jax.train import TrainConfig


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
    # the most confused pairs (Zhong et al. 2022, Sec. 2.2): type1conf sums, over all pairs, to the summed per-class error
    t1 = np.asarray(lt["type1conf"])
    np.testing.assert_allclose(t1.sum(), np.sum(1 - np.asarray(lt["recall"])), atol=1e-5)
    same = [r for r in records if (r["level"], r["method"], r["model"]) == (lt["level"], lt["method"], lt["model"])]
    mean = np.mean([r["type1conf"] for r in same], axis=0)
    row = [r for r in rows if (r["level"], r["method"], r["model"]) == (lt["level"], lt["method"], lt["model"])][0]
    a, b = row["top_pairs"][0]["classes"]
    assert row["top_pairs"][0]["value"] == pytest.approx(mean[a, b]) == pytest.approx(mean[np.triu_indices(10, 1)].max())
    assert f"{a},{b} (" in (tmp_path / "tables.md").read_text()
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


def _records(diffs, tail_drop):
    """Two seeds of plain and of one method on a 4-class long tail; the method's balanced accuracy is
    plain's + diffs[seed], its recall drops by tail_drop[seed] on the two smallest classes."""
    recs = []
    for seed in (0, 1, 2):
        recall = np.array([0.9, 0.8, 0.6, 0.4]) + 0.01 * seed
        base = {"model": "cnn", "level": "longtail(10)", "seed": seed, "train_counts": [100, 46, 22, 10],
                "balanced_accuracy": float(recall.mean()), "macro_f1": 0.5 + 0.01 * seed}
        recs.append({**base, "method": "plain", "recall": recall.tolist()})
        changed = recall - np.array([0.0, 0.0, tail_drop[seed], tail_drop[seed]])
        recs.append({**base, "method": "augmix", "recall": changed.tolist(),
                     "balanced_accuracy": base["balanced_accuracy"] + diffs[seed], "macro_f1": base["macro_f1"]})
    return recs


def test_versus_plain_is_the_paired_t_test_and_head_tail_split_by_count(tmp_path):
    import scipy.stats

    from repair_jax.robustness.report import head_tail_recall, plot_recall_vs_class_size, versus_plain

    recs = _records(diffs=[-0.05, -0.04, -0.06], tail_drop=[0.10, 0.12, 0.08])
    rows = {r["metric"]: r for r in versus_plain(recs)}
    ba = rows["balanced_accuracy"]
    plain = [r["balanced_accuracy"] for r in recs if r["method"] == "plain"]
    aug = [r["balanced_accuracy"] for r in recs if r["method"] == "augmix"]
    assert ba["p"] == pytest.approx(scipy.stats.ttest_rel(aug, plain).pvalue)
    assert ba["difference"] == pytest.approx(-0.05) and ba["lower"] and ba["seeds"] == 3
    assert rows["macro_f1"]["difference"] == 0 and rows["macro_f1"]["p"] == 1.0 and not rows["macro_f1"]["lower"]
    (ht,) = head_tail_recall(recs)
    assert ht["head_change"] == pytest.approx(0.0) and ht["tail_change"] == pytest.approx(-0.10)
    assert ht["p"] == pytest.approx(scipy.stats.ttest_rel([-0.10, -0.12, -0.08], [0, 0, 0]).pvalue)
    assert ht["tail_carries_loss"]
    # a balanced level has no head and no tail
    assert head_tail_recall([{**r, "train_counts": [5, 5, 5, 5]} for r in recs]) == []
    plot_recall_vs_class_size(recs, tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 1000


def test_cpu_and_cifar100_configs_share_the_smoke_path_and_name_their_grids():
    smoke = load_config("experiments/configs/robustness_fashion_mnist.py", smoke=True)
    for name in ("robustness_fashion_mnist_cpu", "robustness_fashion_mnist_longtail_cpu", "robustness_cifar100_lt"):
        assert load_config(f"experiments/configs/{name}.py", smoke=True) == smoke
    cpu = load_config("experiments/configs/robustness_fashion_mnist_cpu.py")
    full = load_config("experiments/configs/robustness_fashion_mnist.py")
    assert (cpu.models, cpu.methods, cpu.levels, cpu.seeds) == (full.models, full.methods, full.levels, full.seeds)
    assert len(cpu.seeds) >= 3 and cpu.train.dataset == "fashion_mnist"
    # the longtail(100) rerun: the CPU run's recipe but batch 32 (the balanced column's 45 optimizer steps)
    lt = load_config("experiments/configs/robustness_fashion_mnist_longtail_cpu.py")
    assert lt.levels == ("longtail(100)",) and (lt.models, lt.methods, lt.seeds) == (cpu.models, cpu.methods, cpu.seeds)
    assert lt == dataclasses.replace(cpu, levels=lt.levels, train=dataclasses.replace(cpu.train, batch_size=32))
    cifar = load_config("experiments/configs/robustness_cifar100_lt.py")
    assert cifar.train.dataset == "cifar100" and {"resnet50", "squeezenet"} <= set(cifar.models)
    check_study(cifar)


@pytest.mark.parametrize("field,value,words", [("eps_linf", 0.0, "eps_linf"), ("eps_noise_l2", -1.0, "eps_noise_l2"),
                                               ("levels", ("longtail(lambda=1.5)",), "lambda"),
                                               ("methods", ("plain", "mixup"), "mixup")])
def test_bad_study_options_are_refused_before_any_work(field, value, words):
    import dataclasses

    with pytest.raises(UserError, match=words):
        dataclasses.replace(RobustnessStudy(train=TrainConfig(dataset="digits"), seeds=(0,)), **{field: value}).validate()


def test_the_driver_gives_a_bad_norm_bound_one_line_exit_2_and_writes_nothing(tmp_path):
    import dataclasses
    import subprocess
    import sys
    from pathlib import Path

    config = dataclasses.replace(RobustnessStudy(train=TrainConfig(dataset="digits"), seeds=(0,)), eps_linf=0.0)
    path = tmp_path / "bad_config.py"
    path.write_text("from repair_jax.studies.robustness import RobustnessStudy\nfrom repair_jax.train import TrainConfig\n\n"
                    f"def get_config(smoke=False):\n    return {config!r}\n")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "experiments.run", str(path), "--out", str(out), "--no-progress"],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if "Warning" not in l and l.strip()]
    assert len(lines) == 1 and "eps_linf" in lines[0] and "Traceback" not in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("method", ["plain", "uat", "ant"])
def test_every_method_trains_on_003s_standard_augmentation(method):
    """Pradhan et al. 2020, "Training Routine": flips and rotations for every method. One step of each METHODS entry
    equals the method's bare step on the batch augmented with the step key's draws."""
    import jax
    import jax.numpy as jnp
    import optax

    from repair_jax.data import load_dataset
    from repair_jax.models import create_model, init_variables
    from repair_jax.objectives import erm_objective
    from repair_jax.robustness import (
        adversarial_noise_step, standard_augment, step_key, universal_adversarial_step,
    )
    from repair_jax.robustness.methods import METHODS
    from repair_jax.train import create_train_state, train_step_fn

    ds = load_dataset("digits", seed=0, train_limit=64)
    config = RobustnessStudy(train=TrainConfig(dataset="digits", batch_size=32), max_rotation=30.0)
    model = create_model("mlp", ds.num_classes, hidden=(16,))
    state = create_train_state(model, init_variables(model, jax.random.PRNGKey(0), ds.input_shape), optax.sgd(0.1))
    state = METHODS[method].init(state, ds, 3)
    batch = {"x": jnp.asarray(ds.train.x[:32]), "y": jnp.asarray(ds.train.y[:32])}
    bare = {"plain": lambda: train_step_fn(erm_objective),
            "uat": lambda: universal_adversarial_step(config.eps_linf, "linf"),
            "ant": lambda: adversarial_noise_step(config.eps_noise_l2, seed=3)}[method]()
    augmented = {**batch, "x": standard_augment(30.0)(step_key(3, state), batch["x"])}
    assert not np.allclose(augmented["x"], batch["x"])
    got, _ = jax.jit(METHODS[method].make_step(config, 3))(state, batch)
    want, _ = jax.jit(bare)(state, augmented)
    unaugmented, _ = jax.jit(bare)(state, batch)
    leaves = lambda s: jax.tree_util.tree_leaves(s.params)
    for g, w in zip(leaves(got), leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(g, u, atol=1e-6) for g, u in zip(leaves(got), leaves(unaugmented)))
