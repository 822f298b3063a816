"""Parsers of command-line strings: each turns a flag's text into the typed value the library takes
(tuples of classes, a :class:`~repair_jax.influence.workflow.GroupRule`, a list of test indices), or
raises one :class:`UserError` naming the flag. The library never parses these strings itself."""

from __future__ import annotations

import re
from typing import Sequence

from repair_jax.errors import UserError

_GROUP_RE = (r"(label|pred)\s*=\s*(.+)", r"intensity\s*([<>])\s*([0-9.eE+-]+)")


def parse_targets(pair: str | None, triplet: str | None, pairs: str | None, class_names: Sequence[str],
                  triplets: str | None = None):
    """``--pair A,B`` | ``--triplet A,B,C`` | ``--pairs A,B;C,D`` | ``--triplets A,B,C;D,E,F`` (index or name
    in ``class_names``) -> :class:`repair_jax.repair.Targets`."""
    from repair_jax.data import parse_class
    from repair_jax.repair.weighted import Targets

    given = [s for s in (pair, triplet, pairs, triplets) if s]
    if len(given) != 1:
        raise UserError("give exactly one of --pair, --triplet, --pairs, --triplets")
    spec = given[0]
    size = 2 if (pair or pairs) else 3
    groups = []
    for part in spec.split(";"):
        items = [s.strip() for s in part.split(",")]
        if len(items) != size:
            raise UserError(f"{part!r} must name {size} classes separated by commas")
        groups.append(tuple(parse_class(s, class_names) for s in items))
    if (pair or triplet) and len(groups) != 1:
        raise UserError("--pair/--triplet take one group; use --pairs/--triplets for several (A,B;C,D)")
    return Targets(tuple(groups))


def parse_test_indices(spec: str | None) -> list[int] | str | None:
    """``--test-index``: "3", "3,17,42" or "all" -> a list of ints (checked by the library), "all", or None."""
    if spec is None:
        return None
    if spec.strip() == "all":
        return "all"
    try:
        return [int(t) for t in spec.split(",")]
    except ValueError:
        raise UserError(f"bad --test-index {spec!r}; use an index, a comma-separated list (3,17,42) "
                        "or all") from None


def parse_group(spec: str | None):
    """``--group``: label=C, pred=C, intensity>T, intensity<T or all -> a
    :class:`~repair_jax.influence.workflow.GroupRule` (None when not given)."""
    from repair_jax.influence.workflow import GroupRule

    if spec is None:
        return None
    spec = spec.strip()
    if spec == "all":
        return GroupRule("all")
    m = re.fullmatch(_GROUP_RE[0], spec)
    if m:
        return GroupRule(m.group(1), m.group(2).strip())
    m = re.fullmatch(_GROUP_RE[1], spec)
    if m:
        try:
            return GroupRule("intensity", float(m.group(2)), m.group(1))
        except ValueError:
            raise UserError(f"bad threshold in --group {spec!r}") from None
    raise UserError(f"bad --group {spec!r}; use label=C, pred=C, intensity>T, intensity<T or all")


def parse_classes(flag: str, spec: str | None, size: int) -> tuple[str, ...] | None:
    """``--pair A,B`` / ``--triplet A,B,C`` -> the ``size`` class specs (indices or names, resolved against the
    run's classes by the library), None when not given."""
    if spec is None:
        return None
    items = tuple(i.strip() for i in spec.split(","))
    if len(items) != size or not all(items):
        raise UserError(f"{flag} needs {size} classes separated by commas, got {spec!r}")
    return items
