"""When something stops a run from outside or fails inside a worker, a person sees one
line saying what happened and what to do, on a real local cluster: never a traceback,
and nothing left behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from melpipe.config import SpectrogramConfig
from melpipe.demo import generate_demo
from melpipe.executors import LoopExecutor
from melpipe.runner import preprocess
from tests.helpers import assert_same_arrays, run_cli


def command(*args: object) -> list[str]:
    return [sys.executable, "-m", "melpipe", *map(str, args)]


def start_and_wait_for(argv: list[str], text: str) -> tuple[subprocess.Popen, str]:
    """Start a command and read its error output until ``text`` appears."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = ""
    while text not in seen:
        char = process.stderr.read(1)
        assert char, f"the command ended before {text!r}:\n{seen}"
        seen += char
    return process, seen


@pytest.fixture(scope="module")
def many_files(tmp_path_factory) -> Path:
    """Enough files for a run of one file per task to take a few seconds."""
    folder = tmp_path_factory.mktemp("many")
    generate_demo(folder, count=300, seed=3)
    return folder


@pytest.mark.cluster
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_ends_a_run_in_one_line_and_the_same_command_resumes(many_files, tmp_path, signum):
    out = tmp_path / "out.zarr"
    argv = command("preprocess", many_files, out, "--workers", 2, "--batch-size", 1,
                   "--n-mels", 64)  # fmt: skip
    process, seen = start_and_wait_for(argv, "pass 1/2")
    children = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signum)
    _, rest = process.communicate(timeout=120)
    stderr = seen + rest
    assert process.returncode == 1, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert errors == ["Error: Interrupted. An unfinished store is marked so; the same "
                      "command resumes it."], stderr  # fmt: skip
    for word in ("Traceback", "leaked", "Exception ignored", "KeyboardInterrupt"):
        assert word not in stderr, stderr
    deadline = time.monotonic() + 30
    while any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children):
        assert time.monotonic() < deadline, "worker processes outlived the run"
        time.sleep(0.2)
    run_cli(*argv[3:], timeout=300)  # the same command
    reference = tmp_path / "reference.zarr"
    config = SpectrogramConfig.from_options(n_mels=64)
    preprocess(many_files, reference, config, executor=LoopExecutor(), batch_size=1)
    assert_same_arrays(out, reference)


def test_output_cut_off_by_its_reader_ends_quietly(finished_store):
    process = subprocess.Popen(command("info", finished_store), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)  # fmt: skip
    process.stdout.close()  # as `head -1` does once it has its line
    stderr = process.stderr.read().decode()
    process.wait(timeout=60)
    assert stderr == "", stderr
