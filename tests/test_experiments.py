"""Every experiment config at smoke size, the driver's refusal of a different config, bad configs refused
before any work, and the w-os frontier analysis against hand computations."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from repair_jax.errors import UserError
from repair_jax.experiment import config_paths, load_config, run_config, run_experiment
from repair_jax.io import RESUMABLE_HEADER, read_json, read_jsonl
from repair_jax.repair import read_study_records

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = config_paths(ROOT / "experiments" / "configs")
FAST = {"wr_os_frontier"}  # reads finished results, runs no model
# configs whose smoke run has its own test with config-specific checks: not run a second time here
DEDICATED = {**{name: "test_experiments_d2.py" for name in (
    "guiding_noisy_labels", "guiding_noisy_labels_fi0", "guiding_spurious", "guiding_credit",
    "guiding_full_fashion_mnist", "influence_loo", "influence_ranking", "influence_ranking_ablation",
    "label_flip_sensitivity")},
    "explain_spurious_table4_1": "test_explain_study.py", "robustness_fashion_mnist": "test_robustness_study.py",
    "robustness_fashion_mnist_cpu": "test_robustness_study.py", "robustness_cifar100_lt": "test_robustness_study.py",
    "robustness_fashion_mnist_longtail_cpu": "test_robustness_study.py",
    "explain_cascading_randomization": "test_explain_sanity.py",
    **{name: "test_explain_tables.py" for name in (
        "explain_concepts_table4_2", "explain_training_ranking_table4_3", "explain_ood_table4_4", "explain_mislabelled_sec4_3")},
    "bias_que1_fashion_mnist_captions": "test_bias_study.py", "bias_que2_fashion_mnist": "test_bias_study.py",
    "bias_que1_fashion_mnist_captions_cpu": "test_bias_study.py", "bias_que2_fashion_mnist_cpu": "test_bias_study.py"}


@pytest.fixture
def at_root(monkeypatch):
    """Configs name committed files relative to the repository root (as `python -m experiments.run` does)."""
    monkeypatch.chdir(ROOT)


def check_wr_study(config, out: Path) -> None:
    from repair_jax.runs import load_run

    run = load_run(out / "run")
    assert dataclasses.asdict(run.config.resolved()) == dataclasses.asdict(config.train.resolved())
    tables = (out / "tables.md").read_text()
    r = config.repair
    assert f"{r.optimizer} lr {r.lr} ({r.schedule})" in tables and f"L2 {r.l2:g}" in tables
    for rule in config.studies:
        recs = read_study_records(out / rule.name)
        assert {x["method"] for x in recs} == set(r.methods)
        summary = read_json(out / rule.name / "summary.json")
        assert summary["config"]["optimizer"] == r.optimizer and summary["config"]["l2"] == r.l2
        groups = summary["targets"]["groups"]
        if rule.groups:
            assert groups == [list(g) for g in rule.groups]
        triplet = len(groups[0]) == 3
        kind = "cd" if triplet else ("type2conf" if run.info["multilabel"] else "type1conf")
        assert {x["error_kind"] for x in recs} == {kind}
        assert f"### {rule.name}" in tables and "| orig-ft |" in tables
        if config.frontier_rhos:
            res = read_json(out / rule.name / "w_os_frontier.json")
            assert len(res["rows"]) == config.frontier_rhos and res["orig_ft"]["seeds"] == r.seeds
        if rule.name in config.all_pairs:
            k = run.info["num_classes"]
            assert len(read_json(out / rule.name / "w_os_all_pairs.json")["pairs"]) == k * (k - 1) // 2
    if run.info["multilabel"]:
        assert "test mAP" in tables and "| mAP |" in tables


def check_irepair(config, out: Path) -> None:
    from repair_jax.studies.irepair import table_jobs

    for t in config.tables:
        recs = [x for x in read_jsonl(out / f"{t.name}.jsonl") if RESUMABLE_HEADER not in x]
        record = read_json(out / f"{t.name}.json")
        assert record["runs"] == len(recs) == len(table_jobs(t, config.protocol, record["classes"])) > 0
        assert {r["seed"] for r in recs} == set(range(config.protocol.seeds))
        assert all(0 <= r["accuracy_after"] <= 1 for r in recs)
        md = (out / f"{t.name}.md").read_text()
        assert "| R | method | runs |" in md and record["table"] in md
        if t.plotted():
            assert (out / f"{t.name}.png").stat().st_size > 0


def check_train_and_diagnose(config, out: Path) -> None:
    summary = read_json(out / "summary.json")
    assert 0 <= summary["test_accuracy"] <= 1 and summary["config"]["dataset"] == config.train.dataset
    assert read_json(out / "diagnosis" / "diagnosis.json")["top_pairs"]


def check_comparison(config, out: Path) -> None:
    lines = (out / "compare.md").read_text().splitlines()
    assert lines[0] == "| pair | " + " | ".join(label for label, _ in config.studies) + " |"
    assert lines[-1].startswith("| pairs repaired / pairs with any confusion |")


def check_outputs(config, out: Path) -> None:
    """experiment.json names the config and says it finished; then the checks of the config's type."""
    from repair_jax.experiment import config_record

    meta = read_json(out / "experiment.json")
    assert meta["config"] == json.loads(json.dumps(config_record(config))) and meta["finished"]
    name = type(config).__name__
    if name == "Sweep":
        for sub_name, sub in config.configs:
            check_outputs(sub, out / sub_name)
        return
    checks = {"WRStudy": check_wr_study, "IRepairStudy": check_irepair, "TrainAndDiagnose": check_train_and_diagnose,
              "FrontierComparison": check_comparison}
    if name in checks:
        checks[name](config, out)
    else:  # another package's config: some well-formed result besides experiment.json
        results = [p for p in out.rglob("*") if p.is_file() and p.name != "experiment.json"]
        assert results
        for p in results:
            if p.suffix == ".json":
                read_json(p)
            elif p.suffix == ".jsonl":
                read_jsonl(p)


def test_every_dedicated_config_has_its_smoke_test():
    for name, test_file in DEDICATED.items():
        assert (ROOT / "experiments" / "configs" / f"{name}.py").is_file(), name
        text = (ROOT / "tests" / test_file).read_text()
        assert name in text or name.upper() in text or "NOISY" in text, (name, test_file)


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem, marks=() if p.stem in FAST else pytest.mark.slow)
                                  for p in CONFIGS if p.stem not in DEDICATED])
def test_every_config_at_smoke_size(path, tmp_path, at_root):
    config = load_config(str(path), smoke=True)
    out = tmp_path / path.stem
    run_experiment(config, out, progress=False)
    check_outputs(config, out)


def test_resuming_into_an_out_of_another_config_is_refused_naming_the_field(tmp_path, at_root, capsys):
    """A different config into a finished OUT: one line naming the field, exit 2; --force restarts it."""
    from experiments.run import main

    out = tmp_path / "cmp"
    assert main(["wr_os_frontier", "--out", str(out), "--no-progress"]) == 0
    table = (out / "compare.md").read_text()
    capsys.readouterr()
    config = load_config("wr_os_frontier")
    for changed, field in ((dataclasses.replace(config, top=3), "top"),
                           (dataclasses.replace(config, studies=config.studies[:2]), "studies")):
        with pytest.raises(UserError, match=f"holds another configuration \\(fields.{field} differs\\)"):
            run_experiment(changed, out, progress=False)
    assert (out / "compare.md").read_text() == table
    run_experiment(dataclasses.replace(config, top=3), out, progress=False, force=True)
    assert len((out / "compare.md").read_text().splitlines()) < len(table.splitlines())
    assert main(["wr_os_frontier", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("experiments.run: error:") and "top" in err and len(err.splitlines()) == 1
    assert main(["no_such_config"]) == 2
    assert "no experiment config 'no_such_config'" in capsys.readouterr().err


def _bad(name: str, **changes):
    def make():
        config = load_config(name)
        for path, value in changes.items():  # "repair.lr" -> config.repair.lr
            *parents, leaf = path.split(".")
            objs = [config]
            for p in parents:
                objs.append(getattr(objs[-1], p))
            new = dataclasses.replace(objs[-1], **{leaf: value})
            for obj, p in zip(reversed(objs[:-1]), reversed(parents)):
                new = dataclasses.replace(obj, **{p: new})
            config = new
        return config
    return make


@pytest.mark.parametrize("make, message", [
    (_bad("wr_fashion_mnist", **{"train.model_kwargs": {"width": 0, "dense": 32}}),
     "model option width must be a positive number"),
    (_bad("wr_fashion_mnist", **{"repair.lr": -1.0}), "learning rate must be positive"),
    (_bad("wr_fashion_mnist", **{"repair.seeds": 0}), "seeds must be >= 1"),
    (_bad("wr_fashion_mnist", **{"repair.methods": ("orig", "w-zz")}), "unknown method"),
    (_bad("wr_fashion_mnist", all_pairs=("pairs",)), "all_pairs must name studies"),
    (_bad("wr_fashion_mnist", frontier_rhos=1), "frontier_rhos must be >= 2"),
    (_bad("wr_fashion_mnist_full", run=None), "either train"),
    (_bad("irepair_table1", **{"protocol.correct_size": 0}), "correct_size must be >= 1"),
    (_bad("irepair_scenarios", **{"protocol.lr": -1.0}), "learning rate must be positive"),
    (_bad("irepair_rq2", tables=()), "tables with distinct names"),
    (_bad("fashion_mnist_cnn", top_k=0), "top_k must be >= 1"),
])
def test_bad_configs_are_refused_before_anything_is_written(make, message, tmp_path, at_root):
    out = tmp_path / "o"
    with pytest.raises(UserError, match=message):
        run_experiment(make(), out, progress=False)
    assert not out.exists()


def test_bad_sweep_setting_is_refused_before_the_first_setting(tmp_path, at_root):
    sweep = load_config("wr_cifar")
    name, last = sweep.configs[-1]
    bad = dataclasses.replace(sweep, configs=sweep.configs[:-1] + (
        (name, dataclasses.replace(last, repair=dataclasses.replace(last.repair, methods=("w-zz",)))),))
    with pytest.raises(UserError, match="unknown method"):
        run_experiment(bad, tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


def test_frontier_verdicts_match_a_hand_computation():
    """orig-ft: accuracy 0.80, error 0.100 (5 runs); lambda1 0.25, one point of accuracy allowed."""
    from repair_jax.repair.frontier import frontier, select_on_fine_grid

    rows = [{"rho": 0.01, "accuracy": 0.780, "target_error": 0.050},   # -50% error, -2.0 pt: over budget
            {"rho": 0.1, "accuracy": 0.795, "target_error": 0.070},    # -30% error, -0.5 pt: both thresholds
            {"rho": 0.5, "accuracy": 0.810, "target_error": 0.090},    # -10% error: not enough
            {"rho": 1.0, "accuracy": 0.805, "target_error": 0.100}]
    res = frontier([dict(r) for r in rows], 0.80, 0.10, 0.25, 0.01)
    assert [r["within_thresholds"] for r in res["rows"]] == [False, True, False, False]
    assert np.allclose([r["error_reduction_vs_orig_ft"] for r in res["rows"]], [0.5, 0.3, 0.1, 0.0])
    assert np.allclose([r["accuracy_change_vs_orig_ft"] for r in res["rows"]], [-0.02, -0.005, 0.01, 0.005])
    assert res["best_within_accuracy_budget"]["rho"] == 0.1 and res["any_rho_within_thresholds"]
    assert frontier([dict(rows[0])], 0.80, 0.10, 0.25, 0.01)["best_within_accuracy_budget"] is None

    # Sec. 4.4 on the selection split: tier 1 (error <= 0.75 x the original's 0.1) -> highest accuracy: 0.1
    select_rows = [{"rho": 0.01, "accuracy": 0.70, "target_error": 0.04},
                   {"rho": 0.1, "accuracy": 0.75, "target_error": 0.07},
                   {"rho": 0.5, "accuracy": 0.90, "target_error": 0.09},
                   {"rho": 1.0, "accuracy": 0.80, "target_error": 0.10}]
    orig = {"accuracy": 0.80, "target_error": 0.10}
    base_accs, base_errs = [0.799, 0.80, 0.801, 0.80, 0.80], [0.099, 0.10, 0.101, 0.10, 0.10]
    chosen = select_on_fine_grid(res["rows"], select_rows, orig, base_accs, base_errs, 0.25, 0.01)
    # rho 0.1 (tier 1), then rho 0.5, which beats the original on both and the first does not
    assert [r["rho"] for r in chosen] == [0.1, 0.5]
    # w-os is deterministic: one value against orig-ft's seed runs, by a one-sample t-test (not its
    # value repeated as five samples of a rank-sum test)
    p = scipy.stats.ttest_1samp(base_errs, 0.07).pvalue
    assert np.isclose(chosen[0]["err_p"], p) and p < 0.05
    assert [r["repaired"] for r in chosen] == [True, False]
    assert [r["verdict"] for r in chosen] == ["yes", "no"]
    # orig-ft's runs all equal: no test is possible, so the same cut is "untested", not a repair
    flat = select_on_fine_grid(res["rows"], select_rows, orig, [0.8] * 3, [0.1] * 3, 0.25, 0.01)
    assert flat[0]["err_p"] is None and flat[0]["verdict"] == "untested" and not flat[0]["repaired"]


@pytest.fixture(scope="module")
def mlp_study(tmp_path_factory):
    """An untrained digits MLP (epochs 0), its w-os study on the pair (3, 5) with 2 orig-ft seeds."""
    from repair_jax.repair import RepairConfig, Targets, run_study
    from repair_jax.studies.wr import trained_run
    from repair_jax.train import TrainConfig

    root = tmp_path_factory.mktemp("frontier")
    run = trained_run(root / "run", TrainConfig(dataset="digits", model="mlp", model_kwargs={"hidden": [16]},
                                                epochs=0), progress=False)
    cfg = RepairConfig(epochs=1, seeds=2, rhos=(0.5,), methods=("orig", "orig-ft", "w-os"))
    run_study(run.model, run.variables, run.dataset(), Targets(((3, 5),)), root / "study", cfg, progress=False,
              plots=False)
    return run, root / "study"


def test_w_os_tradeoff_limits():
    """rho = 1 is the original prediction; rho = 0 sends every target prediction elsewhere (no confusion left)."""
    from repair_jax.repair import Targets, evaluate_outputs, w_os_tradeoff

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=200)
    y = rng.integers(0, 4, 200)
    t = Targets(((1, 2),))
    one, zero = w_os_tradeoff(probs, y, t, [1.0, 0.0])
    ref = evaluate_outputs(probs, y, t, False)
    assert (one["accuracy"], one["target_error"]) == (ref["accuracy"], ref["target_error"])
    assert zero["target_error"] == 0.0 and ref["target_error"] > 0


def test_study_frontier_and_all_pairs_agree(mlp_study):
    """The target frontier against the study's orig-ft; the all-pairs map gives the study's pair the same
    answers; the comparison table lists the top pairs and the repaired counts."""
    from repair_jax.repair import frontier as fr

    run, study = mlp_study
    s = fr.StudyOutputs(study, run)
    rhos = fr.frontier_rhos(5)
    res = fr.study_frontier(s, rhos)
    assert [round(r["rho"], 6) for r in res["rows"]] == [0.001, 0.005623, 0.031623, 0.177828, 1.0]
    base = [r for r in read_study_records(study) if r["method"] == "orig-ft"]
    assert res["orig_ft"]["seeds"] == 2
    assert np.isclose(res["orig_ft"]["accuracy"], np.mean([r["accuracy"] for r in base]))
    assert res["selected_on_val"] and all(r["rho"] in [x["rho"] for x in res["rows"]] for r in res["selected_on_val"])
    assert (study / "w_os_frontier.png").stat().st_size > 0
    every = fr.all_pairs_frontier(s, rhos, progress=False)
    assert {tuple(e["pair"]) for e in every["pairs"]} == {(i, j) for i in range(10) for j in range(i + 1, 10)}
    errs = [e["orig_ft_target_error"] for e in every["pairs"]]
    assert errs == sorted(errs, reverse=True)
    mine = next(e for e in every["pairs"] if e["pair"] == [3, 5])
    assert np.isclose(mine["orig_ft_target_error"], res["orig_ft"]["target_error"])
    assert mine["best_within_accuracy_budget"] == res["best_within_accuracy_budget"]
    assert [r["rho"] for r in mine["selected_on_val"]] == [r["rho"] for r in res["selected_on_val"]]
    assert "| 3 / 5 |" in (study / "w_os_all_pairs.md").read_text()
    table = fr.compare_table([("mlp", study), ("again", study)]).splitlines()
    assert table[0] == "| pair | mlp | again |" and len(table) == 2 + 5 + 1
    top = every["pairs"][0]
    assert table[2].startswith(f"| {' / '.join(top['names'])} | #1, {top['orig_ft_target_error']:.3f}: ")
    n_rep = sum(e["repaired"] for e in every["pairs"])
    assert table[-1].startswith(f"| pairs repaired / pairs with any confusion | {n_rep} / ")
    with pytest.raises(UserError, match="all-pairs frontier result not found"):
        fr.compare_table([("none", study.parent / "none")])
    with pytest.raises(UserError, match="study summary not found"):
        fr.StudyOutputs(study.parent / "none", run)


def test_run_config_default_out_and_smoke_out():
    from repair_jax.experiment import default_out

    assert default_out("wr_fashion_mnist", configs_dir=ROOT / "experiments" / "configs") == Path(
        "experiments/results/wr_fashion_mnist")
    assert default_out("irepair_table1", smoke=True, configs_dir=ROOT / "experiments" / "configs") == Path(
        "runs/smoke/irepair_table1")
    with pytest.raises(UserError, match="no experiment config"):
        run_config("nope", configs_dir=ROOT / "experiments" / "configs")


def test_an_existing_run_trained_otherwise_is_refused(mlp_study):
    """A config's run directory that holds a run of another recipe is not silently reused."""
    from repair_jax.studies.wr import trained_run

    run, _ = mlp_study
    assert trained_run(run.path, run.config, progress=False).info == run.info
    with pytest.raises(UserError, match=r"trained otherwise \(epochs differs"):
        trained_run(run.path, dataclasses.replace(run.config, epochs=3), progress=False)
    with pytest.raises(UserError, match="no run.json there"):
        trained_run(run.path.parent / "none", None, progress=False)


@pytest.mark.parametrize("case", ["syntax_error", "raises", "out_under_a_file", "out_unwritable", "unknown_flag"])
def test_driver_bad_input_is_one_line_exit_2_and_leaves_nothing(case, tmp_path, capsys):
    """Issue 26: the experiment driver's bad inputs that gave tracebacks (a config with a syntax error,
    --out under a file or where nothing can be written) or a multi-line usage (an unknown flag)."""
    import os

    from experiments.run import main

    good = ROOT / "experiments" / "configs" / "wr_os_frontier.py"
    (tmp_path / "file.txt").write_text("a file")
    (tmp_path / "bad_syntax.py").write_text("def get_config(smoke=False):\n    return (\n")
    (tmp_path / "raises.py").write_text("import no_such_module_xyz\n")
    out = str(tmp_path / "o")
    argv = {"syntax_error": [str(tmp_path / "bad_syntax.py"), "--out", out],
            "raises": [str(tmp_path / "raises.py"), "--out", out],
            "out_under_a_file": [str(good), "--out", str(tmp_path / "file.txt" / "o")],
            "out_unwritable": [str(good), "--out", "/sys/o" if os.geteuid() == 0 else "/proc/o"],
            "unknown_flag": [str(good), "--out", out, "--bogus"]}[case]
    message = {"syntax_error": "bad_syntax.py:2: the config file is not valid Python",
               "raises": "ModuleNotFoundError", "out_under_a_file": "which is a file",
               "out_unwritable": "cannot create files", "unknown_flag": "unrecognized arguments: --bogus"}[case]
    try:
        rc = main([*argv, "--no-progress"])
    except SystemExit as e:  # argparse's error path
        rc = e.code
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(err) == 1 and message in err[0], err
    assert err[0].startswith("python -m experiments.run: error:" if case == "unknown_flag" else "experiments.run: error:")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad_syntax.py", "file.txt", "raises.py"]


def test_a_resumed_run_sums_its_segments_wall_time(tmp_path):
    """experiment.json keeps every run segment: a resumed run adds one and its wall_s is their sum (a stopped
    segment counts as unknown); --force starts the record afresh."""
    import json

    from repair_jax.experiment import earlier_segments, load_config, run_experiment

    config = load_config("experiments/configs/explain_spurious_table4_1.py", smoke=True)
    run_experiment(config, tmp_path, progress=False)
    first = json.loads((tmp_path / "experiment.json").read_text())
    assert len(first["segments"]) == 1 and first["wall_s"] == first["segments"][0]["wall_s"]
    run_experiment(config, tmp_path, progress=False)
    second = json.loads((tmp_path / "experiment.json").read_text())
    assert second["segments"][0] == first["segments"][0] and len(second["segments"]) == 2
    assert second["wall_s"] == round(sum(s["wall_s"] for s in second["segments"]), 1)
    stopped = {**second, "finished": None, "started": "2026-01-01T00:00:00+00:00"}
    (tmp_path / "experiment.json").write_text(json.dumps(stopped))
    assert earlier_segments(tmp_path / "experiment.json")[-1] == {"started": "2026-01-01T00:00:00+00:00",
                                                                  "finished": None, "wall_s": None}
    run_experiment(config, tmp_path, progress=False, force=True)
    assert len(json.loads((tmp_path / "experiment.json").read_text())["segments"]) == 1


def test_irepair_study_force_restarts_its_job_logs(tmp_path, at_root):
    """--force restarts an I-REPAIR study's job logs as every other study's (it used to resume them silently)."""
    config = load_config("irepair_table1", smoke=True)
    out = tmp_path / "ir"
    run_experiment(config, out, progress=False)
    log = out / f"{config.tables[0].name}.jsonl"
    lines = log.read_text().splitlines()
    planted = json.loads(lines[1])
    planted["key"] = "planted"
    log.write_text("\n".join(lines + [json.dumps(planted)]) + "\n")
    run_experiment(config, out, progress=False)  # resumed: the planted record is kept
    assert "planted" in log.read_text()
    run_experiment(config, out, progress=False, force=True)
    assert "planted" not in log.read_text() and len(log.read_text().splitlines()) == len(lines)
    check_irepair(config, out)


def test_a_second_run_of_the_same_out_is_refused_while_the_first_lives(tmp_path, at_root):
    """OUT/.lock holds the writing process: a live holder refuses a second run (one UserError, nothing written);
    a stale lock (its process gone) is taken over; the lock is gone after the run."""
    import subprocess
    import sys

    from repair_jax.errors import UserError

    config = load_config("explain_spurious_table4_1", smoke=True)
    out = tmp_path / "locked"
    out.mkdir()
    (out / ".lock").write_text(str(os.getppid()))  # a live process other than this one
    with pytest.raises(UserError, match="being written by process"):
        run_experiment(config, out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [".lock"]
    run_experiment(config, tmp_path / "done", progress=False)  # a finished OUT, being resumed by another process
    (tmp_path / "done" / ".lock").write_text(str(os.getppid()))
    before = (tmp_path / "done" / "results.jsonl").read_text()
    with pytest.raises(UserError, match="being written by process"):
        run_experiment(config, tmp_path / "done", progress=False)
    assert (tmp_path / "done" / "results.jsonl").read_text() == before
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / ".lock").write_text(gone.stdout.strip())  # its process has exited: stale
    run_experiment(config, out, progress=False)
    assert not (out / ".lock").exists() and (out / "table.json").is_file()
