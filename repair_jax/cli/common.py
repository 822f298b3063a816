"""The conventions every ``repair-jax`` subcommand shares.

- ``--force``: replace an existing output (or restart a resumable one); without it nothing that the
  command did not create is deleted or replaced. ``--no-progress``: no progress bars or lines.
  :func:`add_common_flags` gives every subcommand both (the parser builder calls it; a subcommand
  module does not declare them itself).
- ``--out``: declared with :func:`add_out`, which records what kind of output it is
  (``"dir"``: a directory written atomically, replaced only with --force; ``"resumable"``: a
  directory a re-run resumes). :func:`check_out` checks it before anything heavy is loaded.
- Every default is shown by ``--help`` (:class:`HelpFormatter`); a bad flag is one line and exit 2
  (:class:`Parser`); seeds are parsed by :func:`seed_type`.
- A flag that sets a config dataclass's field is declared with :func:`add_config_flags`: its default is
  the field's (it cannot drift from the library's), its help the field's ``metadata["help"]`` unless the
  subcommand words it. Strings the library does not take are parsed in :mod:`repair_jax.cli.parsing`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from repair_jax.errors import UserError, check_seed
from repair_jax.io import check_output_dir

OUT_KINDS = ("dir", "resumable")
# Flags naming inputs that an --out may never replace (even with --force).
INPUT_FLAGS = ("run", "audit", "concepts", "checkpoint")


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line on stderr and exit code 2."""

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows every default; a default of ``None`` is explained by the help text instead, and
    an on/off flag (off by default) shows none."""

    def _get_help_string(self, action):
        if action.default is None or action.required or action.nargs == 0:
            return action.help
        return super()._get_help_string(action)


def add_common_flags(p: argparse.ArgumentParser) -> None:
    """``--force`` and ``--no-progress`` with the one meaning every subcommand gives them (a flag
    the module already declares is left as it is)."""
    have = p._option_string_actions  # the parser's own table of declared option strings
    if "--force" not in have:
        p.add_argument("--force", action="store_true",
                       help="replace an existing output / restart a resumable one (without it nothing is replaced)")
    if "--no-progress" not in have:
        p.add_argument("--no-progress", action="store_true",
                       help="no progress bars (when not on a terminal: no per-item progress lines)")


def add_out(p: argparse.ArgumentParser, help: str, kind: str = "dir", default: str | None = None) -> None:
    """Declares ``--out`` of ``kind`` (see the module docstring); required when ``default`` is None."""
    if kind not in OUT_KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    p.add_argument("--out", required=default is None, default=default, help=help)
    p.set_defaults(out_kind=kind)


def field_default(config_type, name: str):
    """The default of field ``name`` of the dataclass ``config_type`` (its ``default_factory()`` if it has one)."""
    field = {f.name: f for f in dataclasses.fields(config_type)}[name]
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    raise ValueError(f"{config_type.__name__}.{name} has no default")


def add_config_flags(p, config_type, fields, help: dict | None = None, **options) -> None:
    """``--field-name`` for each of ``fields`` of the dataclass ``config_type``, with the field's default
    (:func:`field_default`) and help (``help[name]``, else the field's ``metadata["help"]``). A bool field
    is an on/off flag (``store_true``); an int, float or str field is parsed as its default's type.
    ``options[name]``: more :meth:`~argparse.ArgumentParser.add_argument` keywords (``choices``, ``metavar``)."""
    by_name = {f.name: f for f in dataclasses.fields(config_type)}
    for name in fields:
        default = field_default(config_type, name)
        text = (help or {}).get(name) or by_name[name].metadata.get("help")
        kw = {"default": default, "help": text.replace("%", "%%") if text else None}  # argparse formats help with %
        if isinstance(default, bool):
            kw["action"] = "store_true"
        elif isinstance(default, (int, float)):
            kw["type"] = type(default)
        p.add_argument("--" + name.replace("_", "-"), **kw, **options.get(name, {}))


def seed_type(flag: str):
    """An argparse ``type`` for a seed: a whole number in [0, 2**32 - 1] (``-1`` and ``1e20`` are errors)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        try:
            return check_seed(flag, value)
        except UserError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix(f"{flag} ")) from None
    return parse


def json_object(flag: str, text: str) -> dict:
    """A flag's JSON object (``--model-kwargs '{"width": 16}'``), else one clear :class:`UserError`."""
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{flag} is not valid JSON: {e.msg}") from None
    if not isinstance(value, dict):
        raise UserError(f"{flag} must be a JSON object")
    return value


def check_out(out: str | os.PathLike, force: bool, kind: str = "dir", inputs=()) -> None:
    """Checks ``--out`` before any work (:func:`repair_jax.io.check_output_dir`, its messages naming the flag)."""
    check_output_dir(out, force, kind, inputs, label="--out")


def check_args(args: argparse.Namespace) -> None:
    """The checks :func:`main` runs on every subcommand's arguments before calling it: ``--out``."""
    if getattr(args, "out", None) is None:
        return
    inputs = [getattr(args, f) for f in INPUT_FLAGS if getattr(args, f, None)]
    inputs += list(getattr(args, "runs", None) or [])  # `compare RUN1 RUN2 ...`
    check_out(args.out, getattr(args, "force", False), getattr(args, "out_kind", "dir"), inputs)
