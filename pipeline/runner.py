"""Running the two passes over a plan, on Dask or in plain loops: the only module that knows Dask.

Pass 1 maps :func:`pipeline.tasks.batch_extrema` over the batches and tree-reduces the
partial statistics on the cluster (bounded fan-in, so no task gathers every file); pass 2
maps :func:`pipeline.tasks.write_batch`, each task writing its own chunks, and tree-reduces
the write summaries. The client only ever holds futures and the final small results.

By default pass 1 keeps its log-mels in the store's scratch array and pass 2 scales them
from there; with ``scratch=False`` pass 2 computes them again. The README gives the
measurements behind the default.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, Protocol

from pipeline import store
from pipeline.config import SpectrogramConfig
from pipeline.discover import list_audio_files
from pipeline.errors import ConfigError, SchedulerError, StoreError
from pipeline.plan import DEFAULT_SPLIT_EVERY, Batch, plan_batches, tree_reduce
from pipeline.stats import STATS_NAMES, Extrema, GlobalStats, StatsName
from pipeline.tasks import Failure, WriteSummary, batch_extrema, write_batch

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 64
SYNC = "sync"  # scheduler value: run the plan in plain loops in this process, without Dask


class ProgressBar(Protocol):
    def update(self, n: int = 1) -> Any: ...
    def close(self) -> Any: ...


Progress = Callable[[str, int], ProgressBar]


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _no_progress(description: str, total: int) -> ProgressBar:
    return _NoBar()


class Executor(Protocol):
    def map_reduce(
        self,
        fn: Callable[..., Any],
        iterables: Sequence[Sequence[Any]],
        kwargs: dict[str, Any],
        combine: Callable[..., Any],
        bar: ProgressBar,
    ) -> Any: ...


class LoopExecutor:
    """Runs every task as a plain call, in order: the reference the Dask run must equal."""

    def map_reduce(
        self,
        fn: Callable[..., Any],
        iterables: Sequence[Sequence[Any]],
        kwargs: dict[str, Any],
        combine: Callable[..., Any],
        bar: ProgressBar,
    ) -> Any:
        parts = []
        for args in zip(*iterables, strict=True):
            parts.append(fn(*args, **kwargs))
            bar.update(1)
        return tree_reduce(parts, combine)


class DaskExecutor:
    """Runs every task on a Dask cluster and reduces the results there, as a tree."""

    def __init__(self, client: Any, split_every: int = DEFAULT_SPLIT_EVERY) -> None:
        self.client = client
        self.split_every = split_every
        self.n_tasks = 0  # submitted so far: batch tasks plus reduction tasks

    def map_reduce(
        self,
        fn: Callable[..., Any],
        iterables: Sequence[Sequence[Any]],
        kwargs: dict[str, Any],
        combine: Callable[..., Any],
        bar: ProgressBar,
    ) -> Any:
        from distributed import as_completed

        # pure=False: the write pass has side effects, and a rerun must really run again.
        futures = self.client.map(fn, *iterables, **kwargs, pure=False)
        self.n_tasks += len(futures)
        root = tree_reduce(futures, combine, split_every=self.split_every, submit=self._submit)
        for _ in as_completed(futures):
            bar.update(1)
        del futures  # let the cluster free partial results once the tree has used them
        return root.result()

    def _submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        self.n_tasks += 1
        return self.client.submit(fn, *args, pure=False)


@dataclass(frozen=True)
class TLSFiles:
    """PEM files for a client of a scheduler that requires TLS (``tls://`` addresses)."""

    ca_file: str
    cert: str
    key: str

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
    """An executor for the run: a new local cluster, an existing scheduler, or plain loops.

    With an existing scheduler and no ``tls``, Dask's own configuration supplies any
    certificates (``distributed.comm.tls.*``), as it does for every Dask client.
    """
    if scheduler == SYNC:
        yield LoopExecutor()
        return
    import dask.config
    from distributed import Client, LocalCluster

    if scheduler is not None:
        security = tls.security() if tls is not None else None
        try:
            client = Client(scheduler, security=security)
        except Exception as exc:  # distributed raises OSError, TimeoutError, TypeError...
            hint = (
                " Give its certificates with --tls-ca-file, --tls-cert and --tls-key."
                if (scheduler.startswith("tls://") and tls is None)
                else ""
            )
            raise SchedulerError(
                f"Could not connect to the Dask scheduler at {scheduler}: "
                f"{type(exc).__name__}: {exc}.{hint}"
            ) from exc
        with client:
            n = len(client.scheduler_info().get("workers", {}))
            logger.info("Connected to the Dask scheduler at %s (%d workers).", scheduler, n)
            _log_dashboard(client)
            yield DaskExecutor(client)
        return
    n_workers = workers or os.cpu_count() or 1
    # Without bokeh the scheduler still serves HTTP, but its dashboard page is empty.
    has_bokeh = importlib.util.find_spec("bokeh") is not None
    with (
        # Measured: the nanny's default MALLOC_TRIM_THRESHOLD_=65536 makes the allocation-
        # heavy analysis 1.5 times slower; unset, glibc picks its own (dynamic) threshold.
        dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}),
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":8787" if has_bokeh else ":0",
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        logger.info("Started a local Dask cluster of %d worker processes.", n_workers)
        if has_bokeh:
            _log_dashboard(client)
        else:
            logger.info("No Dask dashboard: install specpipe[dashboard] (bokeh) for one.")
        yield DaskExecutor(client)


def _log_dashboard(client: Any) -> None:
    services = client.scheduler_info().get("services", {})
    if "dashboard" in services:
        logger.info("Dask dashboard: %s", client.dashboard_link)


@dataclass(frozen=True)
class RunReport:
    """What a run did, for the person who started it."""

    output: str
    n_files: int
    n_valid: int
    n_failed: int
    failures: tuple[Failure, ...]
    stats: GlobalStats
    used: StatsName
    clipped_fraction: float
    seconds: dict[str, float]  # wall time of "startup", "statistics" and "images"
    n_tasks: int = 0  # Dask tasks submitted (0 without Dask)


def preprocess(
    input_dir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    config: SpectrogramConfig,
    *,
    stats: StatsName | None = None,
    stats_from: str | os.PathLike[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    scheduler: str | None = None,
    tls: TLSFiles | None = None,
    overwrite: bool = False,
    scratch: bool = True,
    progress: Progress = _no_progress,
) -> RunReport:
    """Turn the audio files under ``input_dir`` into a finished store at ``output``.

    Parameters
    ----------
    stats : {"mean", "extrema"}, optional
        The statistics that scale the images; default "mean", or with ``stats_from`` the
        one that store used.
    stats_from : path, optional
        A finished store whose statistics scale these images; the first pass is skipped and
        the configs must agree.
    workers : int, optional
        Worker processes of the local cluster; default the machine's cores.
    scheduler : str, optional
        Address of an existing Dask scheduler, or ``"sync"`` for plain loops.
    tls : TLSFiles, optional
        Certificates for a ``tls://`` scheduler, instead of Dask's configuration.
    scratch : bool
        Keep pass 1's log-mels in the store until pass 2 has scaled them (4 bytes per
        pixel, removed at the end), instead of computing them twice.
    progress : callable, optional
        ``progress(description, total)`` returns a bar with ``update`` and ``close``.

    Raises
    ------
    SpecpipeError
        Before any work starts, for invalid parameters, no audio or an output in the way.
    """
    if stats is not None and stats not in STATS_NAMES:
        raise ConfigError(f"Expected stats to be one of {STATS_NAMES}. Got {stats!r} instead.")
    if workers is not None and workers <= 0:
        raise ConfigError(f"Expected a positive number of workers. Got {workers} instead.")
    if workers is not None and scheduler is not None:
        raise ConfigError("--workers sizes a new local cluster; it cannot apply to --scheduler.")
    if tls is not None and (scheduler is None or scheduler == SYNC):
        raise ConfigError("TLS certificates are for a running scheduler, given by --scheduler.")
    root, output = os.fspath(input_dir), os.fspath(output)
    paths = list_audio_files(root)
    source = _source_stats(stats_from, config) if stats_from is not None else None
    used: StatsName = stats or (source[1] if source else "mean")
    batches = plan_batches(len(paths), batch_size)
    scratch = scratch and source is None  # with --stats-from there is no pass 1 to keep
    listing = "\n".join(paths).encode("utf-8", "surrogateescape")
    plan = {
        "input": root,
        "files": len(paths),
        "files_sha256": hashlib.sha256(listing).hexdigest(),
        "batch_size": batch_size,
        "used": used,
        "stats_from": os.fspath(stats_from) if stats_from is not None else None,
        "scratch": scratch,
    }
    resumed = _resumable(output, config, plan)
    if resumed is None:
        store.check_writable(output, overwrite=overwrite)
    logger.info("%d audio files in %d batches of up to %d.", len(paths), len(batches), batch_size)

    clock = _Clock()
    with open_executor(workers=workers, scheduler=scheduler, tls=tls) as executor:
        clock.lap("startup")
        if resumed is None:
            target = store.create(
                output,
                n_files=len(paths),
                batch_size=batch_size,
                config=config,
                attrs={"input": root, "plan": plan, "versions": _versions()},
                scratch=scratch,
            )
            done: list[Batch] = []
        else:
            target = store.Target(output, resumed["run_id"])
            done = store.written_batches(output, batches)
            logger.info(
                "Resuming the unfinished run in %s: %d of %d batches are already written%s.",
                output,
                len(done),
                len(batches),
                ", and its statistics known" if "statistics" in resumed else "",
            )
        if source is not None:
            global_stats = source[0]
        elif resumed is not None and "statistics" in resumed:
            global_stats = GlobalStats.from_dict(resumed["statistics"])
        else:
            global_stats = _run_pass(
                executor,
                progress,
                "pass 1/2: statistics",
                batch_extrema,
                [paths[b.start : b.stop] for b in batches],
                batches,
                kwargs={"root": root, "config": config, "output": target if scratch else None},
                combine=Extrema.merge_all,
            ).finalize()
            store.record_statistics(output, global_stats.to_dict())
            clock.lap("statistics")
        n_passes = 1 if source else 2
        done_starts = {b.start for b in done}
        todo = [b for b in batches if b.start not in done_starts]
        summary: WriteSummary = _run_pass(
            executor,
            progress,
            f"pass {n_passes}/{n_passes}: images",
            write_batch,
            [paths[b.start : b.stop] for b in todo],
            todo,
            kwargs={
                "root": root,
                "config": config,
                "scale": global_stats.range(used),
                "output": target,
                "from_scratch": scratch,
            },
            combine=WriteSummary.merge_all,
        )
        clock.lap("images")
        n_tasks = getattr(executor, "n_tasks", 0)
    if done:
        earlier = [
            WriteSummary.of_rows(b.start, *rows, config)
            for b, rows in zip(done, store.read_rows(output, done), strict=True)
        ]
        summary = WriteSummary.merge_all(summary, *earlier)

    clipped = summary.n_clipped / summary.n_pixels if summary.n_pixels else 0.0
    store.finish(
        output,
        {
            "stats": {
                **global_stats.to_dict(),
                "used": used,
                "clipped_fraction": clipped,
                "from": os.fspath(stats_from) if stats_from is not None else None,
            },
            "counts": {
                "files": summary.n_files,
                "valid": summary.n_valid,
                "failed": summary.n_failed,
            },
        },
    )
    return RunReport(
        output=output,
        n_files=summary.n_files,
        n_valid=summary.n_valid,
        n_failed=summary.n_failed,
        failures=summary.failures,
        stats=global_stats,
        used=used,
        clipped_fraction=clipped,
        seconds=clock.laps,
        n_tasks=n_tasks,
    )


class _Clock:
    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self._last
        self._last = now


def _run_pass(
    executor: Executor,
    progress: Progress,
    description: str,
    fn: Callable[..., Any],
    *iterables: Sequence[Any],
    kwargs: dict[str, Any],
    combine: Callable[..., Any],
) -> Any:
    if not iterables[0]:  # a resumed run whose batches were all written
        return combine()
    bar = progress(description, len(iterables[0]))
    try:
        return executor.map_reduce(fn, iterables, kwargs, combine, bar)
    finally:
        bar.close()


def _resumable(
    output: str, config: SpectrogramConfig, plan: dict[str, Any]
) -> dict[str, Any] | None:
    """The attributes of an unfinished store at ``output`` that this same run can finish.

    A run killed part-way leaves its store incomplete; running the same command again
    (same input files, parameters, batch size and statistics) resumes it instead of
    starting over. Anything else at ``output`` is left to ``store.check_writable``.
    """
    if not store.is_store(output):
        return None
    try:
        attrs = store.read_attrs(output, require_complete=False)
    except StoreError:
        return None
    if attrs.get("status") == "complete":
        return None
    if (
        attrs.get("plan") != plan
        or attrs.get("config") != config.to_dict()
        or "run_id" not in attrs
    ):
        logger.info("%s holds an unfinished run of another plan; it cannot be resumed.", output)
        return None
    return attrs


def _source_stats(
    stats_from: str | os.PathLike[str], config: SpectrogramConfig
) -> tuple[GlobalStats, StatsName]:
    source_config, source_stats, source_used = store.read_stats(stats_from)
    if source_config != config:
        theirs, ours = source_config.to_dict(), config.to_dict()
        differing = ", ".join(
            f"{k} ({theirs[k]!r} there, {ours[k]!r} here)" for k in ours if theirs[k] != ours[k]
        )
        raise ConfigError(
            f"--stats-from {os.fspath(stats_from)!r} was made with other parameters: {differing}. "
            "Its statistics only make sense for the same analysis."
        )
    return source_stats, source_used  # type: ignore[return-value]


def _versions() -> dict[str, str]:
    return {name: version(name) for name in ("specpipe", "librosa", "numpy", "zarr", "dask")}


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "SYNC",
    "Batch",
    "RunReport",
    "TLSFiles",
    "open_executor",
    "preprocess",
]
