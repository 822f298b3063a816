"""The shape of the library (issues 12 and 28): short functions, no argparse below the CLI, no imports of the
experiment or benchmark trees, jaxopt only behind the bilevel module, and the house's floors: every import of
the library (at module level or inside a function body) goes to the same unit or down, never up, and no two
modules import each other through any path."""

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


def test_argparse_only_in_the_cli():
    offenders = [str(p.relative_to(ROOT)) for p in _modules()
                 if "argparse" in _imports(ast.parse(p.read_text())) and p.parent.name != "cli"]
    assert not offenders, f"argparse imported outside repair_jax/cli: {offenders}"


# The floors of the house, lowest first. A unit is a top-level module or a subpackage of repair_jax; a module may
# import its own unit and units of lower floors only (units on one floor are peers and do not import each other).
FLOORS = [
    {"errors"},
    {"io", "progress", "stats", "compilation_cache", "tables"},
    {"plots", "batchnorm", "metrics", "imbalance", "padain"},
    {"data", "objectives"},
    {"models", "classifier"},
    {"train"},
    {"user_models"},
    {"runs"},
    {"diagnosis"},
    {"influence", "robustness"},  # method packages
    {"guiding", "repair"},
    {"explain", "bias"},
    {"experiment"},  # the one driver
    {"studies"},  # the papers' tables
    {"cli"},
    {"__main__", "__init__"},
]
FLOOR = {unit: i for i, units in enumerate(FLOORS) for unit in units}
METHOD_PACKAGES = ("bias", "explain", "guiding", "influence", "repair", "robustness")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _library_imports(path: Path, known: set[str]) -> set[str]:
    """The repair_jax modules ``path`` imports anywhere (function bodies too; not ``if TYPE_CHECKING:``)."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found: set[str] = set()

    def resolve(name: str) -> str:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            return
        if isinstance(node, ast.Import):
            found.update(resolve(a.name) for a in node.names if a.name.startswith("repair_jax"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            if base.startswith("repair_jax"):
                for a in node.names:
                    full = f"{base}.{a.name}"
                    found.add(full if full in known else resolve(base))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found - {"", _module_name(path)}


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in _modules()}
    return {m: _library_imports(p, set(paths)) for m, p in paths.items()}


def test_every_unit_has_a_floor():
    assert sorted({_unit(m) for m in _graph()} - set(FLOOR)) == []


def test_no_import_climbs_up_the_house():
    up = [f"{a} imports {b}" for a, targets in _graph().items() for b in targets
          if _unit(a) != _unit(b) and FLOOR[_unit(b)] >= FLOOR[_unit(a)]]
    assert not up, "imports that climb (or cross a floor):\n" + "\n".join(sorted(up))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def test_no_import_circles():
    assert _cycles(_graph()) == []


def test_cycle_finder_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_study_runner_in_a_method_package():
    """Paper studies live in repair_jax/studies: no method package registers a runner or imports the driver."""
    offenders = [str(p.relative_to(ROOT)) for pkg in METHOD_PACKAGES for p in (LIB / pkg).rglob("*.py")
                 if "repair_jax.experiment" in _imports(ast.parse(p.read_text())) or "@runner(" in p.read_text()]
    assert not offenders, offenders


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
