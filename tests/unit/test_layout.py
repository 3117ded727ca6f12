"""The package keeps the shape the design promises (docs/design.md, "One package per
layer"): layers that import only the layers below them, each library behind its one layer,
modules short enough to read and functions short or saying why not."""

import ast
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGE = REPO / "pipeline" / "melpipe"
MODULES = sorted(PACKAGE.rglob("*.py"))
# The layers, lowest first. A layer imports the foundation and the layers its entry names;
# nothing imports a layer above it.
LAYERS = {
    "analysis": set(),
    "sources": {"analysis"},
    "store": {"analysis", "sources"},
    "run": {"analysis", "sources", "store"},
    "read": {"analysis", "sources", "store"},
    "cli": {"analysis", "sources", "store", "run", "read"},
}
FOUNDATION = {"errors", "records", "interrupts", "files", "parameters"}  # imported by any layer
FACADE = {"__init__", "__main__", "launch", "torch"}  # the names users import: anything
# Which layer may import which library: every other layer reaches it through that one.
OWNERS = {"zarr": "store", "numcodecs": "store", "dask": "run", "distributed": "run",
          "librosa": "analysis", "soundfile": "sources", "soxr": "sources", "torch": "read",
          "click": "cli", "tqdm": "cli"}  # fmt: skip
MAX_MODULE_LINES = 500
MAX_LINES = 60
REASON = "# long because"  # written in a function's body to let it be longer


def layer_of(module: Path) -> str:
    parts = module.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else module.stem


def imports(tree: ast.AST) -> set[str]:
    """Every module a file imports, by its full name (anywhere in the file, lazily too)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def melpipe_layers(names: set[str]) -> set[str]:
    """The layers and foundation modules among ``names`` (not ``melpipe.__version__``)."""
    known = LAYERS.keys() | FOUNDATION | FACADE
    return {n.split(".")[1] for n in names if n.startswith("melpipe.")} & known


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_layer_imports_only_the_layers_below_it(module):
    layer = layer_of(module)
    if layer in FACADE:
        return
    used = melpipe_layers(imports(ast.parse(module.read_text()))) - FOUNDATION - {layer}
    allowed = set() if layer in FOUNDATION else LAYERS[layer]
    assert used <= allowed, f"{module.relative_to(PACKAGE)} imports {sorted(used - allowed)}"


def test_the_layers_say_what_they_may_import():
    for layer, below in LAYERS.items():
        doc = ast.get_docstring(ast.parse((PACKAGE / layer / "__init__.py").read_text()))
        assert doc and "May import" in doc, layer
        said = doc.split("May import", 1)[1]
        assert all(f"``{b}``" in said for b in below), (layer, said)


def test_every_module_is_in_a_layer_or_the_foundation():
    loose = {m.stem for m in PACKAGE.glob("*.py")}
    assert loose == FOUNDATION | FACADE
    assert {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()} == LAYERS.keys()


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_library_is_imported_by_its_one_layer(module):
    libraries = {n.split(".")[0] for n in imports(ast.parse(module.read_text()))}
    for library in libraries & OWNERS.keys():
        assert layer_of(module) == OWNERS[library], f"{module.name} imports {library}"


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_are_short(module):
    n = len(module.read_text().splitlines())
    assert n <= MAX_MODULE_LINES, f"{module.relative_to(PACKAGE)} has {n} lines"


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
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


SWAPPED = """
from melpipe.run.executors import LoopExecutor
from melpipe.run.types import ProgressBar
from melpipe.run.results import WriteSummary
from melpipe.run.tasks import AnalysisItem, ImagesItem, RunContext, images_batch


def given_pass_1_items(items: list[AnalysisItem], run: RunContext, bar: ProgressBar) -> None:
    LoopExecutor().map_reduce(images_batch, items, run, WriteSummary, bar)


def given_its_arguments_swapped(item: ImagesItem, run: RunContext) -> None:
    images_batch(run, item)
"""


def test_a_task_given_another_pass_items_or_swapped_arguments_fails_type_checking(tmp_path):
    """Each pass's task takes one typed item and the run's context, so mypy catches a
    pass fed another's items, or a task called with its arguments the wrong way round."""
    import subprocess
    import sys

    snippet = tmp_path / "swapped.py"
    snippet.write_text(SWAPPED)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--follow-imports=silent",
         str(snippet)], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert [line.split(":")[1] for line in errors] == ["9", "13", "13"], result.stdout


def test_tests_are_laid_out_as_the_code_and_import_no_other_test_file():
    """tests/unit has a folder per layer; what test files share is in tests/helpers.py."""
    tests = REPO / "tests"
    assert {p.name for p in (tests / "unit").iterdir() if p.is_dir() and p.name in LAYERS} == (
        LAYERS.keys()
    )
    for path in tests.rglob("test_*.py"):
        names = imports(ast.parse(path.read_text()))
        others = {
            n for n in names if n.startswith(("tests.unit", "tests.scenarios", "tests.test_"))
        }
        assert not others, f"{path.relative_to(tests)} imports {sorted(others)}"
