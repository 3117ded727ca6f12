"""Submission to a Dask cluster of separate processes started with the `dask` command:
same bytes as a local run, a worker killed mid-run, TLS, and a client or the scheduler
killed and the run resumed."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trustme

from melpipe.analysis.config import SpectrogramConfig
from melpipe.errors import StoreError
from melpipe.read.reader import open_store
from melpipe.run.executors import LoopExecutor
from melpipe.run.runner import preprocess
from melpipe.sources.demo import generate_demo
from tests.helpers import assert_same_bytes
from tests.processes import Processes, n_workers_connected, start_dask_cluster, wait_for

pytestmark = pytest.mark.cluster

BATCH = 2
OPTIONS = ["--n-mels", "64", "--batch-size", str(BATCH)]
CONFIG = SpectrogramConfig.from_options(n_mels=64)


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    """Enough files (200 tasks per pass) that a run is still going when something is killed."""
    folder = tmp_path_factory.mktemp("cluster") / "audio"
    generate_demo(folder, count=400, seed=3, broken=True)
    return folder


@pytest.fixture(scope="module")
def local_run(audio, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "local.zarr"
    preprocess(audio, out, CONFIG, executor=LoopExecutor(), batch_size=BATCH)
    return out


@pytest.fixture
def procs(tmp_path):
    running = Processes(tmp_path)
    yield running
    running.stop_all()


@pytest.fixture
def cluster(procs):
    """A scheduler and two workers, each its own process group, all connected."""
    address, workers = start_dask_cluster(procs, 2)
    wait_for(lambda: n_workers_connected(address) == 2, "two workers")
    return address, workers


def run_cli(*args) -> list[str]:
    return [sys.executable, "-m", "melpipe", *map(str, args)]


def written_chunks(store: Path) -> list[Path]:
    folder = store / "clipped" / "c"
    return sorted(folder.iterdir()) if folder.exists() else []


def test_submitted_run_writes_the_same_bytes_as_a_local_run(audio, local_run, cluster, tmp_path):
    address, _ = cluster
    out = tmp_path / "cluster.zarr"
    result = subprocess.run(
        run_cli("preprocess", audio, out, "--scheduler", address, *OPTIONS),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert f"Connected to the Dask scheduler at {address} (2 workers)" in result.stderr
    assert "pass 2/2: images" in result.stderr
    assert_same_bytes(out, local_run)


def test_a_worker_killed_mid_run_does_not_stop_it(audio, local_run, procs, cluster, tmp_path):
    address, workers = cluster
    out = tmp_path / "killed-worker.zarr"
    command = run_cli("preprocess", audio, out, "--scheduler", address, *OPTIONS)
    run = procs.start("client", *command)
    wait_for(lambda: len(written_chunks(out)) >= 3, "the first images", timeout=240)
    procs.kill(workers[1])  # SIGKILL the nanny and its worker process at once
    n_at_kill = len(written_chunks(out))
    assert run.wait(timeout=300) == 0, procs.log("client")
    assert n_at_kill < 200, "the run ended before the worker was killed; the test proved nothing"
    assert_same_bytes(out, local_run)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A private CA, a node certificate and a client certificate, named as make-certs.sh
    names them (trustme makes them here, so that tests need no openssl binary)."""
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(folder / "ca.pem")
    for who, identity in (("node", "127.0.0.1"), ("client", "melpipe-client")):
        cert = ca.issue_cert(identity)
        cert.private_key_pem.write_to_path(folder / f"{who}.key")
        (folder / f"{who}.pem").write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
    return folder


def test_a_tls_scheduler_refuses_a_client_without_certificates(
    audio, certificates, procs, tmp_path
):
    address, _ = start_dask_cluster(procs, 1, tls_dir=certificates)
    assert address.startswith("tls://")
    wait_for(lambda: n_workers_connected(address, certificates) == 1, "a TLS worker")

    refused = subprocess.run(
        run_cli("preprocess", audio, tmp_path / "refused.zarr", "--scheduler", address),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "5s"},
    )
    assert refused.returncode != 0
    assert f"Could not connect to the Dask scheduler at {address}" in refused.stderr
    assert "--tls-ca-file" in refused.stderr
    assert not (tmp_path / "refused.zarr").exists()

    out = tmp_path / "tls.zarr"
    accepted = subprocess.run(
        run_cli(
            "preprocess",
            audio,
            out,
            "--scheduler",
            address,
            "--tls-ca-file",
            certificates / "ca.pem",
            "--tls-cert",
            certificates / "client.pem",
            "--tls-key",
            certificates / "client.key",
            *OPTIONS,
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert accepted.returncode == 0, accepted.stderr
    assert len(open_store(out)) == 400  # the two broken files give no clip


def test_a_client_killed_mid_run_is_resumed_without_redoing_written_batches(
    audio, local_run, procs, cluster, tmp_path
):
    address, _ = cluster
    out = tmp_path / "resumed.zarr"
    command = run_cli("preprocess", audio, out, "--scheduler", address, *OPTIONS)
    first = procs.start("first-client", *command)
    wait_for(lambda: len(written_chunks(out)) >= 4, "some batches written", timeout=240)
    first.send_signal(signal.SIGKILL)
    first.wait()
    time.sleep(1.0)  # tasks already running on the workers may still finish their batch

    with pytest.raises(StoreError, match="unfinished"):
        open_store(out)
    before = {p.name: p.stat() for p in written_chunks(out)}
    image_chunks = [out / "images" / "c" / name / "0" / "0" for name in before]
    images_before = {p: p.stat() for p in image_chunks}
    assert 0 < len(before) < 200

    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    resumed = re.search(r"(\d+) of (\d+) batches of clips are already written", again.stderr)
    assert resumed, again.stderr
    assert int(resumed.group(1)) >= len(before) and int(resumed.group(2)) == 200
    assert "pass 1 is done" in again.stderr and "pass 1/2" not in again.stderr
    for chunk, stat in images_before.items():  # written once, never again
        now = chunk.stat()
        assert (now.st_ino, now.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns), chunk
    assert_same_bytes(out, local_run)


def test_a_scheduler_killed_mid_pass_ends_the_run_in_one_line_and_the_command_resumes(
    audio, local_run, procs, cluster, tmp_path
):
    address, workers = cluster
    out = tmp_path / "lost-scheduler.zarr"
    first = procs.start("first-client", *run_cli("preprocess", audio, out, "--scheduler",
                                                 address, *OPTIONS))  # fmt: skip
    wait_for(lambda: len(written_chunks(out)) >= 4, "some batches written", timeout=240)
    procs.kill(procs.started[0])  # the scheduler, with SIGKILL
    assert first.wait(timeout=120) == 1
    stderr = procs.log("first-client").splitlines()
    errors = [line for line in stderr if "Error" in line or "Traceback" in line]
    assert errors == [
        f"Error: Lost the Dask scheduler at {address} mid-run (FutureCancelledError). Start it "
        "and its workers again, then run the same command: it resumes, keeping the batches "
        "already written."
    ], stderr[-20:]
    for worker in workers:
        procs.kill(worker)
    time.sleep(1.0)  # nothing is left to write; let the file system settle
    before = {p.name: p.stat() for p in written_chunks(out)}
    assert 0 < len(before) < 200

    again_procs = Processes(tmp_path / "again")
    (tmp_path / "again").mkdir()
    try:
        again_address, _ = start_dask_cluster(again_procs, 2)
        wait_for(lambda: n_workers_connected(again_address) == 2, "two workers again")
        command = run_cli("preprocess", audio, out, "--scheduler", again_address, *OPTIONS)
        again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    finally:
        again_procs.stop_all()
    assert again.returncode == 0, again.stderr
    resumed = re.search(r"(\d+) of 200 batches of clips are already written", again.stderr)
    assert resumed and int(resumed.group(1)) >= len(before), again.stderr
    for name, stat in before.items():  # written once, never again
        now = (out / "clipped" / "c" / name).stat()
        assert (now.st_ino, now.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns), name
    assert_same_bytes(out, local_run)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="make-certs.sh needs openssl")
def test_make_certs_writes_what_the_scripts_and_the_client_use(tmp_path, procs):
    from tests.processes import RECIPES

    subprocess.run([RECIPES / "make-certs.sh", tmp_path / "certs"], check=True, timeout=120)
    for name in ("ca.pem", "node.pem", "node.key", "client.pem", "client.key"):
        assert (tmp_path / "certs" / name).is_file(), name
    address, _ = start_dask_cluster(procs, 1, tls_dir=tmp_path / "certs")
    wait_for(lambda: n_workers_connected(address, tmp_path / "certs") == 1, "a TLS worker")
