"""When something stops a run from outside or fails inside a worker, a person sees one
line saying what happened and what to do, on a real local cluster: never a traceback,
and nothing left behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from melpipe.analysis.config import SpectrogramConfig
from melpipe.run.executors import LoopExecutor
from melpipe.run.runner import preprocess
from melpipe.sources.demo import generate_demo
from tests.helpers import (
    assert_one_line_error,
    assert_same_arrays,
    rest_of,
    run_cli,
    start_and_wait_for,
    write_dataset,
)


def command(*args: object) -> list[str]:
    return [sys.executable, "-m", "melpipe", *map(str, args)]


@pytest.fixture(scope="module")
def many_files(tmp_path_factory) -> Path:
    """Enough files for a run of one file per task to take a few seconds."""
    folder = tmp_path_factory.mktemp("many")
    generate_demo(folder, count=300, seed=3)
    return folder


def catches(process: subprocess.Popen, signum: int) -> bool:
    """Whether the process has a handler of its own for ``signum`` (Linux's SigCgt)."""
    status = Path(f"/proc/{process.pid}/status").read_text()
    caught = int(next(x for x in status.splitlines() if x.startswith("SigCgt:")).split()[1], 16)
    return bool(caught & (1 << (signum - 1)))


def start_and_wait_until(argv: list[str], ready) -> tuple[subprocess.Popen, str]:
    """Start a command and wait until ``ready(process)`` holds (nothing read yet)."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    deadline = time.monotonic() + 60
    while not ready(process):
        assert process.poll() is None and time.monotonic() < deadline, "the moment never came"
        time.sleep(0.005)
    return process, ""


def with_workers(process: subprocess.Popen) -> bool:
    """Whether the local cluster's first worker process has started (the cluster is being
    built): a second process with the fork server's command line, forked from it."""
    forked = 0
    for child in psutil.Process(process.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            forked += "forkserver" in " ".join(child.cmdline())
    return forked >= 2


# Moments of a run at which a signal arrives: how to find each, and which signal it is.
# SIGTERM (how batch systems stop a job) and SIGINT (Ctrl-C) take the same path.
MOMENTS = {
    "loading": (signal.SIGINT, lambda argv: start_and_wait_until(
        argv, lambda p: catches(p, signal.SIGTERM))),  # handlers set, imports under way
    "cluster-start": (signal.SIGINT, lambda argv: start_and_wait_until(argv, with_workers)),
    "survey": (signal.SIGTERM, lambda argv: start_and_wait_for(argv, "survey")),
    "pass-1": (signal.SIGINT, lambda argv: start_and_wait_for(argv, "pass 1/")),
    "between-passes": (signal.SIGTERM, lambda argv: start_and_wait_for(argv, "statistics: 100%")),
    "pass-2": (signal.SIGINT, lambda argv: start_and_wait_for(argv, "pass 2/")),
}  # fmt: skip
SIGNALLED = ["--segments", "all", "--duration", "0.5", "--n-mels", 64, "--batch-size", 2]


@pytest.fixture(scope="module")
def signalled_reference(many_files, tmp_path_factory) -> Path:
    """The store that every signalled run, run again, must equal: plain loops."""
    reference = tmp_path_factory.mktemp("reference") / "reference.zarr"
    config = SpectrogramConfig.from_options(segments="all", duration=0.5, n_mels=64)
    preprocess(many_files, reference, config, executor=LoopExecutor(), batch_size=2)
    return reference


@pytest.mark.cluster
@pytest.mark.parametrize("moment", MOMENTS)
def test_a_signal_ends_a_run_in_one_line_and_the_same_command_resumes(
    many_files, signalled_reference, tmp_path, moment
):
    signum, start = MOMENTS[moment]
    out = tmp_path / "out.zarr"
    argv = command("preprocess", many_files, out, "--workers", 2, *SIGNALLED)
    process, seen = start(argv)
    children = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signum)
    rest = rest_of(process, 120)
    stderr = seen + rest
    assert process.returncode == 1, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert errors == ["Error: Interrupted. An unfinished store is marked so; the same "
                      "command resumes it."], stderr  # fmt: skip
    for word in ("Traceback", "leaked", "Exception ignored", "KeyboardInterrupt", "ERROR"):
        assert word not in stderr, stderr
    deadline = time.monotonic() + 30
    while any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children):
        assert time.monotonic() < deadline, "worker processes outlived the run"
        time.sleep(0.2)
    run_cli(*argv[3:], timeout=300)  # the same command
    assert_same_arrays(out, signalled_reference)


def test_output_cut_off_by_its_reader_ends_quietly(finished_store):
    process = subprocess.Popen(command("info", finished_store), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)  # fmt: skip
    process.stdout.close()  # as `head -1` does once it has its line
    stderr = process.stderr.read().decode()
    process.wait(timeout=60)
    assert stderr == "", stderr


@pytest.fixture
def s3_behind_a_relay(tmp_path):
    """An S3 server reached through a relay that can be cut, with 60 files under
    ``bucket/audio``; the environment a client needs to reach it through the relay."""
    import s3fs

    from tests.processes import Outage, Processes, start_s3_server

    procs = Processes(tmp_path)
    endpoint = start_s3_server(procs)
    relay = Outage(int(endpoint.rsplit(":", 1)[1]))
    keys = {"AWS_ACCESS_KEY_ID": "melpipe-test", "AWS_SECRET_ACCESS_KEY": "not-a-secret",
            "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    fs = s3fs.S3FileSystem(
        key=keys["AWS_ACCESS_KEY_ID"], secret=keys["AWS_SECRET_ACCESS_KEY"],
        client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True,
    )  # fmt: skip
    fs.mkdir("bucket")
    local = tmp_path / "audio"
    rng = np.random.default_rng(11)
    for k in range(4):
        write_dataset(local / f"set{k}", rng)
    fs.put(f"{local}/", "bucket/audio/", recursive=True)
    env = {**os.environ, **keys, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{relay.port}"}
    try:
        yield relay, env, local, fs
    finally:
        relay.cut()
        procs.stop_all()


@pytest.mark.s3
@pytest.mark.cluster
def test_a_storage_outage_in_pass_2_is_retried_and_the_run_completes(s3_behind_a_relay, tmp_path):
    relay, env, local, fs = s3_behind_a_relay
    argv = command("preprocess", "s3://bucket/audio", "s3://bucket/out.zarr", "--workers", 2,
                   "--batch-size", 1, "--n-mels", 64)  # fmt: skip
    process, seen = start_and_wait_for(argv, "pass 2/2", env=env)
    relay.cut()
    time.sleep(5)  # 5 s with no connection at all: the tasks' second tries fail too
    relay.restore()
    rest = rest_of(process, 300)
    assert process.returncode == 0, seen + rest
    assert "trying again" not in seen + rest  # the retries are in the log, not on screen
    reference = tmp_path / "reference.zarr"
    preprocess(local, reference, SpectrogramConfig.from_options(n_mels=64),
               executor=LoopExecutor(), batch_size=1)  # fmt: skip
    fs.get("bucket/out.zarr/", str(tmp_path / "out.zarr"), recursive=True)
    assert_same_arrays(tmp_path / "out.zarr", reference)


@pytest.mark.s3
@pytest.mark.cluster
def test_storage_gone_for_good_ends_the_run_in_one_line_and_bounded_time(s3_behind_a_relay):
    relay, env, _, _ = s3_behind_a_relay
    argv = command("preprocess", "s3://bucket/audio", "s3://bucket/out.zarr", "--workers", 2,
                   "--batch-size", 1, "--n-mels", 64)  # fmt: skip
    process, seen = start_and_wait_for(argv, "pass 2/2", env=env)
    relay.cut()
    started = time.monotonic()
    rest = rest_of(process, 300)
    took = time.monotonic() - started
    result = subprocess.CompletedProcess(argv, process.returncode, "", seen + rest)
    expected = ("Could not reach the storage of 's3://bucket/audio' or 's3://bucket/out.zarr', "
                "4 times over 14 s")  # fmt: skip
    assert_one_line_error(result, expected, "run the same command")
    assert "Compute Failed" not in result.stderr and "internal error" not in result.stderr
    assert took < 90, took
