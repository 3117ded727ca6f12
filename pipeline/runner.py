"""Carrying out a run plan: look, plan, take the store, run the passes, finish.

:func:`preprocess` reads what it needs to plan (the input listing, what is at OUTPUT, the
``--stats-from`` store), lets :func:`pipeline.plan.make_plan` decide, then owns OUTPUT
through :mod:`pipeline.lock` while it runs pass 1 (statistics, reduced as a tree) and
pass 2 (images) on an executor from :mod:`pipeline.executors`. Every decision is the
plan's; this module only does what the plan says, in order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from pipeline import lock, store
from pipeline.config import SpectrogramConfig
from pipeline.discover import SkippedFolder, is_url, list_audio_files
from pipeline.errors import StatisticsError, StoreError
from pipeline.executors import Executor, ProgressBar, open_executor
from pipeline.plan import DEFAULT_BATCH_SIZE, Found, Plan, Request, Source, make_plan
from pipeline.schema import LOCK_FILE, Counts, StatsRecord, StoreAttrs
from pipeline.stats import Extrema, GlobalStats, StatsName
from pipeline.tasks import Failure, WriteSummary, images_batch, statistics_batch

logger = logging.getLogger(__name__)

Progress = Callable[[str, int], ProgressBar]


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _no_progress(description: str, total: int) -> ProgressBar:
    return _NoBar()


@dataclass(frozen=True)
class RunReport:
    """What a run did, for the person who started it."""

    output: str
    action: str  # "create", "resume" or "replace"
    n_files: int
    n_valid: int
    n_failed: int
    failures: tuple[Failure, ...]
    stats: GlobalStats
    used: StatsName
    clipped_fraction: float
    seconds: dict[str, float]  # wall time of "startup", "statistics" and "images"
    skipped: tuple[SkippedFolder, ...] = ()
    n_tasks: int = 0  # Dask tasks submitted (0 without Dask)


def preprocess(
    input_dir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    config: SpectrogramConfig,
    *,
    stats: StatsName | None = None,
    stats_from: str | os.PathLike[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    scratch: bool = True,
    overwrite: bool = False,
    executor: Executor | None = None,
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
    scratch : bool
        Keep pass 1's log-mels in the store until pass 2 has scaled them (4 bytes per
        pixel, removed at the end), instead of computing them twice.
    overwrite : bool
        Replace a store that specpipe wrote at ``output``.
    executor : Executor, optional
        Where the tasks run (see :mod:`pipeline.executors`); default a new local cluster
        of one worker process per core.
    progress : callable, optional
        ``progress(description, total)`` returns a bar with ``update`` and ``close``.

    Raises
    ------
    SpecpipeError
        Before any work starts, for invalid parameters, no audio or an output in the way
        (see :func:`pipeline.plan.make_plan`); during the run, if another run takes the
        store over, or if the dataset gives no usable statistics.
    """
    request = Request(
        input=os.fspath(input_dir),
        output=os.fspath(output),
        config=config,
        stats=stats,
        stats_from=None if stats_from is None else os.fspath(stats_from),
        batch_size=batch_size,
        scratch=scratch,
        overwrite=overwrite,
    )
    clock = _Clock()
    with contextlib.ExitStack() as stack:
        if executor is None:
            executor = stack.enter_context(open_executor())
        found = _look(request, executor)
        plan = make_plan(request, found)
        return _Run(plan, found, executor, progress, clock).carry_out()


def _look(request: Request, executor: Executor) -> Found:
    """Everything the plan depends on, read without changing anything."""
    listing = list_audio_files(request.input)
    source = _read_source(request.stats_from) if request.stats_from is not None else None
    return Found(
        listing=listing,
        output=store.inspect(request.output),
        resources=executor.resources,
        input_key=_location_key(request.input),
        output_key=_location_key(request.output),
        source=source,
    )


def _location_key(location: str) -> str:
    """A location resolved, so that two names of one folder compare equal."""
    if is_url(location):
        protocol, _, path = location.partition("://")
        return f"{protocol}://{os.path.normpath('/' + path)}"
    return os.path.realpath(location)


def _read_source(url: str) -> Source:
    opened = store.ReadableStore(url)
    stats = opened.attrs.stats
    assert stats is not None  # a complete store's statistics are checked on opening
    return Source(url, opened.attrs.run_id, opened.attrs.config, stats.values, stats.used)


class _Run:
    """One run of a plan, on one executor, while it owns the store."""

    def __init__(
        self, plan: Plan, found: Found, executor: Executor, progress: Progress, clock: _Clock
    ) -> None:
        self.plan, self.found, self.executor = plan, found, executor
        self.progress, self.clock = progress, clock
        self.request = plan.request
        self.paths = plan.listing.files

    def carry_out(self) -> RunReport:
        plan = self.plan
        owner = lock.Owner.new(plan.run_id or uuid.uuid4().hex)
        logger.info(
            "%d audio files in %d batches of up to %d.",
            len(self.paths),
            len(plan.batches),
            self.request.batch_size,
        )
        with lock.hold(self.request.output, owner, create=plan.action == "create") as claim:
            self.claim = claim
            self._check_unchanged()
            attrs = self._prepare()
            self.clock.lap("startup")
            global_stats = plan.stats or self._statistics(attrs)
            summary = self._images(global_stats)
            clipped = summary.n_clipped / summary.n_pixels if summary.n_pixels else 0.0
            record = StatsRecord(global_stats, plan.used, _source(plan), clipped)
            counts = Counts(summary.n_files, summary.n_valid)
            final = dataclasses.replace(attrs, status="complete", stats=record, counts=counts)
            store.finish(claim, final)
        return RunReport(
            output=self.request.output,
            action=plan.action,
            n_files=summary.n_files,
            n_valid=summary.n_valid,
            n_failed=summary.n_failed,
            failures=summary.failures,
            stats=global_stats,
            used=plan.used,
            clipped_fraction=clipped,
            seconds=self.clock.laps,
            skipped=plan.listing.skipped,
            n_tasks=self.executor.n_tasks,
        )

    def _check_unchanged(self) -> None:
        """Refuse to go on if OUTPUT changed between looking and owning it."""
        if self.plan.action == "create":
            return  # the lock made OUTPUT itself, exclusively
        before, now = self.found.output, store.inspect(self.request.output)
        entries = {e for e in now.entries if e != LOCK_FILE}
        if (now.kind, now.attrs, entries) != (
            before.kind,
            before.attrs,
            set(before.entries) - {LOCK_FILE},
        ):
            raise StoreError(
                f"Output {self.request.output!r} changed while this run was getting ready; "
                "nothing was done. Run the command again."
            )

    def _prepare(self) -> StoreAttrs:
        """The store's attributes, after creating it unless the run resumes it."""
        plan = self.plan
        if plan.action == "resume":
            attrs = StoreAttrs.from_dict(self.found.output.attrs or {})
            logger.info(
                "Resuming the unfinished run in %s: %d of %d batches are already written%s.",
                self.request.output,
                len(plan.done),
                len(plan.batches),
                ", and its statistics known" if plan.stats is not None else "",
            )
            return attrs
        attrs = StoreAttrs(
            status="incomplete",
            run_id=self.claim.run_id,
            created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            input=self.request.input,
            config=self.request.config,
            plan=plan.identity,
            versions=_versions(),
            skipped=tuple({"path": s.path, "reason": s.reason} for s in plan.listing.skipped),
            stats=None if plan.stats is None else StatsRecord(plan.stats, plan.used, _source(plan)),
        )
        store.clear(self.claim)  # what specpipe wrote there before, and only that
        store.create(
            self.claim,
            attrs,
            n_clips=len(self.paths),
            batch_size=self.request.batch_size,
            scratch=plan.scratch,
        )
        return attrs

    def _statistics(self, attrs: StoreAttrs) -> GlobalStats:
        """Pass 1, and what the store must record whether it succeeds or not."""
        plan = self.plan
        extrema = self._pass(
            f"pass 1/{plan.n_passes}: statistics",
            statistics_batch,
            plan.batches,
            {"claim": self.claim if plan.scratch else None},
            Extrema.merge_all,
        )
        try:
            global_stats = extrema.finalize()
            global_stats.range(plan.used)
        except StatisticsError as exc:
            # Nothing can be scaled: drop the scratch log-mels, and say so in the store.
            store.finish(self.claim, dataclasses.replace(attrs, status="failed", failure=str(exc)))
            raise StatisticsError(
                f"{exc} The store {self.request.output!r} is marked failed."
            ) from None
        store.put_attrs(
            self.claim, dataclasses.replace(attrs, stats=StatsRecord(global_stats, plan.used))
        )
        self.clock.lap("statistics")
        return global_stats

    def _images(self, global_stats: GlobalStats) -> WriteSummary:
        """Pass 2 over the batches not yet written, and the summary of all of them."""
        plan = self.plan
        summary: WriteSummary = self._pass(
            f"pass {plan.n_passes}/{plan.n_passes}: images",
            images_batch,
            plan.todo,
            {
                "scale": global_stats.range(plan.used),
                "claim": self.claim,
                "from_scratch": plan.scratch,
            },
            WriteSummary.merge_all,
        )
        self.clock.lap("images")
        earlier = store.read_rows(self.request.output, plan.done)
        config = self.request.config
        return WriteSummary.merge_all(
            summary,
            *(
                WriteSummary.of_rows(b.start, rows, config)
                for b, rows in zip(plan.done, earlier, strict=True)
            ),
        )

    def _pass(
        self,
        description: str,
        fn: Callable[..., Any],
        batches: Sequence[Any],
        kwargs: dict[str, Any],
        combine: Callable[..., Any],
    ) -> Any:
        if not batches:  # a resumed run whose batches were all written
            return combine()
        bar = self.progress(description, len(batches))
        try:
            return self.executor.map_reduce(
                fn,
                [[self.paths[b.start : b.stop] for b in batches], list(batches)],
                {"root": self.request.input, "config": self.request.config, **kwargs},
                combine,
                bar,
            )
        finally:
            bar.close()


def _source(plan: Plan) -> dict[str, str] | None:
    return {"store": plan.source.url, "run_id": plan.source.run_id} if plan.source else None


class _Clock:
    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self._last
        self._last = now


def _versions() -> dict[str, str]:
    return {name: version(name) for name in ("specpipe", "librosa", "numpy", "zarr", "dask")}


__all__ = ["RunReport", "preprocess"]
