"""The studies floor (issue 28): committed results still belong to their configs after the studies moved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from repair_jax.experiment import config_paths, config_record, load_config, upgraded_record
from repair_jax.io import first_difference

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
CONFIGS = ROOT / "experiments" / "configs"
COMMITTED = sorted(p.parent.name for p in RESULTS.glob("*/experiment.json"))


def test_every_committed_result_has_a_config_file():
    assert COMMITTED, "no committed results found"
    names = {p.stem for p in config_paths(CONFIGS)}
    assert [n for n in COMMITTED if n not in names] == []


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_result_config_loads_validates_and_resumes(name):
    """Its config file loads and validates, and the record in experiment.json (written before the move, naming
    the old modules) is the same configuration: a rerun would resume that directory rather than refuse it."""
    config = load_config(str(CONFIGS / f"{name}.py"))
    if hasattr(config, "validate"):
        config.validate()
    new = config_record(config)
    assert new["type"].startswith("repair_jax.studies."), new["type"]
    old = json.loads((RESULTS / name / "experiment.json").read_text())["config"]
    assert first_difference(upgraded_record(old, new), new) is None


def test_upgraded_record_maps_only_moved_types_and_none_defaults():
    new = {"type": "repair_jax.studies.wr.WRStudy", "fields": {"train": {"seed": 0, "init_seed": None}}}
    old = {"type": "repair_jax.repair.experiments.WRStudy", "fields": {"train": {"seed": 0}}}
    assert first_difference(upgraded_record(old, new), new) is None
    other = {"type": "repair_jax.repair.experiments.Sweep", "fields": {"train": {"seed": 0}}}
    assert first_difference(upgraded_record(other, new), new) == "type"
    changed = {"type": "repair_jax.repair.experiments.WRStudy", "fields": {"train": {"seed": 1}}}
    assert first_difference(upgraded_record(changed, new), new) == "fields.train.seed"
    added = {"type": "repair_jax.studies.wr.WRStudy", "fields": {"train": {"seed": 0, "init_seed": 3}}}
    assert first_difference(upgraded_record(old, added), added) == "fields.train.init_seed"


def test_a_moved_results_directory_resumes(tmp_path):
    """run_experiment's own check accepts a directory whose experiment.json names the old module."""
    from repair_jax.experiment import _check_out

    config = load_config(str(CONFIGS / "wr_fashion_mnist.py"), smoke=True)
    record = config_record(config)
    old = dict(record, type="repair_jax.repair.experiments.WRStudy")
    (tmp_path / "experiment.json").write_text(json.dumps({"config": old}))
    _check_out(tmp_path, record, force=False)  # no error
    (tmp_path / "experiment.json").write_text(json.dumps({"config": dict(old, type="repair_jax.studies.wr.Sweep")}))
    with pytest.raises(Exception, match="type differs"):
        _check_out(tmp_path, record, force=False)


# ----------------------------------------------------------------------------- tables from the committed logs
# Each committed study whose records are logged reproduces its committed table from those records alone (the
# computation of the table did not change when the studies moved: no rerun needed).

def _records(name: str, log: str) -> list[dict]:
    lines = [json.loads(line) for line in (RESULTS / name / log).read_text().splitlines() if line.strip()]
    return [r for r in lines if "resumable_config" not in r]


def _fields(name: str) -> dict:
    return json.loads((RESULTS / name / "experiment.json").read_text())["config"]["fields"]


def _robustness(name):
    from repair_jax.robustness.report import head_tail_recall, report_markdown, versus_plain
    from repair_jax.studies.robustness import aggregate, confused_pairs_markdown, table_markdown

    records = _records(name, "results.jsonl")
    rows = aggregate(records)
    sig, ht = versus_plain(records), head_tail_recall(records)
    levels = tuple(_fields(name)["levels"])
    return {"tables.md": "\n".join(table_markdown(rows, levels, m) for m in ("balanced_accuracy", "macro_f1"))
            + "\n" + report_markdown(sig, ht) + confused_pairs_markdown(rows)}


def _guiding(tables):
    def regenerate(name):
        from repair_jax.studies import guiding

        return {"tables.md": getattr(guiding, tables)(_records(name, "rows.jsonl"))}
    return regenerate


def _lds(name):
    from repair_jax.studies.influence_lds import lds_table

    return {"lds.md": lds_table(_records(name, "cells.jsonl"))}


def _bias(title):
    def regenerate(name):
        from repair_jax.studies.bias import format_study, summarize_study

        names = json.loads((RESULTS / name / "results.json").read_text())["class_names"]
        table = summarize_study(_records(name, "runs.jsonl"), _fields(name)["variants"])
        return {"results.md": format_study(table, names, title)}
    return regenerate


REGENERATED = {
    "robustness_fashion_mnist_cpu": _robustness,
    "robustness_fashion_mnist_longtail_cpu": _robustness,
    "guiding_noisy_labels": _guiding("noisy_labels_tables"),
    "guiding_noisy_labels_fi0": _guiding("noisy_labels_tables"),
    "guiding_spurious": _guiding("spurious_tables"),
    "influence_lds": _lds,
    "bias_que2_fashion_mnist_cpu": _bias("Bias mitigation study (Sharma n.d., Que-2 analogue)"),
    "bias_que1_fashion_mnist_captions_cpu": _bias("LSTM-CNN bias study (Sharma n.d., Que-1 analogue)"),
}


def _json_table(log: str, file: str, summarize, spurious_models_only: bool = False):
    """A study whose JSON result holds ``table`` = ``summarize(records)`` (compared as JSON, rounded); with
    ``spurious_models_only`` the records whose models meet the thesis's definitions only (Adebayo 2022, Sec. 4.2.1)."""
    def regenerate(name):
        import importlib

        from repair_jax.studies.preconditions import split_by_definitions

        module, fn = summarize.rsplit(".", 1)
        records = _records(name, log)
        table = getattr(importlib.import_module(module), fn)(
            split_by_definitions(records)[0] if spurious_models_only else records)
        return {file: json.dumps({"table": json.loads(json.dumps(table))}, sort_keys=True)}
    return regenerate


REGENERATED_JSON = {
    "explain_spurious_table4_1": _json_table("results.jsonl", "table.json", "repair_jax.studies.explain_spurious.summarize"),
    "explain_concepts_table4_2": _json_table("results.jsonl", "results.json",
                                             "repair_jax.studies.explain_tables.summarize_tests"),
    "explain_training_ranking_table4_3": _json_table("results.jsonl", "results.json",
                                                     "repair_jax.studies.explain_tables.summarize_tests"),
    "explain_spurious_table4_1_conditions": _json_table("results.jsonl", "table.json",
                                                        "repair_jax.studies.explain_spurious.summarize", True),
    "explain_concepts_table4_2_conditions": _json_table("results.jsonl", "results.json",
                                                        "repair_jax.studies.explain_tables.summarize_tests", True),
    "explain_training_ranking_table4_3_conditions": _json_table(
        "results.jsonl", "results.json", "repair_jax.studies.explain_tables.summarize_tests", True),
}


@pytest.mark.parametrize("name", sorted(REGENERATED_JSON))
def test_committed_json_table_reproduces_from_its_log(name):
    for file, text in REGENERATED_JSON[name](name).items():
        committed = json.loads((RESULTS / name / file).read_text())["table"]
        assert _close(json.loads(text)["table"], committed), f"{name}/{file} differs"


def _close(a, b) -> bool:
    """Equal JSON trees, floats to 1e-9 relative."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-9, abs=1e-12)
    return a == b


def irepair_tables(name: str) -> dict[str, str]:
    """{table name: its summary table from its log} of a committed I-REPAIR study (Henriksen et al. 2022, Sec. 5)."""
    from repair_jax.repair.protocol import summary_table

    config = load_config(str(CONFIGS / f"{name}.py"))
    return {t.name: summary_table(_records(name, f"{t.name}.jsonl"), baseline=t.baseline) for t in config.tables
            if (RESULTS / name / f"{t.name}.jsonl").is_file()}


@pytest.mark.parametrize("name", sorted(p.parent.name for p in RESULTS.glob("irepair_*/experiment.json")))
def test_committed_irepair_tables_reproduce_from_their_logs(name):
    tables = irepair_tables(name)
    assert tables
    for table_name, table in tables.items():
        assert table.strip() in (RESULTS / name / f"{table_name}.md").read_text(), f"{name}/{table_name}"


@pytest.mark.parametrize("name", sorted(REGENERATED))
def test_committed_table_reproduces_from_its_log(name):
    from repair_jax.studies.preconditions import without_status_line

    for file, text in REGENERATED[name](name).items():
        committed = without_status_line((RESULTS / name / file).read_text())  # the preconditions line is not the table's
        assert text.strip() == committed.strip(), f"{name}/{file} differs"


def test_trained_run_is_the_one_train_or_reuse_step(tmp_path):
    """Trains once, reuses the run for the same config and data, refuses another config or other data."""
    import dataclasses

    import numpy as np

    from repair_jax.data import Split
    from repair_jax.errors import UserError
    from repair_jax.runs import trained_run
    from repair_jax.train import TrainConfig

    cfg = TrainConfig(dataset="digits", model="mlp", model_kwargs={"hidden": [8]}, epochs=1, train_limit=200)
    ds = cfg.load_dataset()
    flipped = dataclasses.replace(ds, train=Split(ds.train.x, (ds.train.y + 1) % ds.num_classes))
    run = trained_run(tmp_path / "run", cfg, dataset=flipped)
    mtime = (tmp_path / "run" / "run.json").stat().st_mtime_ns
    again = trained_run(tmp_path / "run", cfg, dataset=flipped)
    assert (tmp_path / "run" / "run.json").stat().st_mtime_ns == mtime  # reused, not retrained
    np.testing.assert_array_equal(np.asarray(run.state().params["Dense_0"]["kernel"]),
                                  np.asarray(again.state().params["Dense_0"]["kernel"]))
    with pytest.raises(UserError, match="other data"):
        trained_run(tmp_path / "run", cfg, dataset=ds)
    with pytest.raises(UserError, match="epochs differs"):
        trained_run(tmp_path / "run", dataclasses.replace(cfg, epochs=2), dataset=flipped)


def _config_bound(log: Path) -> bool:
    """A log whose header is its study's config (I-REPAIR's logs bind the model's weights and the data set instead,
    checked by repair_jax.repair.protocol.run_jobs)."""
    study = json.loads((log.parent / "experiment.json").read_text())["config"]["type"]
    return "resumable_config" in json.loads(log.read_text().split("\n", 1)[0]) and not study.endswith("IRepairStudy")


LOGS = sorted(f"{p.parent.name}/{p.name}" for p in RESULTS.glob("*/*.jsonl") if _config_bound(p))


@pytest.mark.parametrize("log", LOGS)
def test_committed_log_header_is_accepted_by_todays_config(log, tmp_path):
    """The header of a committed resumable log (its config's record, or its fields only: dataclasses.asdict) opens
    with today's config as run_cells opens it, upgrades included: a rerun would resume the log, not refuse it."""
    import dataclasses
    import shutil

    from repair_jax.experiment import upgraded_header
    from repair_jax.io import ResumableJsonl

    name = log.split("/")[0]
    config = load_config(str(CONFIGS / f"{name}.py"))
    old = json.loads((RESULTS / log).read_text().split("\n", 1)[0])["resumable_config"]
    is_record = isinstance(old, dict) and set(old) == {"type", "fields"}
    header = config_record(config) if is_record else dataclasses.asdict(config)
    upgrade = upgraded_record if is_record else upgraded_header(type(config))
    shutil.copy(RESULTS / log, tmp_path / "log.jsonl")
    opened = ResumableJsonl(tmp_path / "log.jsonl", header, key=lambda r: json.dumps(r, sort_keys=True),
                            upgrade=upgrade)  # refuses a log of another configuration
    assert len(opened) > 0


def test_flat_training_fields_of_an_old_record_nest_into_train():
    """A config type that declares upgrade_fields (issue 28: its training recipe became one TrainConfig) reads an
    old record's flat fields as today's ``train``; a changed value still differs, a today's record stays as it is."""
    from repair_jax.experiment import upgraded_header
    from repair_jax.studies.bias import BiasMitigationStudy

    config = load_config(str(CONFIGS / "bias_que2_fashion_mnist_cpu.py"))
    new = config_record(config)
    old = json.loads((RESULTS / "bias_que2_fashion_mnist_cpu" / "experiment.json").read_text())["config"]
    assert "train" not in old["fields"] and first_difference(upgraded_record(old, new), new) is None
    assert first_difference(upgraded_record(new, new), new) is None
    changed = {**old, "fields": {**old["fields"], "lr": 0.1}}
    assert first_difference(upgraded_record(changed, new), new) == "fields.train.lr"
    fields_only = upgraded_header(BiasMitigationStudy)(old["fields"], new["fields"])
    assert first_difference(fields_only, new["fields"]) is None
