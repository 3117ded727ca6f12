"""The package keeps the shape the design promises: each library behind its one module,
and functions short enough to read (docs/design.md)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pipeline" / "melpipe"
MODULES = sorted(PACKAGE.glob("*.py"))
# Which module may import which library: everything else reaches it through that module.
OWNERS = {"zarr": "store.py", "numcodecs": "store.py", "dask": "executors.py",
          "distributed": "executors.py"}  # fmt: skip
MAX_LINES = 60
REASON = "# long because"  # written in a function's body to let it be longer


def imported(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_each_library_is_imported_by_its_one_module(module):
    for library in imported(ast.parse(module.read_text())) & OWNERS.keys():
        assert module.name == OWNERS[library], f"{module.name} imports {library}"


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_functions_are_short_or_say_why_not(module):
    source = module.read_text()
    lines = source.splitlines()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            body = lines[node.lineno - 1 : node.end_lineno]
            if len(body) > MAX_LINES:
                assert any(REASON in line for line in body), (
                    f"{module.name}: {node.name} has {len(body)} lines"
                )
