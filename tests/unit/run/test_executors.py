"""The executors' choices without a cluster: options that contradict each other, BLAS on
one thread, and where the automatic choice would run a run's work."""

from __future__ import annotations

import pytest

from melpipe.errors import ConfigError
from melpipe.run.executors import (
    LoopExecutor,
    in_process_reason,
    open_executor,
)
from melpipe.run.types import Work
from tests.helpers import Bar, Values


def test_options_that_contradict_each_other_are_refused():
    with pytest.raises(ConfigError, match="positive number of `workers`"), open_executor(workers=0):
        pass
    with (
        pytest.raises(ConfigError, match="cannot apply to `scheduler`"),
        open_executor(workers=2, scheduler="tcp://127.0.0.1:1"),
    ):
        pass


def blas_threads(_: int, __: None) -> Values:
    from threadpoolctl import threadpool_info

    return Values(
        tuple(lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas")
    )


def test_a_loop_runs_blas_on_one_thread_as_a_dask_worker_does():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=2, user_api="blas"):  # what a 2-core machine starts with
        assert set(blas_threads(0, None).items) == {2}
        inside = LoopExecutor().map_reduce(blas_threads, [0], None, Values, Bar()).items
        assert set(blas_threads(0, None).items) == {2}  # given back afterwards
    assert inside and set(inside) == {1}


@pytest.mark.parametrize(
    ("work", "cores", "because"),
    [
        (Work(100, 22050), 16, "100 windows take about 0.13 s here"),
        (Work(10**6, 22050, in_memory=True), 16, "lives in this process's memory"),
        (Work(10**6, 22050), 1, "this machine has one core"),
        (Work(10**6, 22050), 2, None),
        (Work(4000, 22050), 2, None),  # 5.3 s alone, 2.6 s on two: a cluster pays
        (Work(2000, 22050), 2, "2000 windows take about 2.6 s here"),  # 1.3 s saved: no
    ],
)
def test_the_choice_weighs_the_work_against_a_clusters_start(work, cores, because):
    reason = in_process_reason(work, cores)
    assert (reason is None) == (because is None)
    assert because is None or because in reason
