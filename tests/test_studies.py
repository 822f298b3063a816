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


LOGS = sorted(f"{p.parent.name}/{p.name}" for p in RESULTS.glob("*/*.jsonl")
              if "resumable_config" in json.loads(p.read_text().split("\n", 1)[0]))


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
