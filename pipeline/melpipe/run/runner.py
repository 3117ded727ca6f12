"""``preprocess``: look, plan, then carry the plan out while owning OUTPUT.

:func:`preprocess` reads what it needs to plan (the input listing, what is at OUTPUT, the
``--stats-from`` store, the store an append adds to), lets :func:`melpipe.run.plan.make_plan`
decide, takes OUTPUT through :mod:`melpipe.store.lock`, and runs the plan's passes
(:class:`melpipe.run.lifecycle.Run`) on an executor from :mod:`melpipe.run.executors`.
Every decision about the store is the plan's; the run does what it says, in order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import uuid
from dataclasses import dataclass
from typing import Any

from melpipe import interrupts
from melpipe.analysis.config import SpectrogramConfig
from melpipe.analysis.stats import StatsName
from melpipe.errors import StoreError
from melpipe.run.analysed import Failure
from melpipe.run.executors import Executor, open_executor
from melpipe.run.lifecycle import Clock, Outcome, Run
from melpipe.run.outputs import Output, output_of
from melpipe.run.plan import Base, Duplicates, Found, Plan, Request, Source, make_plan
from melpipe.run.results import FileValues
from melpipe.run.stages import Progress, no_progress
from melpipe.sources.discover import SkippedFolder, is_url, list_audio_files
from melpipe.sources.manifests import read_manifest
from melpipe.sources.sorted_paths import PathsOnDisk
from melpipe.store import lock, opened
from melpipe.store.schema import Counts, SourceRecord, StatsRecord

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunReport:
    """What a run did, for the person who started it: the counts and the statistics the
    store records, and what only the run knows."""

    output: str
    action: str  # "create", "resume" or "replace"
    counts: Counts
    stats: StatsRecord
    failures: tuple[Failure, ...]  # the first few, in file order
    seconds: dict[str, float]  # wall time of "startup", "statistics" and "images"
    skipped: tuple[SkippedFolder, ...] = ()
    n_tasks: int = 0  # Dask tasks submitted (0 without Dask)
    quiet: tuple[str, ...] = ()  # files that decoded but gave no clip (min_level_db)
    # groups of files with the same samples or bytes, by path (a store's first, in an
    # append), and whether all but the first were left without clips
    duplicates: tuple[tuple[str, ...], ...] = ()
    dropped: bool = False
    added: SourceRecord | None = None  # what this run or append added, as recorded
    skipped_existing: int = 0  # an append's files that the store held already


def preprocess(
    input_dir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    config: SpectrogramConfig | None = None,
    *,
    files_from: str | os.PathLike[str] | None = None,
    stats: StatsName | None = None,
    stats_from: str | os.PathLike[str] | None = None,
    percentiles: tuple[float, float] | None = None,
    top_db: float | None = None,
    clip_std: float | None = None,
    batch_size: int | None = None,
    scratch: bool = True,
    overwrite: bool = False,
    append: bool = False,
    duplicates: Duplicates = "keep",
    executor: Executor | None = None,
    progress: Progress = no_progress,
) -> RunReport:
    """Turn the audio files under ``input_dir`` into a finished store at ``output``.

    Parameters
    ----------
    config : optional
        The analysis and segment parameters; default ``SpectrogramConfig()``, or, with
        ``append``, the store's (one given must equal it).
    files_from : optional
        A manifest that names the files, relative to ``input_dir``, instead of a walk of
        it (:mod:`melpipe.sources.manifests`).
    stats, stats_from : optional
        The statistic that scales the images (all five are recorded), default "mean"; a
        finished store whose statistics scale them instead (the configs must agree),
        whose choice and options are then the defaults.
    percentiles, top_db, clip_std : optional
        The options of ``percentile``, ``top-db`` and ``band-moments``; default 0.1 and
        99.9, 80 dB and 3.
    scratch : bool
        Keep pass 1's log-mels in the store for pass 2 (until the end), not compute twice.
    batch_size : optional
        Clips per task and per chunk; default 64, or with ``append`` the store's.
    overwrite : bool
        Replace a store that melpipe wrote at ``output``.
    append : bool
        Add the files of ``input_dir`` that ``output``, a finished store, lacks (by path,
        from this same input), scaled with its statistics, unchanged
        (docs/cli.md, "Datasets that grow").
    duplicates : {"keep", "drop"}
        Files with the same samples (or bytes) as one before them: stored and reported,
        or left without clips (the first in store order stays).
    executor, progress : optional
        Where the tasks run (:mod:`melpipe.run.executors`; default a local cluster), and
        ``progress(description, total)``, which returns a bar with ``update``, ``close``.

    Raises
    ------
    MelpipeError
        Before any work starts, for invalid parameters, no audio or an output in the way
        (see :func:`melpipe.run.plan.make_plan`); during the run, if another run takes the
        store over, or if the dataset gives no usable statistics.
    """
    # long because: the request is every parameter above, named
    request = Request(
        input=os.fspath(input_dir),
        output=os.fspath(output),
        config=config or SpectrogramConfig(),
        files_from=None if files_from is None else os.fspath(files_from),
        statistic=stats,
        stats_from=None if stats_from is None else os.fspath(stats_from),
        options=_given(percentiles=percentiles, top_db=top_db, clip_std=clip_std),
        batch_size=batch_size,
        scratch=scratch,
        overwrite=overwrite,
        append=append,
        duplicates=duplicates,
    )
    clock = Clock()
    with contextlib.ExitStack() as stack:
        if executor is None:
            executor = stack.enter_context(open_executor())
        found = _look(request, executor)
        stack.callback(found.listing.close)
        if found.base is not None and config is None:  # an append: the store's parameters
            request = dataclasses.replace(request, config=found.base.attrs.config)
        plan = make_plan(request, found)
        target = output_of(plan, found)
        if found.base is not None and not plan.files:
            logger.info("Nothing to append: the %d files of %s are in the store already.",
                        plan.skipped, request.input)  # fmt: skip
            attrs = found.base.attrs
            assert attrs.counts is not None and attrs.stats is not None  # it is finished
            return RunReport(request.output, plan.action, attrs.counts, attrs.stats, (),
                             clock.laps, found.listing.skipped, executor.n_tasks,
                             dropped=request.duplicates == "drop",
                             skipped_existing=plan.skipped)  # fmt: skip
        owner = lock.Owner.new(plan.run_id or uuid.uuid4().hex)
        with lock.hold(request.output, owner, create=target.creates) as claim:
            outcome = Run(plan, target, claim, executor, progress, clock).carry_out()
        return _report(plan, found, target, outcome, executor, clock)


def _given(**options: Any) -> dict[str, Any]:
    return {name: value for name, value in options.items() if value is not None}


def _look(request: Request, executor: Executor) -> Found:
    """Everything the plan depends on, read without changing anything."""
    with interrupts.interruptible():  # a walk of a large tree: a signal stops it at once
        if request.files_from is not None:
            listing = read_manifest(request.files_from, request.input)
        else:
            listing = list_audio_files(request.input)
    source = _read_source(request.stats_from) if request.stats_from is not None else None
    return Found(
        listing=listing,
        output=opened.inspect(request.output),
        resources=executor.resources,
        input_key=_location_key(request.input),
        output_key=_location_key(request.output),
        source=source,
        base=_read_base(request.output) if request.append else None,
    )


def _read_base(url: str) -> Base:
    """The finished store an append adds to, as it stands."""
    if opened.inspect(url, written=False).kind in ("absent", "leftover"):
        raise StoreError(
            f"There is no store at {url!r} to append to: run preprocess without "
            "`append=True` to make one."
        )
    store = opened.ReadableStore(url)
    attrs = store.attrs
    names = [f.name for f in dataclasses.fields(FileValues)]
    return Base(
        attrs=attrs,
        sizes=store.sizes,
        chunk_length=store.chunk_length,
        paths=PathsOnDisk.of(itertools.chain.from_iterable(store.read_by_chunk("path"))),
        file_source=store.read("source"),
        source_keys=tuple(_location_key(s.input) for s in attrs.sources),
        files=FileValues.from_values({name: store.read(name) for name in names}),
    )


def _location_key(location: str) -> str:
    """A location resolved, so that two names of one folder compare equal."""
    if is_url(location):
        protocol, _, path = location.partition("://")
        return f"{protocol}://{os.path.normpath('/' + path)}"
    return os.path.realpath(location)


def _read_source(url: str) -> Source:
    store = opened.ReadableStore(url)
    record = store.attrs.stats
    assert record is not None  # a complete store's statistics are checked on opening
    values = record.values
    if record.source is None:  # its own statistics: its first run's histogram is theirs
        pixels = dataclasses.replace(values.pixels, histogram=store.histogram(slice(0, 1)))
        values = dataclasses.replace(values, pixels=pixels)
    taken_from = record.source.store if record.source else None
    return Source(url, store.attrs.run_id, store.attrs.config, values, record.used, taken_from)


def _report(
    plan: Plan, found: Found, output: Output, outcome: Outcome, executor: Executor, clock: Clock
) -> RunReport:
    """What a run or append did, for the person who started it."""
    counts, record = outcome.attrs.counts, outcome.attrs.stats
    assert counts is not None and record is not None  # a finished store's
    analysed, paths = outcome.analysed, output.added.paths
    duplicate_of = analysed.files.duplicate_of
    return RunReport(
        output=plan.request.output,
        action=plan.action,
        counts=counts,
        stats=record,
        failures=analysed.failures(paths),
        seconds=clock.laps,
        skipped=found.listing.skipped,
        n_tasks=executor.n_tasks,
        quiet=analysed.quiet(paths, analysed.dropped),
        duplicates=output.added.groups(output.base, duplicate_of),
        dropped=plan.request.duplicates == "drop",
        added=outcome.source,
        skipped_existing=plan.skipped,
    )


__all__ = ["RunReport", "preprocess"]
