"""Where a run's tasks execute: plain loops, or a Dask cluster. The only module that knows Dask.

An executor offers one operation, :meth:`Executor.map_reduce`: call a function on every
item of a pass (one typed value per task) with the context the pass shares, and
tree-reduce the results, partial results of one
:class:`~melpipe.analysis.stats.Mergeable` kind, which any grouping of merges gives the same answer
for. :class:`LoopExecutor` makes plain calls in order, the reference that a Dask run must
equal byte for byte; :class:`DaskExecutor` submits the same calls as tasks and
reduces on the cluster. :func:`open_executor` builds one from the command line's options:
a new local cluster (bound to 127.0.0.1), an existing scheduler, or ``sync`` loops, or,
when nothing says, :class:`AutoExecutor`'s choice between this process and a local cluster.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from melpipe import interrupts
from melpipe.analysis.stats import M, merge_all
from melpipe.errors import ConfigError
from melpipe.parameters import Option, parameter, required
from melpipe.run.clusters import DaskExecutor, connect, local_cluster, log_path
from melpipe.run.types import ProgressBar, Resources, Work, tree_reduce

logger = logging.getLogger(__name__)

Item = TypeVar("Item")  # a task's item: what one call of a pass works on
Ctx = TypeVar("Ctx")  # what every call of a pass shares

SYNC = "sync"  # scheduler value: run the plan in plain loops in this process, without Dask


class Executor(Protocol):
    """Runs a run's tasks. ``n_tasks`` counts those submitted (0 without Dask)."""

    @property
    def n_tasks(self) -> int: ...

    @property
    def resources(self) -> Resources: ...

    def expect(self, work: Work) -> None:
        """Hear how much work the run has, before its tasks that depend on it; an
        executor that can still choose where they run (:class:`AutoExecutor`) chooses."""
        ...

    def map_reduce(
        self,
        fn: Callable[[Item, Ctx], M],
        items: Sequence[Item],
        context: Ctx,
        kind: type[M],
        bar: ProgressBar,
    ) -> M:
        """``merge_all(kind, *[fn(item, context) for item in items])``, reduced as a tree
        of at most a few results per merge; ``bar.update()`` once per ``fn``."""
        ...


def machine_memory() -> int:
    """Physical memory of this machine, in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class LoopExecutor:
    """Runs every task as a plain call, in order, in this process."""

    n_tasks = 0

    @property
    def resources(self) -> Resources:
        return Resources(workers=1, memory_per_worker=machine_memory(), in_client=True)

    def expect(self, work: Work) -> None:
        pass

    def map_reduce(
        self,
        fn: Callable[[Item, Ctx], M],
        items: Sequence[Item],
        context: Ctx,
        kind: type[M],
        bar: ProgressBar,
    ) -> M:
        from threadpoolctl import threadpool_limits

        parts = []
        # BLAS on one thread, as in a Dask worker: measured on 2 cores, its default of one
        # thread per core made a lone run 7% slower, and two runs side by side 4 times.
        with threadpool_limits(limits=1, user_api="blas"):
            for item in items:
                interrupts.check()  # a stop requested during the last task ends the run here
                parts.append(fn(item, context))
                bar.update(1)
        return tree_reduce(parts, functools.partial(merge_all, kind))


# What choosing between this process and a new local cluster weighs, measured on 2 cores
# (docs/benchmarks.md): a local cluster took 1.3 to 2.7 s to start and close, and a run
# in one process 1.4 ms per one-second clip at 22,050 Hz, both passes, so about 60 ns per
# sample analysed.
CLUSTER_SECONDS = 2.0
SECONDS_PER_SAMPLE = 60e-9


def in_process_reason(work: Work, cores: int) -> str | None:
    """Why ``work`` should run in this process rather than on a new local cluster of
    ``cores`` workers, or None if the cluster pays for its start."""
    if work.in_memory:
        return "its input or output lives in this process's memory"
    if cores <= 1:
        return "this machine has one core"
    alone = work.windows * work.samples_per_window * SECONDS_PER_SAMPLE
    if alone * (1 - 1 / cores) < CLUSTER_SECONDS:
        return (
            f"{work.windows} windows take about {alone:.2g} s here, less than a local "
            f"cluster costs to start (about {CLUSTER_SECONDS:g} s)"
        )
    return None


class AutoExecutor:
    """Where a run's tasks go when nothing says: in this process for a small run, where a
    new local cluster would cost more to start than it saves, and on a local cluster of
    ``workers`` processes (default one per core) otherwise. It chooses in :meth:`expect`,
    once the run knows its work (:func:`in_process_reason`), and says which and why; tasks
    submitted before that, the headers of fewer files than would start a cluster, run in
    this process. Use it as a context manager: a cluster it started closes with it."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._stack = contextlib.ExitStack()
        self._loop = LoopExecutor()
        self._chosen: LoopExecutor | DaskExecutor | None = None

    def __enter__(self) -> AutoExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    @property
    def chosen(self) -> str | None:
        """Where the tasks run once chosen: "process" or "cluster"."""
        if self._chosen is None:
            return None
        return "process" if isinstance(self._chosen, LoopExecutor) else "cluster"

    @property
    def n_tasks(self) -> int:
        return 0 if self._chosen is None else self._chosen.n_tasks

    @property
    def log(self) -> Path | None:
        return getattr(self._chosen, "log", None)

    @property
    def resources(self) -> Resources:
        if self._chosen is not None:
            return self._chosen.resources
        # Either may run it: plan for the smaller memory, a local cluster's worker's share.
        return Resources(self.workers, machine_memory() // self.workers, in_client=True)

    def expect(self, work: Work) -> None:
        if self._chosen is not None:
            return
        reason = in_process_reason(work, self.workers)
        if reason is not None and work.exact:
            logger.info("Running in this process: %s. `workers` starts a local cluster.", reason)
            self._chosen = self._loop
        elif reason is None:
            log = log_path()
            client = self._stack.enter_context(local_cluster(self.workers, log))
            self._chosen = DaskExecutor(client, log=log)

    def map_reduce(
        self,
        fn: Callable[[Item, Ctx], M],
        items: Sequence[Item],
        context: Ctx,
        kind: type[M],
        bar: ProgressBar,
    ) -> M:
        return (self._chosen or self._loop).map_reduce(fn, items, context, kind, bar)


@dataclass(frozen=True, kw_only=True)
class Cluster:
    """Where a run's tasks run, as a person names it: :func:`open_executor`'s choice."""

    workers: int | None = parameter(None, Option(
        kind=int, help="Worker processes of the local cluster.", shown="chosen from the work"
    ))  # fmt: skip
    scheduler: str | None = parameter(None, Option(
        help="Address of a running Dask scheduler, or 'sync' for no Dask."
    ))  # fmt: skip


@dataclass(frozen=True)
class TLSFiles:
    """PEM files for a client of a scheduler that requires TLS (``tls://`` addresses)."""

    ca_file: str = required(Option(name="tls_ca_file", kind="file",
                                    help="CA certificate for a tls:// scheduler."))  # fmt: skip
    cert: str = required(Option(name="tls_cert", kind="file", help="Client certificate (PEM)."))
    key: str = required(Option(name="tls_key", kind="file", help="Client private key (PEM)."))

    def security(self) -> Any:
        from distributed.security import Security

        return Security(
            tls_ca_file=self.ca_file,
            tls_client_cert=self.cert,
            tls_client_key=self.key,
            require_encryption=True,
        )


@contextlib.contextmanager
def open_executor(
    *, workers: int | None = None, scheduler: str | None = None, tls: TLSFiles | None = None
) -> Iterator[Executor]:
    """An executor for a run: a new local cluster, an existing scheduler, or plain loops.

    Parameters
    ----------
    workers : int, optional
        Worker processes of a new local cluster. Without it or ``scheduler``, an
        :class:`AutoExecutor` chooses from the run's work between this process and a
        local cluster of one worker per core.
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``, ``tls://...``), or ``"sync"``.
        With no ``tls``, Dask's own configuration supplies any certificates
        (``distributed.comm.tls.*``), as it does for every Dask client.
    """
    if workers is not None and workers <= 0:
        raise ConfigError(f"Expected a positive number of `workers`. Got {workers} instead.")
    if workers is not None and scheduler is not None:
        raise ConfigError("`workers` sizes a new local cluster; it cannot apply to `scheduler`.")
    if tls is not None and (scheduler is None or scheduler == SYNC):
        raise ConfigError("Certificates (`tls`) are for a running scheduler, given by `scheduler`.")
    if scheduler == SYNC:
        yield LoopExecutor()
    elif scheduler is not None:
        log = log_path()
        with connect(scheduler, tls, log) as client:
            yield DaskExecutor(client, log=log)
    elif workers is not None:
        log = log_path()
        with local_cluster(workers, log) as client:
            yield DaskExecutor(client, log=log)
    else:
        with AutoExecutor() as auto:
            yield auto
