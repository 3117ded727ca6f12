"""Stores written by the release before the layers were re-laid (melpipe 0.6.0) are written
again, object for object, by the code of the day; and every command prints what it printed.
The commands are in tests/golden/make.sh; the input audio is kept beside them."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import TESTS, stored_objects

GOLDEN = TESTS / "golden"
STORES = sorted(p.name for p in (GOLDEN / "made").glob("*.zarr"))
OUTPUTS = sorted(p.name for p in (GOLDEN / "made").glob("*.out"))
# NumPy picks the SIMD code of its exp, log and others by the CPU, and OpenBLAS its
# kernels: on a CPU with AVX-512 and on one without, a band's centre or a clip's extremum
# differs in its last bit. The golden stores were made, and are made again, with NumPy's
# baseline code and OpenBLAS's Haswell kernels, which every x86-64 CPU with AVX2 runs
# alike (tests/golden/make.sh).
SAME_ARITHMETIC = {
    "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR",
    "OPENBLAS_CORETYPE": "Haswell",
}
# What differs between two runs of one command: who ran it, when, and with which libraries.
VOLATILE_KEYS = {"run_id", "created", "versions"}
VOLATILE_TEXT = [
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00"), "<time>"),
    (re.compile(r"\brun [0-9a-f]{8}\b"), "run <id>"),
    (re.compile(r"^(Seconds|Dask tasks):.*$", re.MULTILINE), r"\1: <timing>"),
]


def without_volatile(value):
    if isinstance(value, dict):
        return {k: without_volatile(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [without_volatile(v) for v in value]
    return value


def printed(path: Path) -> str:
    text = path.read_text()
    for pattern, replacement in VOLATILE_TEXT:
        text = pattern.sub(replacement, text)
    return text


@pytest.fixture(scope="module")
def remade(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("golden")
    shutil.copytree(GOLDEN / "audio", root / "audio")
    (root / "made").mkdir()
    env = {**os.environ, **SAME_ARITHMETIC, "MELPIPE": f"{sys.executable} -m melpipe"}
    subprocess.run(["bash", str(GOLDEN / "make.sh")], cwd=root / "made", env=env, check=True,
                   capture_output=True, timeout=600)  # fmt: skip
    return root / "made"


def test_the_golden_set_is_whole():
    assert STORES == ["all.zarr", "append.zarr", "hifigan.zarr", "plain.zarr", "specgan.zarr"]
    assert len(OUTPUTS) == 5


@pytest.mark.parametrize("name", STORES)
def test_each_store_is_written_again_byte_for_byte(remade, name):
    ours, golden = remade / name, GOLDEN / "made" / name
    mine, theirs = stored_objects(ours), stored_objects(golden)
    assert sorted(mine) == sorted(theirs)
    assert [k for k in mine if mine[k] != theirs[k]] == []
    root = [json.loads((p / "zarr.json").read_text()) for p in (ours, golden)]
    assert without_volatile(root[0]) == without_volatile(root[1])


@pytest.mark.parametrize("name", OUTPUTS)
def test_each_command_prints_what_it_printed(remade, name):
    assert printed(remade / name) == printed(GOLDEN / "made" / name)
