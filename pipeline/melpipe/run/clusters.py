"""Dask clusters: the executor that runs a pass's tasks on one and reduces their results
there (:class:`DaskExecutor`), and connecting to a running scheduler or starting a local
cluster, whose messages go to a log file. With :mod:`.executors`, the only modules that
know Dask.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import multiprocessing
import os
import pickle
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from melpipe import interrupts
from melpipe.analysis.stats import M, merge_all
from melpipe.errors import SchedulerError
from melpipe.run.types import DEFAULT_SPLIT_EVERY, ProgressBar, Resources, Work, tree_reduce

if TYPE_CHECKING:
    from melpipe.run.executors import TLSFiles

logger = logging.getLogger(__name__)

Item = TypeVar("Item")  # a task's item: what one call of a pass works on
Ctx = TypeVar("Ctx")  # what every call of a pass shares

LOCALHOST = "127.0.0.1"


# A task runs several items of a pass (batches, each its own chunk of the store) one after
# the other: the client and the scheduler spend about 4 ms of CPU on each task, which one
# per batch of 64 files made 60 us per file (2 cores, 11,136 files), the most that one
# coordinator can keep up with, whatever the cluster. Grouping leaves what each item
# writes and returns unchanged, and any grouping merges to the same result.
TASKS_PER_WORKER = 8
MAX_GROUP = 16


# How often a pass's wait for results looks whether a stop was requested: as_completed's own
# wait, every 0.1 s, happens inside distributed and never tells.
WAIT_SECONDS = 0.05


def run_group(
    fn: Callable[[Item, Ctx], M], kind: type[M], items: Sequence[Item], context: Ctx
) -> M:
    """One task: ``fn`` on each of ``items`` in order, merged."""
    return merge_all(kind, *(fn(item, context) for item in items))


def run_packed_group(fn: Callable[[Item, Ctx], M], kind: type[M], packed: bytes, context: Ctx) -> M:
    """:func:`run_group` on items sent pickled (:meth:`DaskExecutor.map_reduce`)."""
    return run_group(fn, kind, pickle.loads(packed), context)


class DaskExecutor:
    """Runs every task on a Dask cluster and reduces the results there, as a tree.

    ``log``: where the cluster's own messages go (a failed task's traceback among them),
    for a local cluster; a remote cluster's are its workers' own."""

    def __init__(
        self, client: Any, split_every: int = DEFAULT_SPLIT_EVERY, log: Path | None = None
    ) -> None:
        self.client = client
        self.split_every = split_every
        self.n_tasks = 0  # submitted so far: batch tasks plus reduction tasks
        self.log = log

    def expect(self, work: Work) -> None:
        pass

    @property
    def resources(self) -> Resources:
        workers = self.client.scheduler_info().get("workers", {}).values()
        limits = [w.get("memory_limit") or 0 for w in workers]
        known = [limit for limit in limits if limit > 0]
        # A worker without a limit may use its host's memory, which only it knows.
        memory = min(known) if known and len(known) == len(limits) else None
        return Resources(workers=len(limits), memory_per_worker=memory, in_client=False)

    def map_reduce(
        self,
        fn: Callable[[Item, Ctx], M],
        items: Sequence[Item],
        context: Ctx,
        kind: type[M],
        bar: ProgressBar,
    ) -> M:
        from distributed import as_completed

        interrupts.check()  # a stop requested between passes ends the run before this one
        size = self.group_size(len(items))
        starts = range(0, len(items), size)
        # Each task's items travel as one pickle, which the scheduler keeps as it is: it
        # unpickles a task's arguments, and kept every array and path of every item as an
        # object of its own (its peak at 100,000 files went from 132 to 106 MiB).
        packed = [pickle.dumps(tuple(items[i : i + size]), pickle.HIGHEST_PROTOCOL)
                  for i in starts]  # fmt: skip
        task = functools.partial(run_packed_group, fn, kind)
        # pure=False: the write pass has side effects, and a rerun must really run again.
        futures = self.client.map(task, packed, [context] * len(packed), pure=False)
        del packed
        self.n_tasks += len(futures)
        counts = [min(size, len(items) - i) for i in starts]
        done = dict(zip((f.key for f in futures), counts, strict=True))
        combine = functools.partial(merge_all, kind)
        root = tree_reduce(futures, combine, split_every=self.split_every, submit=self._submit)
        # Hold each group's future only until it is done, so that the cluster frees its
        # result once the tree has used it: held to the end, every result of a pass stayed
        # in the workers' memory (about 100 kB per batch of pass 1).
        finished = as_completed(futures)
        del futures
        with self._scheduler_kept():
            while not finished.is_empty():
                ready = finished.next_batch(block=False)
                if not ready:  # a stop requested meanwhile ends the run here (interrupts)
                    interrupts.wait(WAIT_SECONDS)
                for future in ready:
                    if future.status == "error":  # fail now, not once every other task ran
                        future.result()
                    bar.update(done.pop(future.key))
            result: M = root.result()
        return result

    @contextlib.contextmanager
    def _scheduler_kept(self) -> Iterator[None]:
        """Turns the loss of the scheduler mid-pass (its tasks cancelled, or their results
        unreachable) into one line that says how to go on; a task's own error passes."""
        address = self.client.scheduler.address
        try:
            yield
        except Exception as exc:
            if self.client.status == "running":
                raise
            raise SchedulerError(
                f"Lost the Dask scheduler at {address} mid-run ({type(exc).__name__}). Start "
                "it and its workers again, then run the same command: it resumes, keeping "
                "the batches already written."
            ) from exc

    def group_size(self, n_items: int) -> int:
        """Items per task: enough tasks for each worker to take :data:`TASKS_PER_WORKER`
        of them (the last tasks of a pass then leave little idle), at most
        :data:`MAX_GROUP` items each."""
        workers = max(1, len(self.client.scheduler_info().get("workers", {})))
        return max(1, min(MAX_GROUP, n_items // (TASKS_PER_WORKER * workers)))

    def _submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        self.n_tasks += 1
        return self.client.submit(fn, *args, pure=False)


@contextlib.contextmanager
def connect(scheduler: str, tls: TLSFiles | None, log: Path) -> Iterator[Any]:
    from distributed import Client

    security = tls.security() if tls is not None else None
    try:
        client = Client(scheduler, security=security)
    except Exception as exc:  # distributed raises OSError, TimeoutError, TypeError...
        hint = (
            " Give its certificates with `tls`."
            if (scheduler.startswith("tls://") and tls is None)
            else ""
        )
        raise SchedulerError(
            f"Could not connect to the Dask scheduler at {scheduler}: "
            f"{type(exc).__name__}: {exc}.{hint}"
        ) from exc
    # The client's own messages (a lost scheduler's reconnection tracebacks among them) go
    # to a file, as a local cluster's do: the run says what happened in one line.
    with dask_logs_to(log), client:
        n = len(client.scheduler_info().get("workers", {}))
        logger.info("Connected to the Dask scheduler at %s (%d workers).", scheduler, n)
        _log_dashboard(client)
        yield client


# Imported once by the process that local workers are forked from, and by each worker.
WORKER_MODULE = "melpipe.run.warm"
WORKER_PRELOAD = ("distributed", WORKER_MODULE)
# As Dask's nanny sets them for the workers it spawns: one BLAS thread per worker. They
# must be set before numpy loads BLAS, so in the environment the fork server starts with.
ONE_BLAS_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def _can_fork_workers() -> bool:
    return "forkserver" in multiprocessing.get_all_start_methods()


def prepare_local_workers() -> None:
    """Start, in the background, the process that a local cluster's workers are forked
    from, which imports what a worker needs (:mod:`melpipe.run.warm`) while this process
    goes on. Call it as early as possible; it does nothing if that process runs already.

    Measured on 2 cores: each spawned worker spent its first batch importing the analysis
    (3.9 s of a run of 8 files, when it still imported librosa's STFT modules), while the
    cluster's start and the listing went by. Forked workers start with it done, and it is
    done once per run, not once per worker.
    """
    if not _can_fork_workers():
        return
    from multiprocessing import forkserver

    forkserver.set_forkserver_preload(list(WORKER_PRELOAD))
    saved = {name: os.environ.get(name) for name in ONE_BLAS_THREAD}
    os.environ.update(ONE_BLAS_THREAD)
    try:
        forkserver.ensure_running()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def local_cluster(n_workers: int, log: Path) -> Iterator[Any]:
    import dask.config
    from distributed import Client, LocalCluster

    prepare_local_workers()
    method = "forkserver" if _can_fork_workers() else "spawn"
    if method == "forkserver":
        import distributed.utils

        # distributed's own fork-server set-up would first import, in this process, every
        # package it knows of to preload them (pandas among them: 0.4 s of CPU on 2 cores,
        # for a list our fork server, already running, never reads). This flag is how it
        # marks that set-up done; a release without it just ignores it.
        distributed.utils._forkserver_preload_set = True
    # Without bokeh the scheduler still serves HTTP, but its dashboard page is empty.
    has_bokeh = importlib.util.find_spec("bokeh") is not None
    with (
        # Measured: the nanny's default MALLOC_TRIM_THRESHOLD_=65536 makes the allocation-
        # heavy analysis 1.5 times slower; unset, glibc picks its own (dynamic) threshold.
        dask.config.set(
            {
                "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                "distributed.worker.multiprocessing-method": method,
            }
        ),
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            # Loopback only: a Dask scheduler runs any code sent to it, and its dashboard
            # shows logs and call stacks. Nobody else on the network needs either.
            host=LOCALHOST,
            dashboard_address=f"{LOCALHOST}:{8787 if has_bokeh else 0}",
            silence_logs=logging.ERROR,
            preload=[WORKER_MODULE],  # already loaded when forked from the fork server
            env={WORKER_LOG: str(log)},  # see melpipe.run.warm.dask_setup
        ) as cluster,
        Client(cluster) as client,
        dask_logs_to(log),  # the scheduler and the nannies, in this process
    ):
        logger.info("Started a local Dask cluster of %d worker processes.", n_workers)
        if has_bokeh:
            _log_dashboard(client)
        else:
            logger.info("No Dask dashboard: install bokeh (melpipe's dashboard extra) for one.")
        yield client


# The file a local cluster's workers log to, in their environment (melpipe.run.warm).
WORKER_LOG = "MELPIPE_WORKER_LOG"


def log_path() -> Path:
    """A new file for a local cluster's messages: under ``$XDG_STATE_HOME/melpipe/logs``
    (``~/.local/state`` by default), named by time and process. It is made only when
    something is logged, so a run where nothing fails leaves none."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(state) / "melpipe" / "logs" / f"{stamp}-{os.getpid()}.log"


def send_dask_logs(path: Path, name: str = "distributed") -> Callable[[], None]:
    """Send Dask's messages (a failed task's traceback, a worker that died), or those of
    logger ``name``, to ``path`` instead of the terminal, so that a person sees the run's
    one line, which names the file. Returns what undoes it."""
    dask_logger = logging.getLogger(name)
    terminal = [h for h in dask_logger.handlers if type(h) is logging.StreamHandler]
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, delay=True)  # made at the first message
    handler.setLevel(logging.WARNING)  # a run where nothing goes wrong leaves no file
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s "
                                           "%(message)s"))  # fmt: skip
    for each in terminal:
        dask_logger.removeHandler(each)
    dask_logger.addHandler(handler)

    def undo() -> None:
        dask_logger.removeHandler(handler)
        handler.close()
        for each in terminal:
            dask_logger.addHandler(each)

    return undo


# Dask's loggers with a terminal handler of their own (Dask's logging settings), which
# do not pass their messages up to "distributed": the client's among them.
DASK_LOGGERS = ("distributed", "distributed.client")


@contextlib.contextmanager
def dask_logs_to(path: Path) -> Iterator[None]:
    """:func:`send_dask_logs` of each of :data:`DASK_LOGGERS` while the block runs."""
    undo = [send_dask_logs(path, name) for name in DASK_LOGGERS]
    try:
        yield
    finally:
        for each in reversed(undo):
            each()


def _log_dashboard(client: Any) -> None:
    services = client.scheduler_info().get("services", {})
    if "dashboard" in services:
        logger.info("Dask dashboard: %s", client.dashboard_link)
