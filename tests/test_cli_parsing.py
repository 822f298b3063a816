"""The CLI owns every string: its parsers turn flags into the typed values the library takes, and its
defaults are the config dataclasses' own (issue 28, item 4)."""

import dataclasses

import numpy as np
import pytest

from repair_jax.cli import build_parser
from repair_jax.cli.parsing import parse_classes, parse_group, parse_targets, parse_test_indices
from repair_jax.errors import UserError
from repair_jax.influence import GroupRule, group_mask, validate_influence_args
from repair_jax.repair import Targets

NAMES = ("zero", "one", "two", "three")


def test_parse_targets_reads_pairs_and_triplets_by_index_or_name():
    assert parse_targets("1,three", None, None, NAMES) == Targets(((1, 3),))
    assert parse_targets(None, None, None, NAMES, "0,1,2;3,2,1") == Targets(((0, 1, 2), (3, 2, 1)))
    for args, msg in (((None, None, None, NAMES), "exactly one"), (("1,2", "0,1,2", None, NAMES), "exactly one"),
                      (("1,2,3", None, None, NAMES), "must name 2 classes"),
                      (("1,2;0,3", None, None, NAMES), "--pair/--triplet take one group"),
                      (("1,cat", None, None, NAMES), "unknown class")):
        with pytest.raises(UserError, match=msg):
            parse_targets(*args)


def test_group_and_test_index_text_become_typed_values():
    assert parse_group("label = 3") == GroupRule("label", "3") and str(parse_group("pred=two")) == "pred=two"
    assert parse_group("intensity>0.3") == GroupRule("intensity", 0.3, ">") and str(parse_group("all")) == "all"
    assert str(parse_group("intensity<.5")) == "intensity<0.5" and parse_group(None) is None
    with pytest.raises(UserError, match="bad --group"):
        parse_group("colour=3")
    assert parse_test_indices("3,17") == [3, 17] and parse_test_indices(" all") == "all"
    with pytest.raises(UserError, match="bad --test-index"):
        parse_test_indices("3,x")
    assert parse_classes("--pair", "3, cat", 2) == ("3", "cat") and parse_classes("--pair", None, 2) is None
    with pytest.raises(UserError, match="--triplet needs 3 classes"):
        parse_classes("--triplet", "1,2", 3)


def test_the_influence_library_takes_typed_values_and_names_fields():
    validate_influence_args(test_index=[3, 17])
    validate_influence_args(metric="ece", group=GroupRule("intensity", 0.3, ">"))
    validate_influence_args(pair=(3, "cat"))
    for kw, msg in ((dict(test_index="3,17"), "test_index must be an index"),
                    (dict(metric="ece", group="label=3"), "metric needs group, a GroupRule"),
                    (dict(metric="ece", group=GroupRule("intensity", 0.3, "=")), "group: intensity needs op"),
                    (dict(pair="3,5"), r"pair must be a tuple of 2 classes"),
                    (dict(triplet=(1, 2, 1)), "3 distinct classes"),
                    (dict(test_index=0, relative_damping=-1.0), "relative_damping must be >= 0")):
        with pytest.raises(UserError, match=msg):
            validate_influence_args(**kw)


def test_group_mask_of_each_rule():
    class Split:
        x, y = np.array([[0.1], [0.9], [0.5]]), np.array([0, 1, 1])

        def __len__(self):
            return 3

    split = Split()
    np.testing.assert_array_equal(group_mask(GroupRule("label", "one"), split, ("zero", "one")), [0, 1, 1])
    np.testing.assert_array_equal(group_mask(GroupRule("pred", 0), split, ("zero", "one"), np.array([0, 0, 1])),
                                  [1, 1, 0])
    np.testing.assert_array_equal(group_mask(GroupRule("intensity", 0.4, ">"), split, ("zero", "one")), [0, 1, 1])
    np.testing.assert_array_equal(group_mask(GroupRule(), split, ("zero", "one")), [1, 1, 1])


# subcommand -> (its required flags, [(config dataclass, {flag dest: field name}), ...])
CONFIG_FLAGS = {
    "guide": (["--run", "r", "--audit", "a", "--concepts", "c", "--out", "o"], [
        ("repair_jax.guiding.BilevelConfig", {n: n for n in ("gamma", "fi_weight", "l2", "outer_steps", "outer_lr",
                                                             "inner_maxiter")}),
        ("repair_jax.guiding.GuidingConfig", {"tau_nl": "tau_nl", "tau_spu": "tau_spu", "budget": "budget",
                                              "l2": "carve_l2"})]),
    "irepair": (["--run", "r", "--class", "1", "--repair-size", "2", "--out", "o"], [
        ("repair_jax.repair.irepair.IRepairConfig", {n: n for n in ("gamma", "epsilon", "margin", "ub", "lr",
                                                                    "correct_loss", "influence")})]),
    "repair": (["--run", "r", "--pair", "1,2", "--out", "o"], [
        ("repair_jax.repair.RepairConfig", {n: n for n in ("seeds", "lambda1", "lambda2", "lambda2_relative",
                                                           "select_split")})]),
    "train": (["--out", "o"], [
        ("repair_jax.train.TrainConfig", {n: n for n in ("dataset", "model", "epochs", "batch_size", "optimizer",
                                                         "lr", "schedule", "l2", "seed", "split_seed", "init_seed",
                                                         "order_seed", "data_dir", "train_limit")})]),
}


@pytest.mark.parametrize("command", sorted(CONFIG_FLAGS))
def test_cli_defaults_are_the_config_dataclass_defaults(command):
    import importlib

    required, configs = CONFIG_FLAGS[command]
    args = build_parser(commands=(command,)).parse_args([command, *required])
    for path, fields in configs:
        module, name = path.rsplit(".", 1)
        default = getattr(importlib.import_module(module), name)()
        for dest, field in fields.items():
            assert getattr(args, dest) == getattr(default, field), f"{command} --{dest}: {path}.{field}"
    if command == "repair":
        from repair_jax.cli.repair import _floats
        from repair_jax.repair import RepairConfig

        assert _floats(args.rhos, "--rhos") == RepairConfig().rhos


def test_add_config_flags_takes_defaults_and_help_from_the_fields():
    import argparse

    from repair_jax.cli.common import add_config_flags

    @dataclasses.dataclass
    class Config:
        steps: int = 3
        rate: float = dataclasses.field(default=0.5, metadata={"help": "the step size"})
        name: str = "adam"
        quiet: bool = False
        sizes: tuple = dataclasses.field(default_factory=lambda: (1, 2))

    p = argparse.ArgumentParser()
    add_config_flags(p, Config, ["steps", "rate", "name", "quiet"], help={"steps": "how many"},
                     name={"choices": ["adam", "sgd"]})
    args = p.parse_args([])
    assert (args.steps, args.rate, args.name, args.quiet) == (3, 0.5, "adam", False)
    assert p.parse_args(["--steps", "4", "--rate", "1e-2", "--quiet"]).steps == 4
    helps = {a.dest: a.help for a in p._actions}
    assert helps["steps"] == "how many" and helps["rate"] == "the step size"
    with pytest.raises(SystemExit):
        p.parse_args(["--name", "rmsprop"])


@pytest.mark.parametrize("command", ["repair", "irepair", "guide"])
def test_config_flags_take_their_help_from_the_field_metadata(command):
    """The help of every flag built from a config field is the field's metadata["help"] (one place)."""
    import importlib

    parser = build_parser(commands=(command,))
    sub = next(a for a in parser._actions if getattr(a, "choices", None) and command in a.choices).choices[command]
    helps = {a.dest: a.help for a in sub._actions}
    _, configs = CONFIG_FLAGS[command]
    checked = 0
    for path, fields in configs:
        module, name = path.rsplit(".", 1)
        cls = getattr(importlib.import_module(module), name)
        for dest, field in fields.items():
            meta = {f.name: f for f in dataclasses.fields(cls)}[field].metadata.get("help")
            if meta is not None:
                assert helps[dest] == meta.replace("%", "%%"), f"{command} --{dest}"
                checked += 1
    assert checked >= 3
