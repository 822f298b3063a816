"""The shape of the library (issue 12's acceptance): short functions, no argparse below the CLI, no
imports of the experiment or benchmark trees, jaxopt only behind the bilevel module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "repair_jax"
MAX_FUNCTION_LINES = 60


def _modules():
    return sorted(LIB.rglob("*.py"))


def _imports(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_function_longer_than_60_lines():
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, "functions longer than 60 lines:\n" + "\n".join(long)


@pytest.mark.parametrize("package", ["repair", "influence", "guiding"])
def test_method_packages_do_not_import_argparse(package):
    offenders = [str(p.relative_to(ROOT)) for p in (LIB / package).rglob("*.py")
                 if "argparse" in _imports(ast.parse(p.read_text()))]
    assert not offenders, f"argparse imported in {offenders}"


def test_library_never_imports_experiments_or_benchmarks():
    offenders = []
    for path in _modules():
        for name in _imports(ast.parse(path.read_text())):
            if name.split(".")[0] in ("experiments", "benchmarks"):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_jaxopt_only_behind_the_bilevel_module():
    users = sorted(str(p.relative_to(ROOT)) for p in _modules()
                   if any(n.split(".")[0] == "jaxopt" for n in _imports(ast.parse(p.read_text()))))
    assert users == ["repair_jax/guiding/bilevel.py"], users


def test_no_sys_path_edits_in_experiments_or_benchmarks():
    offenders = [str(p.relative_to(ROOT)) for d in ("experiments", "benchmarks") for p in (ROOT / d).rglob("*.py")
                 if "sys.path.insert" in p.read_text() or "sys.path.append" in p.read_text()]
    assert not offenders, offenders


def test_no_global_deprecation_warning_filter():
    text = (ROOT / "pyproject.toml").read_text()
    assert "ignore::DeprecationWarning" not in text
