"""A real SLURM cluster of one node on this host (munged, slurmctld and slurmd started by
the tests): cluster/slurm/README.md's commands write the demo store through SLURM worker
jobs, and a worker job cancelled mid-run loses nothing.

Without the daemons (Debian's slurm-wlm and munge) or root these tests skip with the
reason; under CI (``MELPIPE_CI`` set, as .ci/run does) a skip is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from melpipe.run.executors import LoopExecutor
from melpipe.run.runner import preprocess
from melpipe.sources.demo import generate_demo
from tests.helpers import REPO, assert_same_bytes
from tests.processes import (
    BIN,
    Processes,
    n_workers_connected,
    scheduler_address_in,
    slurm_jobs,
    slurm_missing,
    start_slurm,
    wait_for,
)

# One process runs this module (`make test` spreads tests over processes): one host runs
# one set of SLURM daemons at a time.
pytestmark = [pytest.mark.cluster, pytest.mark.xdist_group("slurm")]

README = REPO / "cluster" / "slurm" / "README.md"


def readme_commands() -> tuple[str, str]:
    """The two commands of the README's "On one machine" section: the cluster's, then
    the run's."""
    section = README.read_text().split("## On one machine", 1)[1]
    block = re.search(r"^```sh\n(.*?)^```", section, re.DOTALL | re.MULTILINE)
    assert block, "cluster/slurm/README.md lost its commands"
    start, run = [line for line in block.group(1).splitlines() if line.strip()]
    return start, run


@pytest.fixture(scope="module")
def slurm():
    """A SLURM cluster of this one host, for the module; every job is cancelled at the end."""
    reason = slurm_missing()
    if reason:
        if os.environ.get("MELPIPE_CI"):
            pytest.fail(f"CI must run the SLURM tests, but this host {reason}")
        pytest.skip(reason)
    home = Path(tempfile.mkdtemp(prefix="melpipe-slurm-", dir="/tmp"))
    daemons = Processes(home)
    try:
        env = start_slurm(daemons, home)
        yield env
        subprocess.run(["scancel", "--user", "root"], env={**os.environ, **env}, check=False)
        wait_for(lambda: not slurm_jobs(env), "SLURM to end every job", timeout=60)
    finally:
        daemons.stop_all()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def clone(tmp_path):
    """A folder laid out as the repository is after `make preprocess`: the recipes, and
    the demo data."""
    (tmp_path / "cluster").symlink_to(REPO / "cluster")
    generate_demo(tmp_path / "data" / "demo")
    return tmp_path


def start_cluster(procs: Processes, slurm: dict[str, str], where: Path, command: str) -> str:
    """Runs the README's cluster command in ``where``; returns the scheduler's address once
    both worker jobs have connected."""
    procs.start("start-cluster", "bash", "-c", f"exec {command}", cwd=where,
                env={**slurm, "PATH": f"{BIN}{os.pathsep}{slurm['PATH']}"})  # fmt: skip
    address_file = where / "scheduler-address"
    wait_for(lambda: scheduler_address_in(address_file) is not None, "the address", 120)
    address = scheduler_address_in(address_file)
    assert address is not None and address.startswith("tcp://127.0.0.1:")
    wait_for(lambda: n_workers_connected(address) == 2, "two SLURM worker jobs", timeout=180)
    return address


def stop_cluster(procs: Processes, slurm: dict[str, str]) -> None:
    """Ctrl-C, as the README says: the script cancels its jobs and exits."""
    cluster = procs.started[0]
    cluster.send_signal(signal.SIGINT)
    assert cluster.wait(timeout=60) == 0, procs.log("start-cluster")
    wait_for(lambda: not slurm_jobs(slurm), "the worker jobs to be cancelled", timeout=60)


def local_run(audio: Path, out: Path, **options: int) -> Path:
    preprocess(audio, out, executor=LoopExecutor(), **options)
    return out


def test_the_readme_commands_write_the_demo_store_through_slurm_jobs(slurm, clone, tmp_path):
    start, run = readme_commands()
    procs = Processes(tmp_path)
    try:
        address = start_cluster(procs, slurm, clone, start)
        assert sorted(state for _, state in slurm_jobs(slurm)) == ["RUNNING", "RUNNING"]
        on_path = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        result = subprocess.run(["bash", "-c", run], cwd=clone, env=on_path,
                                capture_output=True, text=True, timeout=300)  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert f"Connected to the Dask scheduler at {address} (2 workers)" in result.stderr
        stop_cluster(procs, slurm)
    finally:
        procs.stop_all()
    reference = local_run(clone / "data" / "demo", tmp_path / "local.zarr")
    assert_same_bytes(clone / "data" / "slurm-demo.zarr", reference)


def test_a_worker_job_cancelled_mid_run_loses_nothing(slurm, clone, tmp_path):
    start, _ = readme_commands()
    options = ("--batch-size", "2")  # 150 batches: the run is still going when one job ends
    out = clone / "data" / "cancelled.zarr"
    procs = Processes(tmp_path)
    try:
        address = start_cluster(procs, slurm, clone, start)
        run = procs.start("client", str(BIN / "melpipe"), "preprocess", "data/demo", str(out),
                          "--scheduler", address, *options, cwd=clone)  # fmt: skip
        chunks = out / "clipped" / "c"
        wait_for(lambda: chunks.exists() and len(list(chunks.iterdir())) >= 3,
                 "the first images", timeout=240)  # fmt: skip
        victim = slurm_jobs(slurm)[0][0]
        subprocess.run(["scancel", victim], env={**os.environ, **slurm}, check=True)
        n_at_cancel = len(list(chunks.iterdir()))
        assert run.wait(timeout=300) == 0, procs.log("client")
        assert victim not in [job for job, _ in slurm_jobs(slurm)]
        assert n_at_cancel < 150, "the run ended before the job was cancelled: nothing proved"
        stop_cluster(procs, slurm)
    finally:
        procs.stop_all()
    reference = local_run(clone / "data" / "demo", tmp_path / "local.zarr", batch_size=2)
    assert_same_bytes(out, reference)
