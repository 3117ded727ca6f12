"""Carrying out a run plan: look, plan, take the store, run the passes, finish.

:func:`preprocess` reads what it needs to plan (the input listing, what is at OUTPUT, the
``--stats-from`` store), lets :func:`melpipe.plan.make_plan` decide, then owns OUTPUT
through :mod:`melpipe.lock` while it runs the passes on an executor from
:mod:`melpipe.executors`:

- with ``--segments all``, a survey of the file headers, which lays out the windows;
- pass 1 over batches of windows: their levels, log-mel extrema (and log-mels, kept for
  pass 2), whose results come back through the executor's tree reduction. Then the clips
  are chosen among the windows (:func:`melpipe.segments.choose_clips`, which may need
  every window of a file) and their statistics computed exactly;
- pass 2 over batches of clips: images, written with the other clip arrays.

Every decision about the store is the plan's; this module does what it says, in order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, TypeVar

import numpy as np

from melpipe import lock, store
from melpipe.audio import FileInfo, resampled_length
from melpipe.config import SpectrogramConfig
from melpipe.discover import SkippedFolder, is_url, list_audio_files, utf8_safe
from melpipe.errors import StatisticsError, StoreError
from melpipe.executors import Executor, ProgressBar, open_executor
from melpipe.plan import (
    DEFAULT_BATCH_SIZE,
    Found,
    Plan,
    Request,
    Source,
    Work,
    make_plan,
    plan_batches,
)
from melpipe.schema import (
    LOCK_FILE,
    Counts,
    Sizes,
    StatsRecord,
    StatsSource,
    Step,
    StoreAttrs,
    arrays_of,
)
from melpipe.segments import Piece, Windows, choose_clips
from melpipe.stats import (
    Extrema,
    Figures,
    GlobalStats,
    Histogram,
    M,
    PixelStats,
    StatsName,
    StatsOptions,
)
from melpipe.tasks import (
    MAX_REPORTED_FAILURES,
    AnalysisItem,
    FileValues,
    Headers,
    ImagesItem,
    RecountItem,
    RunContext,
    SurveyItem,
    WindowResults,
    WriteSummary,
    images_batch,
    pixels_batch,
    statistics_batch,
    survey_batch,
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


def preprocess(
    input_dir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    config: SpectrogramConfig,
    *,
    stats: StatsName | None = None,
    stats_from: str | os.PathLike[str] | None = None,
    percentiles: tuple[float, float] | None = None,
    top_db: float | None = None,
    clip_std: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    scratch: bool = True,
    overwrite: bool = False,
    executor: Executor | None = None,
    progress: Progress = _no_progress,
) -> RunReport:
    """Turn the audio files under ``input_dir`` into a finished store at ``output``.

    Parameters
    ----------
    stats, stats_from : optional
        The statistic that scales the images (all five are recorded), default "mean"; a
        finished store whose statistics scale them instead (the configs must agree),
        whose choice and options are then the defaults.
    percentiles, top_db, clip_std : optional
        The options of ``percentile``, ``top-db`` and ``band-moments``; default 0.1 and
        99.9, 80 dB and 3.
    scratch : bool
        Keep pass 1's log-mels in the store for pass 2 (until the end), not compute twice.
    overwrite : bool
        Replace a store that melpipe wrote at ``output``.
    executor, progress : optional
        Where the tasks run (:mod:`melpipe.executors`; default a local cluster), and
        ``progress(description, total)``, which returns a bar with ``update``, ``close``.

    Raises
    ------
    MelpipeError
        Before any work starts, for invalid parameters, no audio or an output in the way
        (see :func:`melpipe.plan.make_plan`); during the run, if another run takes the
        store over, or if the dataset gives no usable statistics.
    """
    request = Request(
        input=os.fspath(input_dir),
        output=os.fspath(output),
        config=config,
        stats=stats,
        stats_from=None if stats_from is None else os.fspath(stats_from),
        options=_given(percentiles=percentiles, top_db=top_db, clip_std=clip_std),
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


def _given(**options: Any) -> dict[str, Any]:
    return {name: value for name, value in options.items() if value is not None}


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
    record = opened.attrs.stats
    assert record is not None  # a complete store's statistics are checked on opening
    values = record.values
    if record.source is None:  # its own statistics: its histogram is theirs
        pixels = dataclasses.replace(values.pixels, histogram=opened.histogram())
        values = dataclasses.replace(values, pixels=pixels)
    taken_from = record.source.store if record.source else None
    return Source(url, opened.attrs.run_id, opened.attrs.config, values, record.used, taken_from)


def _layout(surveyed: Sequence[FileInfo], config: SpectrogramConfig) -> Windows:
    """The windows of the surveyed files (every window of each, or the first), with each
    file's peak where ``peak_normalize`` scales its samples."""
    if config.segments == "first":
        windows = Windows.first_of_each(len(surveyed))
    else:
        rate = config.sample_rate
        lengths = [resampled_length(r.frames, r.sample_rate, rate) if r.readable else None
                   for r in surveyed]  # fmt: skip
        windows = Windows.layout(lengths, config)
    if config.peak_normalize is None:
        return windows
    return windows.with_peaks(np.array([r.peak for r in surveyed], np.float64))


class _Run:
    """One run of a plan, on one executor, while it owns the store."""

    def __init__(
        self, plan: Plan, found: Found, executor: Executor, progress: Progress, clock: _Clock
    ) -> None:
        self.plan, self.found, self.executor = plan, found, executor
        self.progress, self.clock = progress, clock
        self.request, self.config = plan.request, plan.request.config
        self.paths = found.listing.files

    def carry_out(self) -> RunReport:
        plan, request = self.plan, self.request
        owner = lock.Owner.new(plan.run_id or uuid.uuid4().hex)
        with lock.hold(request.output, owner, create=plan.action == "create") as claim:
            self.run = RunContext(request.input, self.config, claim, plan.scratch)
            _check_unchanged(plan, self.found)
            windows, surveyed = self._windows()
            logger.info("%d audio files, %d windows to analyse in batches of up to %d.",
                        len(self.paths), len(windows), request.batch_size)  # fmt: skip
            attrs = _prepare(plan, self.found, claim, windows)
            self.clock.lap("startup")
            if plan.analysed:
                found = _read_analysed(claim, plan, windows)
            else:
                found = self._statistics(windows, surveyed, attrs)
            summary = self._images(windows, found)
            clipped = summary.n_clipped / summary.n_pixels if summary.n_pixels else 0.0
            figures = found.figures(summary.band_levels)
            record = StatsRecord(found.statistics, plan.used, _source(plan), clipped, figures)
            counts = Counts(len(self.paths), int(found.decoded.sum()), len(found.chosen))
            store.finish(claim, dataclasses.replace(attrs, status="complete", stats=record,
                                                    counts=counts))  # fmt: skip
        return RunReport(output=request.output, action=plan.action, counts=counts, stats=record,
                         failures=found.failures(self.paths), seconds=self.clock.laps,
                         skipped=self.found.listing.skipped, n_tasks=self.executor.n_tasks,
                         quiet=found.quiet(self.paths))  # fmt: skip

    def _windows(self) -> tuple[Windows, Sequence[FileInfo] | None]:
        """The windows to analyse: one per file, or, with ``--segments all``, every
        window of each file's length as its header gives it (read as tasks). The executor
        hears of them as soon as they are known (or, before the survey, their least)."""
        work = functools.partial(Work, samples_per_window=self.config.n_samples,
                                 in_memory=self.request.in_memory is not None)  # fmt: skip
        peaks = self.config.peak_normalize is not None
        if self.config.segments == "first" and not peaks:
            windows = Windows.first_of_each(len(self.paths))
            self.executor.expect(work(len(windows)))
            return windows, None
        self.executor.expect(work(len(self.paths), exact=False))  # a window or more each
        groups = plan_batches(len(self.paths), SURVEY_BATCH)
        items = [SurveyItem(self.paths[g.start : g.stop]) for g in groups]
        title = "survey: file headers" + (" and peaks" if peaks else "")
        surveyed = self._pass(title, survey_batch, items, Headers).files
        windows = _layout(surveyed, self.config)
        self.executor.expect(work(len(windows)))
        return windows, surveyed

    def _statistics(
        self, windows: Windows, surveyed: Sequence[FileInfo] | None, attrs: StoreAttrs
    ) -> Analysed:
        """Pass 1, the choice of clips, and what the store must record whether the
        statistics can be computed or not."""
        plan, claim = self.plan, self.run.claim
        batches = plan_batches(len(windows), self.request.batch_size)
        items = [AnalysisItem(b, windows.pieces(np.arange(b.start, b.stop), self.paths))
                 for b in batches]  # fmt: skip
        title = f"pass 1/{plan.n_passes}: statistics"
        results = self._pass(title, statistics_batch, items, WindowResults)
        files = FileValues.of(len(self.paths), surveyed, results.files)
        try:
            found = Analysed.choose(windows, results, files, self.config)
            pixels = self._pixels(windows, results, found.chosen)
            found = found.with_stats(plan.stats, pixels, plan.options, plan.used,
                                     self.config.db_per_unit)  # fmt: skip
        except StatisticsError as exc:
            # Nothing can be scaled: drop the run state, and say so in the store.
            store.finish(claim, dataclasses.replace(attrs, status="failed", failure=str(exc)))
            raise StatisticsError(
                f"{exc} The store {self.request.output!r} is marked failed."
            ) from None
        _record_pass_1(claim, plan, attrs, windows, self.paths, found)
        self.clock.lap("statistics")
        return found

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
        groups = np.split(rows, np.flatnonzero(np.diff(rows // self.request.batch_size)) + 1)
        items = [RecountItem(g, results.take(g), self._pieces(windows, g)) for g in groups]
        title = "statistics: windows counted but not chosen"
        part = self._pass(title, pixels_batch, items, PixelStats)
        return results.pixels.subtract(part) if rows is extra else part

    def _images(self, windows: Windows, found: Analysed) -> WriteSummary:
        """Pass 2 over the batches of clips not yet written, and the summary of all: a
        resumed run summarises the batches it wrote before again, without writing them."""
        plan = self.plan
        batches = plan_batches(len(found.chosen), self.request.batch_size)
        if plan.analysed:
            logger.info("%d of %d batches of clips are already written.", len(plan.written),
                        len(batches))  # fmt: skip
        items = []
        for b in batches:
            rows = found.chosen[b.start : b.stop]
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


def _prepare(plan: Plan, found: Found, claim: lock.Claim, windows: Windows) -> StoreAttrs:
    """The store's attributes, after creating it unless the run resumes it."""
    request = plan.request
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
    store.create(claim, attrs, sizes=sizes, batch_size=request.batch_size,
                 scratch=plan.scratch)  # fmt: skip
    return attrs


def _record_pass_1(
    claim: lock.Claim,
    plan: Plan,
    attrs: StoreAttrs,
    windows: Windows,
    paths: Sequence[str],
    found: Analysed,
) -> None:
    """What pass 1 found, written to the store: the clip arrays made, the file and window
    arrays and the histogram written, and last the statistics in the attributes, which
    mark pass 1 done (a store can resume after it)."""
    config, batch_size = plan.request.config, plan.request.batch_size
    store.create_clips(claim, len(found.chosen), batch_size)
    n_clips, first_clip = found.clips_per_file(len(paths))
    store.write_chosen(claim, {
        **found.files.values(), "path": paths, "n_clips": n_clips, "first_clip": first_clip,
        **found.results.window_values(), **found.clip_values(windows, config),
        "histogram": store.histogram_values(found.histogram, config),
    })  # fmt: skip
    stats = StatsRecord(found.statistics, plan.used)
    store.put_attrs(claim, dataclasses.replace(attrs, stats=stats))


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
    found = Analysed.choose(windows, results, FileValues.from_values(state), config)
    histogram = store.histogram_from(state["histogram"], config)
    return dataclasses.replace(found, stats=plan.stats, histogram=histogram)


SURVEY_BATCH = 256  # file headers read per task


@dataclass(frozen=True)
class Analysed:
    """What pass 1 found: the windows that became clips (rows of the run's windows, in
    store order), their statistics and histogram, and what each file held."""

    chosen: np.ndarray
    clip_files: np.ndarray  # the file of each clip
    results: WindowResults
    files: FileValues
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
    ) -> Analysed:
        """Choose the clips.

        Raises
        ------
        StatisticsError
            No window became a clip.
        """
        decoded = files.decoded
        ok = results.ok & decoded[windows.file]  # a file that failed anywhere gives nothing
        chosen = choose_clips(windows, ok, results.level, config)
        if not len(chosen):
            quiet = config.min_level_db is not None and decoded.any()
            raise StatisticsError(
                f"No window is as loud as `min_level_db={config.min_level_db:g}`, so there "
                "is no clip."
                if quiet
                else "No file could be decoded, so there is no clip."
            )
        return cls(chosen, windows.file[chosen], results, files)

    def with_stats(
        self,
        known: GlobalStats | None,
        pixels: PixelStats,
        options: StatsOptions,
        used: StatsName,
        db_per_unit: float,
    ) -> Analysed:
        """With the clips' pixel histogram, and their statistics unless ``known`` gives
        them already.

        Raises
        ------
        StatisticsError
            The statistics give no usable range for ``used``.
        """
        stats = known
        if stats is None:
            rows = self.chosen
            extrema = Extrema.from_clips(self.results.min[rows], self.results.max[rows])
            pixel_max = float(np.nanmax(self.results.audio_max[rows]))
            stats = GlobalStats.compute(extrema, pixels, pixel_max, options, db_per_unit)
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

    def quiet(self, paths: Sequence[str]) -> tuple[str, ...]:
        """The files that decoded but gave no clip: every window was too quiet."""
        n_clips, _ = self.clips_per_file(len(paths))
        quiet = np.flatnonzero(self.decoded & (n_clips == 0))
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
        now = time.perf_counter()
        self.laps[name] = now - self._last
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
