"""The executors' one contract, run through each of them, on real local clusters and
scheduler processes: where a cluster listens, how the automatic choice starts one, and the
command line on a local cluster of two workers and on a running scheduler."""

from __future__ import annotations

from fractions import Fraction

import psutil
import pytest
import zarr

from melpipe.run.clusters import DaskExecutor
from melpipe.run.executors import (
    AutoExecutor,
    LoopExecutor,
    open_executor,
)
from melpipe.run.types import Work
from tests.helpers import Bar, Values, run_cli, square_and_add
from tests.processes import RECIPES, Processes, start_dask_cluster, wait_for


def listening_addresses(process: psutil.Process) -> set[str]:
    found = set()
    for each in (process, *process.children(recursive=True)):
        for conn in each.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                found.add(conn.laddr.ip)
    return found


def test_the_local_cluster_listens_on_loopback_only():
    with open_executor(workers=1) as executor:
        assert executor.resources.workers == 1
        addresses = listening_addresses(psutil.Process())
    assert addresses == {"127.0.0.1"}


@pytest.mark.cluster
def test_the_scheduler_script_binds_loopback_unless_told_otherwise(tmp_path):
    procs = Processes(tmp_path)
    try:
        scheduler_file = tmp_path / "scheduler.json"
        process = procs.start(
            "scheduler",
            str(RECIPES / "start-scheduler.sh"),
            env={"PORT": "0", "SCHEDULER_FILE": str(scheduler_file), "DASHBOARD": "127.0.0.1:0"},
        )
        wait_for(scheduler_file.exists, "the scheduler file")
        wait_for(lambda: len(listening_addresses(psutil.Process(process.pid))) > 0, "a socket")
        assert "tcp://127.0.0.1:" in scheduler_file.read_text()
        assert listening_addresses(psutil.Process(process.pid)) == {"127.0.0.1"}
    finally:
        procs.stop_all()


def worker_state(_: int, __: None) -> Values:
    """Whether the analysis ran in this process before this task (its imports done and
    the default filter bank built), and the BLAS threads."""
    from threadpoolctl import threadpool_info

    from melpipe.analysis.features import mel_filters

    blas = {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    return Values(((mel_filters.cache_info().currsize > 0, frozenset(blas)),))


def test_local_workers_start_with_the_analysis_imported_and_one_blas_thread():
    # Forked from a process that ran it once (melpipe.run.warm): a first batch does not pay
    # for the imports; and BLAS must still run one thread per worker.
    with open_executor(workers=2) as executor:
        found = executor.map_reduce(worker_state, [0, 1, 2, 3], None, Values, Bar())
    assert found.items == ((True, {1}),) * 4


def test_a_small_run_chooses_this_process_and_says_why(dataset, tmp_path):
    result = run_cli("preprocess", dataset, tmp_path / "small.zarr")
    assert "Running in this process: 15 windows take about" in result.stderr
    assert "--workers starts a local cluster" in result.stderr  # the parameter, as a flag
    assert "Started a local Dask cluster" not in result.stderr
    assert "Dask tasks:" not in result.stdout


def test_workers_forces_a_local_cluster_however_small_the_run(dataset, tmp_path):
    result = run_cli("preprocess", dataset, tmp_path / "small.zarr", "--workers", "2")
    assert "Started a local Dask cluster of 2 worker processes." in result.stderr
    assert "Running in this process" not in result.stderr
    assert "Dask tasks:" in result.stdout


def test_the_automatic_choice_waits_for_the_work_then_starts_a_cluster_for_a_large_run():
    with AutoExecutor(workers=1) as auto:
        auto.expect(Work(10, 22050, exact=False))  # a survey of 10 files: at least 10 windows
        assert auto.chosen is None and auto.n_tasks == 0
        found = auto.map_reduce(square_and_add, [(1, 2)], 3, Values, Bar())  # in this process
        assert found.items == (Fraction(5),) and auto.chosen is None
        auto.expect(Work(10, 22050))
        assert auto.chosen == "process" and auto.resources.in_client
    with AutoExecutor(workers=2) as auto:
        auto.expect(Work(10**6, 22050))
        assert auto.chosen == "cluster"
        assert auto.map_reduce(square_and_add, [(2, 1)], 3, Values, Bar()).items == (13,)
        assert auto.n_tasks == 1 and auto.resources.workers == 2
        auto.expect(Work(1, 22050))  # chosen once and for all
        assert auto.chosen == "cluster"


def test_a_dask_task_runs_several_items_and_the_result_is_the_same(dask_executor):
    """Fewer tasks than items, for the coordinator's sake; nothing else changes."""
    items = [(x, x + 1) for x in range(200)]
    before, bar = dask_executor.n_tasks, Bar()
    result = dask_executor.map_reduce(square_and_add, items, 2, Values, bar)
    assert result.items == tuple(Fraction(2 * x * x + y) for x, y in items)
    assert bar.updates == 200
    assert dask_executor.n_tasks - before < 200 / 2  # map tasks and the reduction's together


def test_preprocess_on_a_local_cluster_of_two_workers(dataset, tmp_path):
    out = tmp_path / "cli.zarr"
    result = run_cli("preprocess", dataset, out, "--workers", 2, "--n-mels", 64, "--batch-size", 4)
    assert f"Wrote 10 clips to {out}, from 15 files: 10 decoded, 5 failed." in result.stdout
    assert "bad/not_audio.wav: LibsndfileError: Format not recognised" in result.stdout
    assert "Started a local Dask cluster of 2 worker processes" in result.stderr
    assert "pass 1/2: statistics" in result.stderr and "pass 2/2: images" in result.stderr
    group = zarr.open_group(out, mode="r")
    assert group["images"].shape == (10, 64, 87)
    assert group.attrs["status"] == "complete"


def test_options_reach_the_store(dataset, tmp_path, cluster_address):
    out = tmp_path / "options.zarr"
    run_cli(
        "preprocess",
        dataset,
        out,
        "--scheduler",
        cluster_address,
        "--sample-rate",
        16000,
        "--n-mels",
        40,
        "--hop-length",
        160,
        "--n-fft",
        400,
        "--fmin",
        50,
        "--fmax",
        7000,
        "--frames",
        50,
        "--stats",
        "extrema",
    )
    attrs = zarr.open_group(out, mode="r").attrs
    config = attrs["config"]
    assert (config["sample_rate"], config["n_mels"], config["hop_length"], config["n_fft"]) == (
        16000,
        40,
        160,
        400,
    )
    assert (config["fmin"], config["fmax"], config["n_frames"]) == (50, 7000, 50)
    assert attrs["stats"]["used"] == "extrema"
    assert zarr.open_group(out, mode="r")["images"].shape == (10, 40, 50)


@pytest.fixture(
    params=["loop", "local-cluster", pytest.param("scheduler-processes", marks=pytest.mark.cluster)]
)
def executor(request, dask_executor, tmp_path):
    if request.param == "loop":
        yield LoopExecutor()
    elif request.param == "local-cluster":
        yield dask_executor
    else:  # a scheduler and a worker as separate processes, started by cluster/local's scripts
        from distributed import Client

        procs = Processes(tmp_path)
        try:
            address, _ = start_dask_cluster(procs, 1)
            with Client(address) as client:
                wait_for(lambda: len(client.scheduler_info()["workers"]) == 1, "a worker")
                yield DaskExecutor(client, split_every=3)
        finally:
            procs.stop_all()


@pytest.mark.parametrize("n", [1, 2, 7, 30])
def test_map_reduce_contract(executor, n):
    xs, ys = list(range(n)), list(range(100, 100 + n))
    bar = Bar()
    items = list(zip(xs, ys, strict=True))
    result = executor.map_reduce(square_and_add, items, 3, Values, bar)
    assert result.items == tuple(Fraction(3 * x * x + y) for x, y in zip(xs, ys, strict=True))
    assert bar.updates == n
    resources = executor.resources
    assert resources.workers >= 1
    assert resources.in_client == isinstance(executor, LoopExecutor)
    assert resources.memory_per_worker is None or resources.memory_per_worker > 2**20
