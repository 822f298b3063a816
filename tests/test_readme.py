"""The README is the front door: its Python blocks run as pasted, and every command of its CLI table parses."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from repair_jax.cli import SUBCOMMANDS, main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_is_short_and_starts_with_the_two_commands():
    lines = README.splitlines()
    assert len(lines) <= 200
    first_block = README.split("```bash\n", 1)[1].split("```", 1)[0]
    assert [ln.split()[:2] for ln in first_block.splitlines()] == [["make", "quickstart"], ["make", "test"]]


@pytest.mark.slow
def test_readme_python_blocks_run_as_pasted(tmp_path):
    """All ```python blocks of the README, in order, in one fresh interpreter (a reader pastes them in turn)."""
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert len(blocks) >= 5
    script = tmp_path / "readme.py"
    script.write_text("\n".join(blocks))
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]


def _table_commands() -> list[list[str]]:
    rows = [ln for ln in README.splitlines() if ln.startswith("| `") and "repair-jax " in ln]
    return [re.search(r"`(repair-jax [^`]*)`\s*\|\s*$", ln).group(1).split()[1:] for ln in rows]


def test_cli_table_lists_every_subcommand():
    assert sorted(cmd[0] for cmd in _table_commands()) == sorted(SUBCOMMANDS)


@pytest.mark.parametrize("argv", _table_commands(), ids=lambda a: a[0])
def test_every_cli_table_command_parses(argv, capsys):
    """Each example parses (its --help is shown without error); running them needs trained runs."""
    with pytest.raises(SystemExit) as e:
        main([argv[0], "--help"])
    assert e.value.code == 0
    from repair_jax.cli import build_parser

    args = build_parser().parse_args(argv)  # the example's own flags are all known to the parser
    assert args.command == argv[0]
