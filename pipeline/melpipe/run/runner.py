"""Carrying out a run plan: look, plan, take the store, run the passes, finish.

:func:`preprocess` reads what it needs to plan (the input listing, what is at OUTPUT, the
``--stats-from`` store), lets :func:`melpipe.run.plan.make_plan` decide, then owns OUTPUT
through :mod:`melpipe.store.lock` while it runs the passes on an executor from
:mod:`melpipe.run.executors`:

- with ``--segments all``, a survey of the file headers, which lays out the windows;
- pass 1 over batches of windows: their levels, log-mel extrema (and log-mels, kept for
  pass 2), whose results come back through the executor's tree reduction. Then the clips
  are chosen among the windows (:func:`melpipe.analysis.segments.choose_clips`, which may need
  every window of a file) and their statistics computed exactly;
- pass 2 over batches of clips: images, written with the other clip arrays.

Every decision about the store is the plan's; this module does what it says, in order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, TypeVar

import numpy as np

from melpipe import interrupts
from melpipe.analysis.config import SpectrogramConfig
from melpipe.analysis.segments import Piece, Windows, choose_clips
from melpipe.analysis.stats import (
    Extrema,
    Figures,
    GlobalStats,
    Histogram,
    M,
    PixelStats,
    StatsName,
    StatsOptions,
    joined_summary,
)
from melpipe.errors import StatisticsError, StoreError
from melpipe.run.executors import Executor, ProgressBar, open_executor
from melpipe.run.plan import (
    Base,
    Duplicates,
    Found,
    Plan,
    Request,
    Source,
    make_plan,
    plan_batches,
)
from melpipe.run.tasks import (
    MAX_REPORTED_FAILURES,
    AnalysisItem,
    FileValues,
    Headers,
    ImagesItem,
    RecountItem,
    RunContext,
    SurveyItem,
    WholeFile,
    WholeFiles,
    WholeItem,
    WindowResults,
    WriteSummary,
    images_batch,
    pixels_batch,
    statistics_batch,
    survey_batch,
    whole_batch,
)
from melpipe.run.types import Work
from melpipe.sources import duplicates
from melpipe.sources.audio import resampled_length
from melpipe.sources.discover import SkippedFolder, is_url, join, list_audio_files, utf8_safe
from melpipe.sources.headers import FileInfo
from melpipe.store import lock
from melpipe.store import zarrstore as store
from melpipe.store.schema import (
    LOCK_FILE,
    Counts,
    Sizes,
    SourceRecord,
    StatsRecord,
    StatsSource,
    Step,
    StoreAttrs,
    arrays_of,
)

logger = logging.getLogger(__name__)

Item = TypeVar("Item")  # a pass's item
Progress = Callable[[str, int], ProgressBar]


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _no_progress(description: str, total: int) -> ProgressBar:
    return _NoBar()


@dataclass(frozen=True)
class Failure:
    """A file that gave no clip, and why."""

    file: int
    path: str
    error: str


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
    progress: Progress = _no_progress,
) -> RunReport:
    """Turn the audio files under ``input_dir`` into a finished store at ``output``.

    Parameters
    ----------
    config : optional
        The analysis and segment parameters; default ``SpectrogramConfig()``, or, with
        ``append``, the store's (one given must equal it).
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
        stats=stats,
        stats_from=None if stats_from is None else os.fspath(stats_from),
        options=_given(percentiles=percentiles, top_db=top_db, clip_std=clip_std),
        batch_size=batch_size,
        scratch=scratch,
        overwrite=overwrite,
        append=append,
        duplicates=duplicates,
    )
    clock = _Clock()
    with contextlib.ExitStack() as stack:
        if executor is None:
            executor = stack.enter_context(open_executor())
        found = _look(request, executor)
        if found.base is not None and config is None:  # an append: the store's parameters
            request = dataclasses.replace(request, config=found.base.attrs.config)
        plan = make_plan(request, found)
        return _Run(plan, found, executor, progress, clock).carry_out()


def _given(**options: Any) -> dict[str, Any]:
    return {name: value for name, value in options.items() if value is not None}


def _look(request: Request, executor: Executor) -> Found:
    """Everything the plan depends on, read without changing anything."""
    with interrupts.interruptible():  # a walk of a large tree: a signal stops it at once
        listing = list_audio_files(request.input)
    source = _read_source(request.stats_from) if request.stats_from is not None else None
    return Found(
        listing=listing,
        output=store.inspect(request.output),
        resources=executor.resources,
        input_key=_location_key(request.input),
        output_key=_location_key(request.output),
        source=source,
        base=_read_base(request.output) if request.append else None,
    )


def _read_base(url: str) -> Base:
    """The finished store an append adds to, as it stands."""
    if store.inspect(url, written=False).kind in ("absent", "leftover"):
        raise StoreError(
            f"There is no store at {url!r} to append to: run preprocess without "
            "`append=True` to make one."
        )
    opened = store.ReadableStore(url)
    attrs = opened.attrs
    names = [f.name for f in dataclasses.fields(FileValues)]
    return Base(
        attrs=attrs,
        sizes=opened.sizes,
        chunk_length=opened.chunk_length,
        paths=opened.read("path").tolist(),
        file_source=opened.read("source").tolist(),
        source_keys=tuple(_location_key(s.input) for s in attrs.sources),
        files=FileValues.from_values({name: opened.read(name) for name in names}),
    )


def _location_key(location: str) -> str:
    """A location resolved, so that two names of one folder compare equal."""
    if is_url(location):
        protocol, _, path = location.partition("://")
        return f"{protocol}://{os.path.normpath('/' + path)}"
    return os.path.realpath(location)


def _read_source(url: str) -> Source:
    opened = store.ReadableStore(url)
    record = opened.attrs.stats
    assert record is not None  # a complete store's statistics are checked on opening
    values = record.values
    if record.source is None:  # its own statistics: its first run's histogram is theirs
        pixels = dataclasses.replace(values.pixels, histogram=opened.histogram(slice(0, 1)))
        values = dataclasses.replace(values, pixels=pixels)
    taken_from = record.source.store if record.source else None
    return Source(url, opened.attrs.run_id, opened.attrs.config, values, record.used, taken_from)


def _layout(
    surveyed: Sequence[FileInfo] | None, n_files: int, config: SpectrogramConfig
) -> Windows:
    """The windows of the files: the first of each (no header needed), or every window of
    each surveyed file's length as its header gives it."""
    if surveyed is None:
        return Windows.first_of_each(n_files)
    rate = config.sample_rate
    lengths = [resampled_length(r.frames, r.sample_rate, rate) if r.readable else None
               for r in surveyed]  # fmt: skip
    return Windows.layout(lengths, config)


def _split(windows: Windows, batch_size: int) -> np.ndarray:
    """The files whose windows fall in more than one batch of pass 1, ascending: their
    peak must be known before any of their windows is analysed."""
    if not len(windows):
        return np.empty(0, np.int64)
    batch = np.arange(len(windows)) // batch_size
    first = windows.first_rows()
    last = np.append(first[1:], len(windows)) - 1
    return windows.file[first][batch[first] != batch[last]]


@dataclass(frozen=True, eq=False)
class Added:
    """What one run or append adds to a store: its files, and where its rows start (its
    files', its clips' and its entry's in the table of sources)."""

    paths: Sequence[str]
    first_file: int = 0
    first_clip: int = 0
    source: int = 0
    skipped: int = 0  # the input's files the store held already

    @classmethod
    def of(cls, plan: Plan, found: Found) -> Added:
        if plan.action != "append":
            return cls(found.listing.files)
        assert found.base is not None
        sizes = found.base.sizes
        return cls(plan.files, sizes.files, sizes.clips, sizes.sources, plan.skipped)

    def values(self, found: Analysed, windows: Windows, config: SpectrogramConfig) -> dict:
        """The rows of the arrays the client writes, as the store numbers them."""
        n_clips, first_clip = found.clips_per_file(len(self.paths))
        clips = found.clip_values(windows, config)
        clips["file_index"] = clips["file_index"] + self.first_file
        return {
            **found.files.values(), "path": self.paths, "n_clips": n_clips,
            "first_clip": first_clip + self.first_clip, **clips,
            "source": np.full(len(self.paths), self.source, np.int64),
            "histogram": store.histogram_values(found.histogram, config),
        }  # fmt: skip

    def record(
        self,
        claim: lock.Claim,
        request: Request,
        found: Analysed,
        summary: WriteSummary,
        own: GlobalStats | None,
    ) -> SourceRecord:
        """This run's or append's entry in the store's table of sources."""
        created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        return SourceRecord(
            action="append" if request.append else "run",
            run_id=claim.run_id,
            created=created,
            input=request.input,
            first_file=self.first_file,
            files=len(self.paths),
            first_clip=self.first_clip,
            clips=len(found.chosen),
            skipped=self.skipped,
            duplicates=int(np.count_nonzero(found.files.duplicate_of >= 0)),
            dropped=int(np.count_nonzero(found.dropped)),
            clipped_low=summary.n_low,
            clipped_high=summary.n_high,
            pixels=summary.n_pixels,
            own=own,
        )

    def groups(self, base: Base | None, duplicate_of: np.ndarray) -> tuple[tuple[str, ...], ...]:
        """The groups of duplicates that these files join, by path, each with its first
        file (the store's, in an append)."""
        names = [*(base.paths if base else ()), *self.paths]
        before = np.full(self.first_file, duplicates.NOT_A_DUPLICATE, np.int64)
        found = duplicates.groups(np.concatenate([before, duplicate_of]))
        return tuple(tuple(utf8_safe(names[i]) for i in g) for g in found)


class _Run:
    """One run of a plan, on one executor, while it owns the store: a run of its own, or
    an append to a finished store (``plan.action == "append"``), which adds its files'
    rows after the store's and commits them all at once, in :func:`store.finish`."""

    def __init__(
        self, plan: Plan, found: Found, executor: Executor, progress: Progress, clock: _Clock
    ) -> None:
        self.plan, self.found, self.executor = plan, found, executor
        self.progress, self.clock = progress, clock
        self.request, self.config = plan.request, plan.request.config
        self.base = found.base if plan.action == "append" else None
        self.added = Added.of(plan, found)
        self.paths = self.added.paths

    def carry_out(self) -> RunReport:
        plan, request = self.plan, self.request
        if self.base and not self.paths:
            logger.info("Nothing to append: the %d files of %s are in the store already.",
                        plan.skipped, request.input)  # fmt: skip
            attrs = self.base.attrs
            return _report(self, attrs.counts, attrs.stats, None, None)
        owner = lock.Owner.new(plan.run_id or uuid.uuid4().hex)
        with lock.hold(request.output, owner, create=plan.action == "create") as claim:
            self.run = RunContext(request.input, self.config, claim, plan.scratch)
            _check_unchanged(plan, self.found)
            first = self.config.segments == "first"  # one window or more per file
            self.executor.expect(self._work(len(self.paths), exact=first))
            surveyed = None if first else _survey(self.paths, self.clock, self._pass)
            windows = _layout(surveyed, len(self.paths), self.config)
            self.executor.expect(self._work(len(windows)))
            logger.info("%d audio files, %d windows to analyse in batches of up to %d.",
                        len(self.paths), len(windows), plan.batch_size)  # fmt: skip
            attrs = _prepare(self.plan, self.found, claim, windows)
            self.clock.lap("startup")
            if plan.analysed:
                found = _read_analysed(claim, plan, windows)
                own = attrs.sources[0].own if attrs.sources else None
            else:
                found, own = self._statistics(windows, surveyed, attrs)
            summary = self._images(windows.with_peaks(found.files.peak), found)
            source = self.added.record(claim, request, found, summary, own)
            done = _completed(claim, plan, attrs, found, summary, source)
            store.finish(claim, done)
        assert done.counts is not None and done.stats is not None
        return _report(self, done.counts, done.stats, found, source)

    def _work(self, windows: int, exact: bool = True) -> Work:
        return Work(windows, self.config.n_samples, exact, self.request.in_memory is not None)

    def _statistics(
        self, windows: Windows, surveyed: Sequence[FileInfo] | None, attrs: StoreAttrs
    ) -> tuple[Analysed, GlobalStats | None]:
        """Pass 1, the duplicates, the choice of clips, and what the store must record
        whether the statistics can be computed or not; and the statistics of these clips
        alone."""
        plan, claim = self.plan, self.run.claim
        if self.config.peak_normalize is not None:
            windows = _peaks(windows, self.paths, self.request.input, plan.batch_size, self._pass)
        batches = plan_batches(len(windows), plan.batch_size)
        items = [AnalysisItem(b, windows.pieces(np.arange(b.start, b.stop), self.paths))
                 for b in batches]  # fmt: skip
        title = f"pass 1/{plan.n_passes}: statistics"
        results = self._pass(title, statistics_batch, items, WindowResults)
        files = FileValues.of(len(self.paths), surveyed, results.files, windows.peaks)
        files = dataclasses.replace(files, probe=_probes(windows, results, len(self.paths)))
        windows = windows.with_peaks(files.peak)  # as measured, for what decodes again
        self.clock.lap("statistics")
        files = _find_duplicates(files, self.added, self.base, self.request, self._pass)
        self.clock.lap("duplicates")
        try:
            found = Analysed.choose(windows, results, files, self.config, self.request)
            pixels = self._pixels(windows, results, found.chosen)
            own = found.own_stats(pixels, plan.options, self.config.db_per_unit, plan.stats)
            found = found.with_stats(plan.stats or own, pixels, plan.used)
        except StatisticsError as exc:
            raise _nothing_to_scale(claim, plan, attrs, exc) from None
        _record_pass_1(claim, plan, attrs, windows, found, own, self.added)
        self.clock.lap("statistics")
        return found, own

    def _pixels(self, windows: Windows, results: WindowResults, chosen: np.ndarray) -> PixelStats:
        """The pixel statistics of the chosen clips.

        Pass 1's tasks counted every window that decoded and was loud enough, before the
        choice. Windows counted but not chosen (a file that failed in another task, or
        beyond ``--max-clips-per-file``) are taken out by subtracting their statistics,
        exactly, or, when they outnumber the clips, the clips' are computed instead.
        """
        counted = np.flatnonzero(results.counted(self.config))
        extra = np.setdiff1d(counted, chosen, assume_unique=True)
        if not len(extra):
            return results.pixels
        rows = extra if len(extra) <= len(chosen) else chosen
        # One task per batch of pass 1, so that each reads one chunk of the scratch array.
        groups = np.split(rows, np.flatnonzero(np.diff(rows // self.plan.batch_size)) + 1)
        items = [RecountItem(g, results.take(g), self._pieces(windows, g)) for g in groups]
        title = "statistics: windows counted but not chosen"
        part = self._pass(title, pixels_batch, items, PixelStats)
        return results.pixels.subtract(part) if rows is extra else part

    def _images(self, windows: Windows, found: Analysed) -> WriteSummary:
        """Pass 2 over the batches of clips not yet written, and the summary of all: a
        resumed run summarises the batches it wrote before again, without writing them.
        An append's batches continue the store's chunks: its first rewrites the store's
        last chunk whole, if that one is short."""
        plan, offset = self.plan, self.added.first_clip
        batches = plan_batches(len(found.chosen), self.plan.batch_size, offset)
        if plan.analysed:
            logger.info("%d of %d batches of clips are already written.", len(plan.written),
                        len(batches))  # fmt: skip
        items = []
        for b in batches:
            rows = found.chosen[b.start - offset : b.stop - offset]
            items.append(ImagesItem(b, rows, found.results.take(rows), b.index not in plan.written,
                                    self._pieces(windows, rows)))  # fmt: skip
        stats = found.statistics
        run = dataclasses.replace(self.run, scale=stats.range(plan.used),
                                  band_scale=stats.band_moments)  # fmt: skip
        title = f"pass {plan.n_passes}/{plan.n_passes}: images"
        summary = self._pass(title, images_batch, items, WriteSummary, run)
        self.clock.lap("images")
        return summary

    def _pieces(self, windows: Windows, rows: np.ndarray) -> Sequence[Piece]:
        """What a task after pass 1 decodes again of windows at ``rows``: nothing, when the
        scratch array holds their log-mels."""
        return () if self.plan.scratch else windows.pieces(rows, self.paths)

    def _pass(
        self,
        title: str,
        fn: Callable[[Item, RunContext], M],
        items: Sequence[Item],
        kind: type[M],
        run: RunContext | None = None,
    ) -> M:
        if not items:  # a resumed run whose batches were all written
            return kind.empty()
        bar = self.progress(title, len(items))
        try:
            return self.executor.map_reduce(fn, items, run or self.run, kind, bar)
        finally:
            bar.close()


Pass = Callable[..., Any]  # _Run._pass: a title, a task, its items, their kind


def _read_whole(
    run_pass: Pass,
    title: str,
    rows: Sequence[int],
    locations: Sequence[str],
    *,
    digest: np.ndarray | None = None,
    samples: np.ndarray | None = None,
    peak: bool = False,
) -> Mapping[int, WholeFile]:
    """Read the files at ``rows`` whole, as tasks of :data:`WHOLE_BATCH` files, for the
    hashes ``digest`` and ``samples`` mark (one bool per row) or their peaks."""
    n = len(rows)
    digest, samples = (np.zeros(n, bool) if m is None else np.asarray(m, bool)
                       for m in (digest, samples))  # fmt: skip
    items = []
    for g in plan_batches(n, WHOLE_BATCH):
        part = slice(g.start, g.stop)
        items.append(WholeItem(tuple(rows[part]), tuple(locations[part]),
                               tuple(digest[part].tolist()), tuple(samples[part].tolist()),
                               (peak,) * len(g)))  # fmt: skip
    return run_pass(title, whole_batch, items, WholeFiles).files


def _survey(paths: Sequence[str], clock: _Clock, run_pass: Pass) -> Sequence[FileInfo]:
    """What the files' headers say, read as tasks: with ``--segments all``, what lays
    out their windows (with ``--segments first``, a window at each file's start needs no
    header)."""
    clock.lap("startup")
    groups = plan_batches(len(paths), SURVEY_BATCH)
    items = [SurveyItem(tuple(paths[g.start : g.stop])) for g in groups]
    surveyed = run_pass("survey: file headers", survey_batch, items, Headers).files
    clock.lap("survey")
    return surveyed


def _peaks(
    windows: Windows, paths: Sequence[str], root: str, batch_size: int, run_pass: Pass
) -> Windows:
    """The windows with the peaks of the files whose windows span several tasks of pass
    1, read whole first; NaN for the others, whose task measures their peak as it
    decodes them, once (``peak_normalize``)."""
    split = _split(windows, batch_size).tolist()
    locations = [join(root, paths[f]) for f in split]
    read = _read_whole(run_pass, "peaks: files that span several tasks", split, locations,
                       peak=True)  # fmt: skip
    peaks = np.full(len(paths), np.nan)
    for row, found in read.items():
        peaks[row] = found.peak
    return windows.with_peaks(peaks)


def _find_duplicates(
    files: FileValues, added: Added, base: Base | None, request: Request, run_pass: Pass
) -> FileValues:
    """The files with their duplicates (``duplicate_of``) among them and the store's they
    are appended to: files that share a size or a PCM shape with another, in a group that
    holds one of these, are read whole for their hashes (:mod:`melpipe.sources.duplicates`);
    the others not at all."""
    both = [files] if base is None else [base.files, files]
    n_old = added.first_file
    size = np.concatenate([np.where(f.decoded, f.size, 0) for f in both])
    shape = [s for f in both for s in _shapes(f)]
    digests = np.concatenate([f.bytes_sha256 for f in both])
    md5s = np.concatenate([f.pcm_md5 for f in both])
    probe = np.concatenate([np.where(f.decoded, f.probe, 0) for f in both]).tolist()
    new = np.arange(len(size)) >= n_old
    want_bytes, want_pcm = duplicates.wanted(size.tolist(), shape, probe, digests, md5s, new)
    rows = np.flatnonzero(want_bytes | want_pcm).tolist()
    paths = [*(base.paths if base else ()), *added.paths]
    title = "duplicates: files that share a size or a length with another"
    locations = [_location(row, paths[row], added, base, request) for row in rows]
    read = _read_whole(run_pass, title, rows, locations, digest=want_bytes[rows],
                       samples=want_pcm[rows])  # fmt: skip
    for row, got in read.items():
        if row >= n_old:
            _check_unchanged_file(got, files.size[row - n_old], paths[row])
        digests[row] = got.bytes_sha256 or digests[row]
        md5s[row] = got.pcm_md5 or md5s[row]
    _warn_unread([paths[row] for row, got in read.items() if got.error])
    old = base.files.duplicate_of.tolist() if base else []
    return dataclasses.replace(
        files,
        bytes_sha256=digests[n_old:],
        pcm_md5=md5s[n_old:],
        duplicate_of=duplicates.assign(digests.tolist(), shape, md5s.tolist(), old),
    )


def _probes(windows: Windows, results: WindowResults, n_files: int) -> np.ndarray:
    """Each file's :func:`melpipe.sources.duplicates.probe_of` its first window, 0 where that
    did not decode."""
    first = windows.first_rows()
    first = first[results.ok[first]]
    probes = np.zeros(n_files, np.int64)
    probes[windows.file[first]] = duplicates.probe_of(
        results.level[first], results.min[first], results.max[first]
    )
    return probes


def _shapes(files: FileValues) -> list[str]:
    """Each file's PCM shape (:func:`melpipe.sources.duplicates.shape_of`); "" for one that did
    not decode, which is compared with nothing."""
    columns = (files.decoded, files.pcm_format, files.sample_rate, files.channels, files.frames)
    return [duplicates.shape_of(*v) if ok else ""
            for ok, *v in zip(*(c.tolist() for c in columns), strict=True)]  # fmt: skip


def _location(row: int, path: str, added: Added, base: Base | None, request: Request) -> str:
    """Where the file at ``row`` of the store is: under this run's input, or, for one the
    store held already, under the input of the run or append that added it."""
    if base is None or row >= added.first_file:
        return join(request.input, path)
    return join(base.attrs.sources[base.file_source[row]].input, path)


def _check_unchanged_file(got: WholeFile, size: int, path: str) -> None:
    """Refuse a file whose size changed since pass 1 read it: its clips would not be of
    what was compared."""
    if got.error or got.size == size:
        return
    raise StoreError(
        f"{utf8_safe(path)!r} changed after pass 1 read it (its size differs): the input "
        "changed during the run. Run again with `overwrite=True`."
    )


def _warn_unread(paths: Sequence[str]) -> None:
    if paths:
        logger.warning("%d files could not be read whole to compare them with files of the "
                       "same size or length, so a copy of them may go unnoticed: %s%s",
                       len(paths), ", ".join(map(utf8_safe, paths[:3])),
                       ", ..." if len(paths) > 3 else "")  # fmt: skip


def _grown(
    claim: lock.Claim,
    sources: Sequence[SourceRecord],
    options: StatsOptions,
    config: SpectrogramConfig,
) -> GlobalStats | None:
    """The statistics of every clip of a store that grew: the extrema from every clip's,
    the histogram every source's added, the moments joined from every source's own; None
    where they give none."""
    state = store.read_chosen(claim, ["clip_min", "clip_max", "histogram"])
    extrema = Extrema.from_clips(state["clip_min"], state["clip_max"])
    histogram = store.histogram_from(state["histogram"], config)
    try:
        summary = joined_summary([s.own.pixels for s in sources if s.own], histogram)
        return GlobalStats.of(extrema, summary, options)
    except StatisticsError:
        return None


def _record_pass_1(
    claim: lock.Claim,
    plan: Plan,
    attrs: StoreAttrs,
    windows: Windows,
    found: Analysed,
    own: GlobalStats | None,
    added: Added,
) -> None:
    """What pass 1 found, written to the store. A run makes the clip arrays and writes
    the file and window arrays and the histogram whole, then the statistics in the
    attributes, which mark pass 1 done (a store can resume after it). An append grows
    the store's arrays and writes its rows after the store's: readers see none of it
    until :func:`store.finish`."""
    values = added.values(found, windows, plan.request.config)
    if plan.action == "append":
        sizes = Sizes(added.first_clip + len(found.chosen), added.first_file + len(added.paths),
                      sources=added.source + 1)  # fmt: skip
        store.grow(claim, sizes)
        store.write_rows(claim, {"clip": added.first_clip, "file": added.first_file,
                                 "source": added.source}, values)  # fmt: skip
        return
    store.create_clips(claim, len(found.chosen), plan.batch_size)
    store.write_chosen(claim, {**values, **found.results.window_values()})
    stats = StatsRecord(found.statistics, plan.used)
    # Its own statistics now, for a run resumed after pass 1 (with --stats-from, they
    # are not the store's, and the run keeps nothing else they could come from).
    begun = added.record(claim, plan.request, found, WriteSummary.empty(), own)
    store.put_attrs(claim, dataclasses.replace(attrs, stats=stats, sources=(begun,)))


def _completed(
    claim: lock.Claim,
    plan: Plan,
    attrs: StoreAttrs,
    found: Analysed,
    summary: WriteSummary,
    source: SourceRecord,
) -> StoreAttrs:
    """The store's attributes once the run or append is done: its source added to the
    table, the counts, the clipped fraction over every source and, for an append, the
    frozen statistics kept and every clip's computed beside them."""
    appending = plan.action == "append"
    sources = (*attrs.sources, source) if appending else (source,)
    clipped = sum(s.clipped_low + s.clipped_high for s in sources)
    pixels = sum(s.pixels for s in sources)
    old = (attrs.counts if appending else None) or Counts(0, 0, 0)
    counts = Counts(old.files + source.files, old.decoded + int(found.decoded.sum()),
                    old.clips + source.clips)  # fmt: skip
    grown = None
    if appending:
        assert attrs.stats is not None
        record = dataclasses.replace(attrs.stats, clipped_fraction=clipped / pixels)
        grown = _grown(claim, sources, record.values.options, plan.request.config)
    else:
        record = StatsRecord(found.statistics, plan.used, _source(plan),
                             clipped / pixels if pixels else 0.0,
                             found.figures(summary.band_levels))  # fmt: skip
    return dataclasses.replace(attrs, status="complete", stats=record, counts=counts,
                               sources=sources, grown=grown)  # fmt: skip


def _report(
    run: _Run,
    counts: Counts | None,
    record: StatsRecord | None,
    found: Analysed | None,
    added: SourceRecord | None,
) -> RunReport:
    """What a run or append did, for the person who started it."""
    assert counts is not None and record is not None
    paths, done = run.paths, run.added
    return RunReport(
        output=run.request.output,
        action=run.plan.action,
        counts=counts,
        stats=record,
        failures=found.failures(paths) if found else (),
        seconds=run.clock.laps,
        skipped=run.found.listing.skipped,
        n_tasks=run.executor.n_tasks,
        quiet=found.quiet(paths, found.dropped) if found else (),
        duplicates=done.groups(run.base, found.files.duplicate_of) if found else (),
        dropped=run.request.duplicates == "drop",
        added=added,
        skipped_existing=run.plan.skipped,
    )


def _nothing_to_scale(
    claim: lock.Claim, plan: Plan, attrs: StoreAttrs, exc: StatisticsError
) -> StatisticsError:
    """The error of a run whose clips give nothing to scale, once the store says so: a
    run's is marked failed (its run state dropped), an append's is left as it was."""
    where = plan.request.output
    if plan.action == "append":
        store.end_append(claim)
        return StatisticsError(f"{exc} Nothing was appended to {where!r}.")
    store.finish(claim, dataclasses.replace(attrs, status="failed", failure=str(exc)))
    return StatisticsError(f"{exc} The store {where!r} is marked failed.")


def _prepare(plan: Plan, found: Found, claim: lock.Claim, windows: Windows) -> StoreAttrs:
    """The store's attributes, after creating it, unless the run resumes it, or appends
    to it: then its run state is made anew, and nothing a reader sees changes."""
    request = plan.request
    if plan.action == "append":
        assert found.base is not None
        logger.info("Appending %d files of %s to %s, after its %d clips%s.",
                    len(plan.files), request.input, request.output, found.base.sizes.clips,
                    f" ({plan.skipped} files of this input are there already)"
                    if plan.skipped else "")  # fmt: skip
        store.begin_append(claim, found.base.sizes, len(windows), plan.scratch)
        return found.base.attrs
    if plan.action == "resume":
        logger.info("Resuming the unfinished run in %s%s.", request.output,
                    " (pass 1 is done)" if plan.analysed else ", from pass 1")  # fmt: skip
        return StoreAttrs.from_dict(found.output.attrs or {})
    created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    attrs = StoreAttrs(status="incomplete", run_id=claim.run_id, created=created,
                       input=request.input, config=request.config, plan=plan.identity,
                       versions=_versions(), skipped=found.listing.skipped)  # fmt: skip
    store.clear(claim)  # what melpipe wrote there before, and only that
    sizes = Sizes(clips=0, files=len(found.listing.files), windows=len(windows))
    store.create(claim, attrs, sizes=sizes, batch_size=plan.batch_size,
                 scratch=plan.scratch)  # fmt: skip
    return attrs


def _check_unchanged(plan: Plan, found: Found) -> None:
    """Refuse to go on if OUTPUT changed between looking and owning it."""
    if plan.action == "create":
        return  # the lock made OUTPUT itself, exclusively
    before, now = found.output, store.inspect(plan.request.output)
    entries = {e for e in now.entries if e != LOCK_FILE}
    if (now.kind, now.attrs, entries) != (before.kind, before.attrs,
                                          set(before.entries) - {LOCK_FILE}):  # fmt: skip
        raise StoreError(
            f"Output {plan.request.output!r} changed while this run was getting ready; "
            "nothing was done. Run the command again."
        )


def _read_analysed(claim: lock.Claim, plan: Plan, windows: Windows) -> Analysed:
    """What a resumed store's pass 1 found, read back."""
    config = plan.request.config
    names = [a.name for a in arrays_of(Step.CHOSEN) if a.rows != "clip"]
    state = store.read_chosen(claim, names)
    results = WindowResults.from_values(state)
    if len(results.ok) != len(windows):
        raise StoreError(
            f"Output {plan.request.output!r} was analysed as {len(results.ok)} "
            f"windows, but the input now gives {len(windows)}: it changed. Run again with "
            "`overwrite=True`."
        )
    assert plan.stats is not None  # recorded by the pass 1 of a resumable store
    found = Analysed.choose(windows, results, FileValues.from_values(state), config,
                            plan.request)  # fmt: skip
    histogram = store.histogram_from(state["histogram"], config)
    return dataclasses.replace(found, stats=plan.stats, histogram=histogram)


SURVEY_BATCH = 256  # file headers read per task
WHOLE_BATCH = 16  # files read whole per task: a few MB at most, for most files


@dataclass(frozen=True)
class Analysed:
    """What pass 1 found: the windows that became clips (rows of the run's windows, in
    store order), their statistics and histogram, and what each file held."""

    chosen: np.ndarray
    clip_files: np.ndarray  # the file of each clip
    results: WindowResults
    files: FileValues
    dropped: np.ndarray  # the files left without clips as duplicates (--duplicates drop)
    stats: GlobalStats | None = None
    histogram: Histogram = dataclasses.field(default_factory=Histogram)

    @property
    def decoded(self) -> np.ndarray:
        return self.files.decoded

    @property
    def statistics(self) -> GlobalStats:
        assert self.stats is not None, "known once the clips are chosen"
        return self.stats

    @classmethod
    def choose(
        cls,
        windows: Windows,
        results: WindowResults,
        files: FileValues,
        config: SpectrogramConfig,
        request: Request,
    ) -> Analysed:
        """Choose the clips: of the files that decoded, and that ``request`` does not
        leave out as duplicates.

        Raises
        ------
        StatisticsError
            No window became a clip.
        """
        decoded = files.decoded
        dropped = (files.duplicate_of >= 0) & (request.duplicates == "drop")
        # A file that failed anywhere gives nothing, nor does a dropped one.
        ok = results.ok & (decoded & ~dropped)[windows.file]
        chosen = choose_clips(windows, ok, results.level, config)
        if not len(chosen):
            quiet = config.min_level_db is not None and decoded.any()
            raise StatisticsError(
                f"No window is as loud as `min_level_db={config.min_level_db:g}`, so there "
                "is no clip."
                if quiet
                else "No file could be decoded, so there is no clip."
            )
        return cls(chosen, windows.file[chosen], results, files, dropped)

    def own_stats(
        self,
        pixels: PixelStats,
        options: StatsOptions,
        db_per_unit: float,
        known: GlobalStats | None = None,
    ) -> GlobalStats | None:
        """The statistics of these clips alone, with their pixel statistics ``pixels``.

        Raises
        ------
        StatisticsError
            They give none, and none are ``known`` to scale the images instead (then
            the result is None).
        """
        rows = self.chosen
        extrema = Extrema.from_clips(self.results.min[rows], self.results.max[rows])
        try:
            pixel_max = float(np.nanmax(self.results.audio_max[rows]))
            return GlobalStats.compute(extrema, pixels, pixel_max, options, db_per_unit)
        except StatisticsError:
            if known is None:
                raise
            return None

    def with_stats(
        self, stats: GlobalStats | None, pixels: PixelStats, used: StatsName
    ) -> Analysed:
        """With the statistics that scale the clips, and the clips' pixel histogram.

        Raises
        ------
        StatisticsError
            The statistics give no usable range for ``used``.
        """
        assert stats is not None  # given, or the clips' own (own_stats raises otherwise)
        stats.range(used)
        return dataclasses.replace(self, stats=stats, histogram=pixels.histogram)

    def figures(self, band_levels: np.ndarray) -> dict[str, Figures]:
        """How each statistic spends the levels on the clips' pixels that hold audio:
        from the histogram (to one bin) for the four with one range, from the levels
        pass 2 counted for ``band-moments``. A statistic with no usable range has none."""
        figures: dict[str, Figures] = {}
        for name, scale in self.statistics.ranges().items():
            try:
                scale.check(name)
                levels = band_levels if scale.per_band else self.histogram.levels(scale)
                figures[name] = Figures.of(levels, scale, self.statistics.pixels.db_per_unit)
            except StatisticsError:
                continue
        return figures

    def clips_per_file(self, n_files: int) -> tuple[np.ndarray, np.ndarray]:
        """Each file's count of clips, and its first clip's row."""
        counts = np.bincount(self.clip_files, minlength=n_files).astype(np.int64)
        return counts, np.cumsum(counts) - counts

    def clip_values(self, windows: Windows, config: SpectrogramConfig) -> dict[str, Any]:
        """The clip arrays but ``images`` and ``clipped``."""
        rows = self.chosen
        start = windows.start[rows]
        return {
            "file_index": windows.file[rows],
            "start_sample": start,
            "start": start / config.sample_rate,
            "clip_min": self.results.min[rows],
            "clip_max": self.results.max[rows],
            "level_db": self.results.level[rows],
            "audio_frames": self.results.frames[rows],
        }

    def quiet(self, paths: Sequence[str], dropped: np.ndarray) -> tuple[str, ...]:
        """The files that decoded but gave no clip: every window was too quiet (those
        ``dropped`` as duplicates were not analysed)."""
        n_clips, _ = self.clips_per_file(len(paths))
        quiet = np.flatnonzero(self.decoded & (n_clips == 0) & ~dropped)
        return tuple(utf8_safe(paths[int(i)]) for i in quiet)

    def failures(self, paths: Sequence[str]) -> tuple[Failure, ...]:
        failed = np.flatnonzero(~self.decoded)[:MAX_REPORTED_FAILURES]
        return tuple(Failure(int(i), utf8_safe(paths[i]), str(self.files.error[i])) for i in failed)


def _source(plan: Plan) -> StatsSource | None:
    return StatsSource(plan.source.url, plan.source.run_id) if plan.source else None


class _Clock:
    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        """Add the time since the last lap to ``name``'s."""
        now = time.perf_counter()
        self.laps[name] = self.laps.get(name, 0.0) + now - self._last
        self._last = now


# Every package whose release can change a store's bits (docs/design.md), and Dask.
VERSIONED = ("melpipe", "numpy", "scipy", "librosa", "soxr", "soundfile", "zarr", "numcodecs",
             "dask")  # fmt: skip


def _versions() -> dict[str, str]:
    import soundfile

    found = {name: version(name) for name in VERSIONED}
    # The decoder itself: soundfile bundles libsndfile, or uses the system's.
    return {**found, "libsndfile": soundfile.__libsndfile_version__}


__all__ = ["RunReport", "preprocess"]
