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
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

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
from melpipe.segments import Windows, choose_clips
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
    Headers,
    WindowResults,
    WriteSummary,
    file_values,
    images_batch,
    pixels_batch,
    statistics_batch,
    survey_batch,
)

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


class _Run:
    """One run of a plan, on one executor, while it owns the store."""

    def __init__(
        self, plan: Plan, found: Found, executor: Executor, progress: Progress, clock: _Clock
    ) -> None:
        self.plan, self.found, self.executor = plan, found, executor
        self.progress, self.clock = progress, clock

    @property
    def request(self) -> Request:
        return self.plan.request

    @property
    def config(self) -> SpectrogramConfig:
        return self.plan.request.config

    @property
    def paths(self) -> tuple[str, ...]:
        return self.found.listing.files

    def carry_out(self) -> RunReport:
        plan = self.plan
        owner = lock.Owner.new(plan.run_id or uuid.uuid4().hex)
        with lock.hold(self.request.output, owner, create=plan.action == "create") as claim:
            self.claim = claim
            self._check_unchanged()
            windows, surveyed = self._windows()
            logger.info(
                "%d audio files, %d windows to analyse in batches of up to %d.",
                len(self.paths),
                len(windows),
                self.request.batch_size,
            )
            attrs = self._prepare(windows)
            self.clock.lap("startup")
            if plan.analysed:
                found = self._analysed(windows)
            else:
                found = self._statistics(windows, surveyed, attrs)
            summary = self._images(windows, found)
            clipped = summary.n_clipped / summary.n_pixels if summary.n_pixels else 0.0
            figures = found.figures(summary.band_levels)
            record = StatsRecord(found.statistics, plan.used, _source(plan), clipped, figures)
            counts = Counts(len(self.paths), int(found.decoded.sum()), len(found.chosen))
            final = dataclasses.replace(attrs, status="complete", stats=record, counts=counts)
            store.finish(claim, final)
        return RunReport(
            output=self.request.output,
            action=plan.action,
            counts=counts,
            stats=record,
            failures=found.failures(self.paths),
            seconds=self.clock.laps,
            skipped=self.found.listing.skipped,
            n_tasks=self.executor.n_tasks,
            quiet=found.quiet(self.paths),
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

    def _windows(self) -> tuple[Windows, Sequence[FileInfo] | None]:
        """The windows to analyse: one per file, or, with ``--segments all``, every
        window of each file's length as its header gives it (read as tasks)."""
        if self.config.segments == "first":
            return Windows.first_of_each(len(self.paths)), None
        groups = plan_batches(len(self.paths), SURVEY_BATCH)
        surveyed = self._pass(
            "survey: file headers",
            survey_batch,
            [[self.paths[g.start : g.stop] for g in groups]],
            {"root": self.request.input},
            Headers,
        ).files
        rate = self.config.sample_rate
        lengths = [
            resampled_length(r.frames, r.sample_rate, rate) if r.readable else None
            for r in surveyed
        ]
        return Windows.layout(lengths, self.config), surveyed

    def _prepare(self, windows: Windows) -> StoreAttrs:
        """The store's attributes, after creating it unless the run resumes it."""
        plan = self.plan
        if plan.action == "resume":
            attrs = StoreAttrs.from_dict(self.found.output.attrs or {})
            logger.info(
                "Resuming the unfinished run in %s%s.",
                self.request.output,
                " (pass 1 is done)" if plan.analysed else ", from pass 1",
            )
            return attrs
        attrs = StoreAttrs(
            status="incomplete",
            run_id=self.claim.run_id,
            created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            input=self.request.input,
            config=self.config,
            plan=plan.identity,
            versions=_versions(),
            skipped=self.found.listing.skipped,
        )
        store.clear(self.claim)  # what melpipe wrote there before, and only that
        store.create(
            self.claim,
            attrs,
            sizes=Sizes(clips=0, files=len(self.paths), windows=len(windows)),
            batch_size=self.request.batch_size,
            scratch=plan.scratch,
        )
        return attrs

    def _statistics(
        self, windows: Windows, surveyed: Sequence[FileInfo] | None, attrs: StoreAttrs
    ) -> Analysed:
        """Pass 1, the choice of clips, and what the store must record whether the
        statistics can be computed or not."""
        plan = self.plan
        batches = plan_batches(len(windows), self.request.batch_size)
        results = self._pass(
            f"pass 1/{plan.n_passes}: statistics",
            statistics_batch,
            [[windows.pieces(np.arange(b.start, b.stop), self.paths) for b in batches], batches],
            {
                "root": self.request.input,
                "config": self.config,
                "claim": self.claim,
                "scratch": plan.scratch,
            },
            WindowResults,
        )
        files = file_values(len(self.paths), surveyed, results.files)
        try:
            found = Analysed.choose(windows, results, files, self.config)
            pixels = self._pixels(windows, results, found.chosen)
            found = found.with_stats(plan.stats, pixels, plan.options, plan.used)
        except StatisticsError as exc:
            # Nothing can be scaled: drop the run state, and say so in the store.
            store.finish(self.claim, dataclasses.replace(attrs, status="failed", failure=str(exc)))
            raise StatisticsError(
                f"{exc} The store {self.request.output!r} is marked failed."
            ) from None
        files["path"] = self.paths
        files["n_clips"], files["first_clip"] = found.clips_per_file(len(self.paths))
        store.create_clips(self.claim, len(found.chosen), self.request.batch_size)
        store.write_chosen(
            self.claim,
            {
                **files,
                **results.window_values(),
                **found.clip_values(windows, self.config),
                "histogram": store.histogram_values(found.histogram, self.config),
            },
        )
        # Recorded last: a store with statistics has its pass 1 done, and can resume after it.
        store.put_attrs(
            self.claim, dataclasses.replace(attrs, stats=StatsRecord(found.statistics, plan.used))
        )
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
        scratch = self.plan.scratch
        part = self._pass(
            "statistics: windows counted but not chosen",
            pixels_batch,
            [
                [[] if scratch else windows.pieces(g, self.paths) for g in groups],
                groups,
                [results.take(g) for g in groups],
            ],
            {
                "root": self.request.input,
                "config": self.config,
                "claim": self.claim,
                "from_scratch": scratch,
            },
            PixelStats,
        )
        return results.pixels.subtract(part) if rows is extra else part

    def _analysed(self, windows: Windows) -> Analysed:
        """What a resumed store's pass 1 found, read back."""
        names = [a.name for a in arrays_of(Step.CHOSEN) if a.rows != "clip"]
        state = store.read_chosen(self.claim, names)
        results = WindowResults.from_values(state)
        if len(results.ok) != len(windows):
            raise StoreError(
                f"Output {self.request.output!r} was analysed as {len(results.ok)} "
                f"windows, but the input now gives {len(windows)}: it changed. Run again with "
                "`overwrite=True`."
            )
        assert self.plan.stats is not None  # recorded by the pass 1 of a resumable store
        found = Analysed.choose(windows, results, state, self.config)
        histogram = store.histogram_from(state["histogram"], self.config)
        return dataclasses.replace(found, stats=self.plan.stats, histogram=histogram)

    def _images(self, windows: Windows, found: Analysed) -> WriteSummary:
        """Pass 2 over the batches of clips not yet written, and the summary of all: a
        resumed run summarises the batches it wrote before again, without writing them."""
        plan = self.plan
        batches = plan_batches(len(found.chosen), self.request.batch_size)
        if plan.analysed:
            logger.info(
                "%d of %d batches of clips are already written.", len(plan.written), len(batches)
            )
        rows = [found.chosen[b.start : b.stop] for b in batches]
        summary = self._pass(
            f"pass {plan.n_passes}/{plan.n_passes}: images",
            images_batch,
            [
                [[] if plan.scratch else windows.pieces(r, self.paths) for r in rows],
                batches,
                rows,
                [found.results.take(r) for r in rows],
                [b.index not in plan.written for b in batches],
            ],
            {
                "root": self.request.input,
                "config": self.config,
                "scale": found.statistics.range(plan.used),
                "band_scale": found.statistics.band_moments,
                "claim": self.claim,
                "from_scratch": plan.scratch,
            },
            WriteSummary,
        )
        self.clock.lap("images")
        return summary

    def _pass(
        self,
        description: str,
        fn: Callable[..., M],
        iterables: Sequence[Sequence[Any]],
        kwargs: dict[str, Any],
        kind: type[M],
    ) -> M:
        if not iterables[0]:  # a resumed run whose batches were all written
            return kind.empty()
        bar = self.progress(description, len(iterables[0]))
        try:
            return self.executor.map_reduce(fn, iterables, kwargs, kind, bar)
        finally:
            bar.close()


SURVEY_BATCH = 256  # file headers read per task


@dataclass(frozen=True)
class Analysed:
    """What pass 1 found: the windows that became clips (rows of the run's windows, in
    store order), their statistics and histogram, and what each file held."""

    chosen: np.ndarray
    clip_files: np.ndarray  # the file of each clip
    results: WindowResults
    files: dict[str, Any]
    stats: GlobalStats | None = None
    histogram: Histogram = dataclasses.field(default_factory=Histogram)

    @property
    def decoded(self) -> np.ndarray:
        return np.asarray(self.files["decoded"], dtype=bool)

    @property
    def statistics(self) -> GlobalStats:
        assert self.stats is not None, "known once the clips are chosen"
        return self.stats

    @classmethod
    def choose(
        cls,
        windows: Windows,
        results: WindowResults,
        files: dict[str, Any],
        config: SpectrogramConfig,
    ) -> Analysed:
        """Choose the clips.

        Raises
        ------
        StatisticsError
            No window became a clip.
        """
        decoded = np.asarray(files["decoded"], dtype=bool)
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
            stats = GlobalStats.compute(extrema, pixels, pixel_max, options)
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
                figures[name] = Figures.of(levels, scale)
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
        return tuple(Failure(int(i), utf8_safe(paths[i]), self.files["error"][i]) for i in failed)


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
