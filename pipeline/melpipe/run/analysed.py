"""What pass 1 found of a run's files and windows: the clips chosen (:class:`Chosen`), then
with their statistics (:class:`Analysed`); and what the run
adds to its store: its files' rows and its entry in the table of sources (:class:`Added`).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from melpipe.analysis.config import SpectrogramConfig
from melpipe.analysis.pixels import Histogram, PixelStats
from melpipe.analysis.segments import Windows, choose_clips
from melpipe.analysis.stats import Extrema, Figures, GlobalStats, StatsName, StatsOptions
from melpipe.errors import StatisticsError
from melpipe.run.plan import Base, Found, Plan, Request
from melpipe.run.results import MAX_REPORTED_FAILURES, FileValues, WindowResults, WriteSummary
from melpipe.sources import duplicates
from melpipe.sources.discover import utf8_safe
from melpipe.store import lock, writer
from melpipe.store.schema import SourceRecord


@dataclass(frozen=True)
class Failure:
    """A file that gave no clip, and why."""

    file: int
    path: str
    error: str


@dataclass(frozen=True)
class Chosen:
    """The windows pass 1 chose as clips (rows of the run's windows, in store order), what
    pass 1 found of every window, and what each file held; before their statistics."""

    chosen: np.ndarray
    clip_files: np.ndarray  # the file of each clip
    results: WindowResults
    files: FileValues
    dropped: np.ndarray  # the files left without clips as duplicates (--duplicates drop)

    @property
    def decoded(self) -> np.ndarray:
        return self.files.decoded

    @classmethod
    def choose(
        cls,
        windows: Windows,
        results: WindowResults,
        files: FileValues,
        config: SpectrogramConfig,
        request: Request,
    ) -> Chosen:
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
        self, stats: GlobalStats | None, histogram: Histogram, used: StatsName
    ) -> Analysed:
        """These clips with the statistics that scale them, and their pixel histogram.

        Raises
        ------
        StatisticsError
            The statistics give no usable range for ``used``.
        """
        assert stats is not None  # given, or the clips' own (own_stats raises otherwise)
        stats.range(used)
        return self.known(stats, histogram)

    def known(self, stats: GlobalStats, histogram: Histogram) -> Analysed:
        """These clips with statistics known to scale them (a resumed run's, recorded)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(Chosen)}
        return Analysed(**fields, stats=stats, histogram=histogram)

    def clips_per_file(self, n_files: int) -> tuple[np.ndarray, np.ndarray]:
        """Each file's count of clips, and its first clip's row."""
        counts = np.bincount(self.clip_files, minlength=n_files).astype(np.int64)
        return counts, np.cumsum(counts) - counts

    def clip_values(
        self, windows: Windows, config: SpectrogramConfig, first_file: int = 0
    ) -> dict[str, Callable[[], np.ndarray]]:
        """How to make each clip array but ``images`` and ``clipped``, its files numbered
        from ``first_file``."""
        rows, results = self.chosen, self.results
        return {
            "file_index": lambda: windows.file[rows] + first_file,
            "start_sample": lambda: windows.start[rows],
            "start": lambda: windows.start[rows] / config.sample_rate,
            "clip_min": lambda: results.min[rows],
            "clip_max": lambda: results.max[rows],
            "level_db": lambda: results.level[rows],
            "audio_frames": lambda: results.frames[rows],
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


@dataclass(frozen=True)
class Analysed(Chosen):
    """What pass 1 found: the clips chosen, with the statistics that scale them and their
    pixels' histogram."""

    stats: GlobalStats
    histogram: Histogram

    def figures(self, band_levels: np.ndarray) -> dict[str, Figures]:
        """How each statistic spends the levels on the clips' pixels that hold audio:
        from the histogram (to one bin) for the four with one range, from the levels
        pass 2 counted for ``band-moments``. A statistic with no usable range has none."""
        figures: dict[str, Figures] = {}
        for name, scale in self.stats.ranges().items():
            try:
                scale.check(name)
                levels = band_levels if scale.per_band else self.histogram.levels(scale)
                figures[name] = Figures.of(levels, scale, self.stats.pixels.db_per_unit)
            except StatisticsError:
                continue
        return figures


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
        """What the run of ``plan`` adds: every file listed, or an append's new files
        after the store's rows."""
        if plan.action != "append":
            return cls(found.listing.files)
        assert found.base is not None
        sizes = found.base.sizes
        return cls(plan.files, sizes.files, sizes.clips, sizes.sources, plan.skipped)

    def values(
        self, analysed: Analysed, windows: Windows, config: SpectrogramConfig
    ) -> writer.Columns:
        """The rows of the arrays the client writes, as the store numbers them, each made
        as it is written (so that the client holds one beside what they come from)."""
        n = len(self.paths)
        made = writer.Columns({
            "path": lambda: self.paths,
            "n_clips": lambda: analysed.clips_per_file(n)[0],
            "first_clip": lambda: analysed.clips_per_file(n)[1] + self.first_clip,
            **analysed.clip_values(windows, config, self.first_file),
            "source": lambda: np.full(n, self.source, np.int64),
            "histogram": lambda: writer.histogram_values(analysed.histogram, config),
        })  # fmt: skip
        return made.with_values(analysed.files.values())

    def record(
        self,
        claim: lock.Claim,
        request: Request,
        analysed: Analysed,
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
            clips=len(analysed.chosen),
            skipped=self.skipped,
            duplicates=int(np.count_nonzero(analysed.files.duplicate_of >= 0)),
            dropped=int(np.count_nonzero(analysed.dropped)),
            clipped_low=summary.n_low,
            clipped_high=summary.n_high,
            pixels=summary.n_pixels,
            own=own,
        )

    def groups(self, base: Base | None, duplicate_of: np.ndarray) -> tuple[tuple[str, ...], ...]:
        """The groups of duplicates that these files join, by path, each with its first
        file (the store's, in an append)."""
        before = np.full(self.first_file, duplicates.NOT_A_DUPLICATE, np.int64)
        groups = duplicates.groups(np.concatenate([before, duplicate_of]))
        return tuple(tuple(utf8_safe(self.path(int(i), base)) for i in g) for g in groups)

    def path(self, row: int, base: Base | None) -> str:
        """The path of the store's file at ``row``: one of these, or the store's (in an
        append), read by row, since neither list is held whole in memory."""
        if row >= self.first_file:
            return self.paths[row - self.first_file]
        assert base is not None  # rows before first_file are the store's
        return base.paths[row]
