"""The error hierarchy: every class a user can meet is exported, and messages speak the
caller's language: the library's parameters to Python, the command line's flags to a
person at a terminal."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import melpipe
from melpipe.analysis.config import SpectrogramConfig
from melpipe.errors import ConfigError, MelpipeError
from tests.helpers import assert_one_line_error, run_cli

PACKAGE = Path(melpipe.__file__).parent
FLAG = re.compile(r"(?<![\w-])--[a-z]")


def subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    return found.union(*(subclasses(c) for c in found))


def test_every_error_class_is_exported_from_the_package():
    classes = {MelpipeError, *subclasses(MelpipeError)}
    assert len(classes) >= 19
    for cls in classes:
        assert cls.__name__ in melpipe.__all__, cls.__name__
        assert getattr(melpipe, cls.__name__) is cls


def _declared(tree: ast.AST) -> set[int]:
    """The string literals of option declarations (``Option(help=...)``), which speak to the
    command line's user by design (melpipe.parameters)."""
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Name) and n.func.id == "Option"]  # fmt: skip
    return {id(c) for call in calls for c in ast.walk(call) if isinstance(c, ast.Constant)}


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string literal of a module but its docstrings and option declarations,
    f-strings' literal parts too."""
    docstrings = _declared(tree) | {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        and id(node) not in docstrings
    ]  # fmt: skip


@pytest.mark.parametrize(
    "module",
    sorted(p for p in PACKAGE.rglob("*.py") if "cli" not in p.relative_to(PACKAGE).parts),
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_outside_the_cli_no_message_names_a_flag(module):
    for line, text in _strings(ast.parse(module.read_text())):
        assert not FLAG.search(text), f"{module.name}:{line} names a flag: {text!r}"


def test_a_python_caller_is_told_the_parameters_by_name():
    with pytest.raises(ConfigError) as caught:
        SpectrogramConfig(segment_hop=100, tail="drop")
    message = str(caught.value)
    assert "`segment_hop`, `tail='drop'` only apply with `segments='all'`" in message
    assert not FLAG.search(message)
    assert caught.value.parameters == ("segment_hop", "tail", "segments")
    flags = {"segment_hop": "SEGMENT-HOP", "segments": "SEGMENTS"}
    renamed = caught.value.naming(lambda name, value: flags.get(name))
    assert renamed.startswith("SEGMENT-HOP, `tail='drop'` only apply with SEGMENTS")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--segment-hop", "0.5", "--tail", "drop"],
         "--segment-hop, --tail drop only apply with --segments all, which cuts each file into "
         "many windows; --segments first keeps one clip per file."),
        (["--n-mels", "200"], "--n-mels 200 is too large for --n-fft 512 at --sample-rate 22050"),
        (["--workers", "0"], "Expected a positive number of --workers. Got 0 instead."),
        (["--batch-size", "0"], "Expected a positive --batch-size. Got 0 instead."),
        (["--percentiles", "5", "2"],
         "Expected --percentiles LO and HI with 0 <= LO < HI <= 100. Got 5 and 2."),
    ],
)  # fmt: skip
def test_the_command_line_names_its_flags(dataset, tmp_path, args, expected):
    result = run_cli("preprocess", dataset, tmp_path / "out.zarr", *args, check=False)
    assert_one_line_error(result, expected)
    assert "`" not in result.stderr


def test_a_reading_command_names_another_commands_flag(tmp_path):
    silent = tmp_path / "silent"
    silent.mkdir()
    sf.write(silent / "silent.wav", np.zeros(22050, np.float32), 22050)
    run_cli("preprocess", silent, tmp_path / "failed.zarr", "--scheduler", "sync", check=False)
    result = run_cli("info", tmp_path / "failed.zarr", check=False)
    assert_one_line_error(
        result, "Change the input or parameters and run preprocess with --overwrite."
    )
