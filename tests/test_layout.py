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


def test_the_run_stays_short():
    """The run (runner._Run) orders the passes; what each does lives elsewhere."""
    tree = ast.parse((PACKAGE / "runner.py").read_text())
    (run,) = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "_Run"]
    assert run.end_lineno - run.lineno + 1 < 150


SWAPPED = """
from melpipe.run.executors import LoopExecutor, ProgressBar
from melpipe.run.tasks import AnalysisItem, ImagesItem, RunContext, WriteSummary, images_batch


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
    assert [line.split(":")[1] for line in errors] == ["7", "11", "11"], result.stdout
