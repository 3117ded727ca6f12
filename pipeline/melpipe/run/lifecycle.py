"""One run of a plan, from owning OUTPUT to finishing it, read top to bottom in
:meth:`Run.carry_out`:

1. OUTPUT made ready (:meth:`Output.prepare <melpipe.run.outputs.Output.prepare>`), with
   the run's listing;
2. with ``--segments all``, a survey of the file headers, which lays out the windows
   (their run state made by :meth:`~melpipe.run.outputs.Output.lay_out`);
3. pass 1 over batches of windows: their levels and log-mel extrema (and the log-mels,
   kept for pass 2), reduced as a tree; then the duplicates, the choice of clips among
   the windows and their statistics, exactly; all of it recorded in OUTPUT;
4. pass 2 over batches of clips: images, written with the other clip arrays;
5. OUTPUT finished, in one write of its attributes.

What differs between a store of the run's own and an append is the output's
(:mod:`melpipe.run.outputs`); what each pass's task does is :mod:`melpipe.run.tasks`'s.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from melpipe.analysis.config import SpectrogramConfig
from melpipe.analysis.pixels import PixelStats
from melpipe.analysis.segments import Pieces, Windows
from melpipe.analysis.stats import GlobalStats
from melpipe.errors import StatisticsError
from melpipe.run import rereads
from melpipe.run.analysed import Analysed, Chosen
from melpipe.run.executors import Executor
from melpipe.run.outputs import Output
from melpipe.run.plan import Plan, plan_batches
from melpipe.run.results import FileRecords, FileValues, Headers, WindowResults, WriteSummary
from melpipe.run.stages import Progress, Stage, Stages
from melpipe.run.tasks import (
    AnalysisItem,
    ImagesItem,
    RecountItem,
    RunContext,
    SurveyItem,
    images_batch,
    pixels_batch,
    statistics_batch,
    survey_batch,
)
from melpipe.run.types import Work
from melpipe.sources.audio import resampled_length
from melpipe.sources.headers import FileInfo
from melpipe.store import lock, writer
from melpipe.store.schema import SourceRecord, StoreAttrs

logger = logging.getLogger(__name__)

SURVEY_BATCH = 256  # file headers read per task
READ_BACK = 1024  # what pass 1's tasks found, read back this many batches at a time


class Clock:
    """Wall time per step of a run, for the person who started it."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        """Add the time since the last lap to ``name``'s."""
        now = time.perf_counter()
        self.laps[name] = self.laps.get(name, 0.0) + now - self._last
        self._last = now


@dataclass(frozen=True)
class Outcome:
    """What a run leaves: OUTPUT's finished attributes, what pass 1 found, and the
    source this run added to the store's table."""

    attrs: StoreAttrs
    analysed: Analysed
    source: SourceRecord


class Run:
    """One run of a plan on one executor, while it owns OUTPUT (by ``claim``). All of its
    state is set here, once."""

    def __init__(
        self,
        plan: Plan,
        output: Output,
        claim: lock.Claim,
        executor: Executor,
        progress: Progress,
        clock: Clock,
    ) -> None:
        self.plan, self.output, self.claim = plan, output, claim
        self.request, self.config = plan.request, plan.request.config
        self.paths = output.added.paths
        self.executor, self.clock = executor, clock
        context = RunContext(self.request.input, self.config, claim, plan.scratch)
        self.stages = Stages(executor, context, progress)

    def carry_out(self) -> Outcome:
        """The steps of the run, in order (see the module's docstring)."""
        self.output.check_unchanged()
        first = self.config.segments == "first"  # one window or more per file
        self.executor.expect(self._work(len(self.paths), exact=first))
        attrs = self.output.prepare(self.claim)
        surveyed = None if first else self._survey()
        windows = layout(surveyed, len(self.paths), self.config)
        self.executor.expect(self._work(len(windows)))
        logger.info("%d audio files, %d windows to analyse in batches of up to %d.",
                    len(self.paths), len(windows), self.plan.batch_size)  # fmt: skip
        self.output.lay_out(self.claim, windows)
        self.clock.lap("startup")
        analysed = self.output.resumed(self.claim, windows)
        if analysed is not None:
            own = attrs.sources[0].own if attrs.sources else None
        else:
            analysed, own = self._statistics(windows, surveyed, attrs)
        summary = self._images(windows.with_peaks(analysed.files.peak), analysed)
        added = self.output.added
        source = added.record(self.claim, self.request, analysed, summary, own)
        done = self.output.complete(self.claim, attrs, analysed, summary, source)
        writer.finish(self.claim, done)
        return Outcome(done, analysed, source)

    def _work(self, windows: int, exact: bool = True) -> Work:
        return Work(windows, self.config.n_samples, exact, self.request.in_memory is not None)

    def _survey(self) -> Sequence[FileInfo]:
        """What the files' headers say, read as tasks: with ``--segments all``, what lays
        out their windows (with ``--segments first``, a window at each file's start needs
        no header)."""
        self.clock.lap("startup")
        groups = plan_batches(len(self.paths), SURVEY_BATCH)
        items = [SurveyItem(g) for g in groups]
        surveyed = self.stages(Stage("survey: file headers", survey_batch, items, Headers))
        self.clock.lap("survey")
        return surveyed.files

    def _statistics(
        self, windows: Windows, surveyed: Sequence[FileInfo] | None, attrs: StoreAttrs
    ) -> tuple[Analysed, GlobalStats | None]:
        """Pass 1, the duplicates, the choice of clips, and what the store must record
        whether the statistics can be computed or not; and the statistics of these clips
        alone."""
        plan = self.plan
        if self.config.peak_normalize is not None:
            windows = rereads.with_peaks(self.stages, windows, self.paths, self.request.input,
                                         plan.batch_size)  # fmt: skip
        results, files = self._pass_1(windows, surveyed)
        windows = windows.with_peaks(files.peak)  # as measured, for what decodes again
        self.clock.lap("statistics")
        files = rereads.find_duplicates(self.stages, files, self.output.added, self.output.base,
                                        self.request)  # fmt: skip
        self.clock.lap("duplicates")
        try:
            chosen = Chosen.choose(windows, results, files, self.config, self.request)
            pixels = self._pixels(windows, results, chosen.chosen)
            own = chosen.own_stats(pixels, plan.options, self.config.db_per_unit, plan.stats)
            analysed = chosen.with_stats(plan.stats or own, pixels.histogram, plan.used)
        except StatisticsError as exc:
            raise self.output.abort(self.claim, attrs, exc) from None
        self.output.record_pass_1(self.claim, attrs, windows, analysed, own)
        self.clock.lap("statistics")
        return analysed, own

    def _pass_1(
        self, windows: Windows, surveyed: Sequence[FileInfo] | None
    ) -> tuple[WindowResults, FileValues]:
        """Pass 1's tasks over every window, and what they found: per window, and per file.
        Its items and the files' records, by task, are dropped on return: the run keeps
        neither to its end."""
        items = [AnalysisItem(b, windows.pieces(np.arange(b.start, b.stop)))
                 for b in plan_batches(len(windows), self.plan.batch_size)]  # fmt: skip
        title = f"pass 1/{self.plan.n_passes}: statistics"
        pixels = self.stages(Stage(title, statistics_batch, items, PixelStats))
        results = self._found(len(items), pixels)
        records = results.files if results.files is not None else FileRecords.empty()
        n_files = len(self.paths)
        files = FileValues.of(n_files, surveyed, records, windows.peaks)
        results = dataclasses.replace(results, files=None)  # all in ``files`` now
        probe = rereads.probes(windows, results, n_files)
        return results, dataclasses.replace(files, probe=probe)

    def _found(self, n_batches: int, pixels: PixelStats) -> WindowResults:
        """What pass 1's tasks found, read back from the store in order, a slice of
        batches at a time, with the statistics of the pixels they counted."""
        parts = []
        for start in range(0, n_batches, READ_BACK):
            batches = range(start, min(start + READ_BACK, n_batches))
            parts += [WindowResults.from_bytes(found)
                      for found in writer.read_pass_1(self.claim, batches)]  # fmt: skip
        return WindowResults.joined(parts, pixels)

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
        part = self.stages(Stage(title, pixels_batch, items, PixelStats))
        return results.pixels.subtract(part) if rows is extra else part

    def _images(self, windows: Windows, analysed: Analysed) -> WriteSummary:
        """Pass 2 over the batches of clips not yet written, and the summary of all: a
        resumed run summarises the batches it wrote before again, without writing them.
        An append's batches continue the store's chunks: its first rewrites the store's
        last chunk whole, if that one is short."""
        plan, offset = self.plan, self.output.added.first_clip
        batches = plan_batches(len(analysed.chosen), plan.batch_size, offset)
        if plan.analysed:
            logger.info("%d of %d batches of clips are already written.", len(plan.written),
                        len(batches))  # fmt: skip
        items = []
        for b in batches:
            rows = analysed.chosen[b.start - offset : b.stop - offset]
            again = self._pieces(windows, rows)  # None where the scratch array holds them
            found = None if again is None else analysed.results.take(rows)
            items.append(ImagesItem(b, rows, analysed.results.frames[rows],
                                    b.index not in plan.written, again, found))  # fmt: skip
        stats = analysed.stats
        context = self.stages.with_context(scale=stats.range(plan.used),
                                           band_scale=stats.band_moments)  # fmt: skip
        title = f"pass {plan.n_passes}/{plan.n_passes}: images"
        summary = self.stages(Stage(title, images_batch, items, WriteSummary, context))
        self.clock.lap("images")
        return summary

    def _pieces(self, windows: Windows, rows: np.ndarray) -> Pieces | None:
        """What a task after pass 1 decodes again of windows at ``rows``: nothing, when the
        scratch array holds their log-mels."""
        return None if self.plan.scratch else windows.pieces(rows)


def layout(surveyed: Sequence[FileInfo] | None, n_files: int, config: SpectrogramConfig) -> Windows:
    """The windows of the files: the first of each (no header needed), or every window of
    each surveyed file's length as its header gives it."""
    if surveyed is None:
        return Windows.first_of_each(n_files)
    rate = config.sample_rate
    lengths = [resampled_length(r.frames, r.sample_rate, rate) if r.readable else None
               for r in surveyed]  # fmt: skip
    return Windows.layout(lengths, config)
