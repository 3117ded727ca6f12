"""What a run writes to, and how: a store of its own (made, or resumed), or an append to a
finished store. Both are one small protocol, :class:`Output`, that the run
(:mod:`melpipe.run.lifecycle`) calls at the same points:

- :meth:`~Output.prepare` once the run owns OUTPUT: the store made ready, with the run's
  listing, which its tasks read their files' paths from;
- :meth:`~Output.lay_out` once it knows its windows: their run state;
- :meth:`~Output.resumed`: what an earlier pass 1 found, if the run resumes after it;
- :meth:`~Output.record_pass_1` once the clips and their statistics are known;
- :meth:`~Output.complete`: the attributes that mark the store finished;
- :meth:`~Output.abort` when the clips give nothing to scale.

A store of its own is written in place and can resume; an append writes its rows after
the store's and commits them all at once, in :func:`melpipe.store.writer.finish`, so that
a reader sees the store as it was until then.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Sequence
from importlib.metadata import version
from typing import Protocol

from melpipe.analysis.config import SpectrogramConfig
from melpipe.analysis.segments import Windows
from melpipe.analysis.stats import Extrema, GlobalStats, StatsOptions, joined_summary
from melpipe.errors import StatisticsError, StoreError
from melpipe.run.analysed import Added, Analysed, Chosen
from melpipe.run.plan import Base, Found, Plan
from melpipe.run.results import FileValues, WindowResults, WriteSummary
from melpipe.sources.audio import libsndfile_version
from melpipe.store import lock, opened, writer
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


class Output(Protocol):
    """What differs between a run that makes a store and one that appends to a store."""

    added: Added  # the files this run adds, and where their rows start
    creates: bool  # whether the lock makes OUTPUT itself (nothing was there)

    @property
    def base(self) -> Base | None:
        """The finished store an append adds to, as the plan read it; None for a store of
        the run's own."""

    def check_unchanged(self) -> None:
        """Refuse to go on if OUTPUT changed between looking and owning it."""

    def prepare(self, claim: lock.Claim) -> StoreAttrs:
        """Make OUTPUT ready for the passes, with the run's listing; its attributes as
        they then stand."""

    def lay_out(self, claim: lock.Claim, windows: Windows) -> None:
        """Make the run state of the run's windows, unless a resumed pass 1 holds it."""

    def resumed(self, claim: lock.Claim, windows: Windows) -> Analysed | None:
        """What an earlier pass 1 found, read back, if the run resumes after it."""

    def record_pass_1(
        self,
        claim: lock.Claim,
        attrs: StoreAttrs,
        windows: Windows,
        analysed: Analysed,
        own: GlobalStats | None,
    ) -> None:
        """Write what pass 1 found: the file, clip and window arrays, the statistics."""

    def complete(
        self,
        claim: lock.Claim,
        attrs: StoreAttrs,
        analysed: Analysed,
        summary: WriteSummary,
        source: SourceRecord,
    ) -> StoreAttrs:
        """The attributes that mark OUTPUT finished, with this run's source added."""

    def abort(self, claim: lock.Claim, attrs: StoreAttrs, exc: StatisticsError) -> StatisticsError:
        """Leave OUTPUT as a run that gave nothing to scale must, and the error to raise."""


def output_of(plan: Plan, found: Found) -> Output:
    """The output the plan's action writes to."""
    if plan.action == "append":
        return Append(plan, found)
    return NewStore(plan, found)


class NewStore:
    """A store of the run's own: created, replacing one melpipe wrote, or resumed."""

    def __init__(self, plan: Plan, found: Found) -> None:
        self.plan, self.found = plan, found
        self.added = Added.of(plan, found)
        self.base: Base | None = None
        self.creates = plan.action == "create"

    def check_unchanged(self) -> None:
        if not self.creates:  # else the lock made OUTPUT itself, exclusively
            _check_unchanged(self.plan, self.found)

    def prepare(self, claim: lock.Claim) -> StoreAttrs:
        """A resumed store's attributes as recorded; else the store made anew."""
        plan, request = self.plan, self.plan.request
        if plan.action == "resume":
            logger.info("Resuming the unfinished run in %s%s.", request.output,
                        " (pass 1 is done)" if plan.analysed else ", from pass 1")  # fmt: skip
            writer.write_listing(claim, self.added.paths)  # the same files, by the plan
            return StoreAttrs.from_dict(self.found.output.attrs or {})
        created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        attrs = StoreAttrs(status="incomplete", run_id=claim.run_id, created=created,
                           input=request.input, config=request.config, plan=plan.identity,
                           versions=_versions(), skipped=self.found.listing.skipped)  # fmt: skip
        writer.clear(claim)  # what melpipe wrote there before, and only that
        sizes = Sizes(clips=0, files=len(self.found.listing.files))
        writer.create(claim, attrs, sizes=sizes, batch_size=plan.batch_size)
        writer.write_listing(claim, self.added.paths)
        return attrs

    def lay_out(self, claim: lock.Claim, windows: Windows) -> None:
        if not self.plan.analysed:  # else pass 1's run state is there to resume from
            writer.create_windows(claim, len(windows), self.plan.batch_size, self.plan.scratch)

    def resumed(self, claim: lock.Claim, windows: Windows) -> Analysed | None:
        if not self.plan.analysed:
            return None
        plan, config = self.plan, self.plan.request.config
        names = [a.name for a in arrays_of(Step.CHOSEN) if a.rows != "clip"]
        state = writer.read_chosen(claim, names)
        results = WindowResults.from_values(state)
        if len(results.ok) != len(windows):
            raise StoreError(
                f"Output {plan.request.output!r} was analysed as {len(results.ok)} "
                f"windows, but the input now gives {len(windows)}: it changed. Run again "
                "with `overwrite=True`."
            )
        assert plan.stats is not None  # recorded by the pass 1 of a resumable store
        chosen = Chosen.choose(windows, results, FileValues.from_values(state), config,
                               plan.request)  # fmt: skip
        return chosen.known(plan.stats, writer.histogram_from(state["histogram"], config))

    def record_pass_1(
        self,
        claim: lock.Claim,
        attrs: StoreAttrs,
        windows: Windows,
        analysed: Analysed,
        own: GlobalStats | None,
    ) -> None:
        """The clip arrays made, the file and window arrays and the histogram written
        whole, then the statistics in the attributes, which mark pass 1 done (a store can
        resume after it)."""
        plan = self.plan
        values = self.added.values(analysed, windows, plan.request.config)
        writer.create_clips(claim, len(analysed.chosen), plan.batch_size)
        windows_found = analysed.results.window_values()
        writer.write_chosen(claim, values.with_values(windows_found))
        stats = StatsRecord(analysed.stats, plan.used)
        # Its own statistics now, for a run resumed after pass 1 (with --stats-from, they
        # are not the store's, and the run keeps nothing else they could come from).
        begun = self.added.record(claim, plan.request, analysed, WriteSummary.empty(), own)
        writer.put_attrs(claim, dataclasses.replace(attrs, stats=stats, sources=(begun,)))

    def complete(
        self,
        claim: lock.Claim,
        attrs: StoreAttrs,
        analysed: Analysed,
        summary: WriteSummary,
        source: SourceRecord,
    ) -> StoreAttrs:
        """Its one source, the counts, and the statistics with the clipped fraction and
        how each statistic spends the levels."""
        plan = self.plan
        clipped = source.clipped_low + source.clipped_high
        counts = Counts(source.files, int(analysed.decoded.sum()), source.clips)
        taken = StatsSource(plan.source.url, plan.source.run_id) if plan.source else None
        record = StatsRecord(analysed.stats, plan.used, taken,
                             clipped / source.pixels if source.pixels else 0.0,
                             analysed.figures(summary.band_levels))  # fmt: skip
        return dataclasses.replace(attrs, status="complete", stats=record, counts=counts,
                                   sources=(source,), grown=None)  # fmt: skip

    def abort(self, claim: lock.Claim, attrs: StoreAttrs, exc: StatisticsError) -> StatisticsError:
        """The store marked failed (its run state dropped)."""
        writer.finish(claim, dataclasses.replace(attrs, status="failed", failure=str(exc)))
        return StatisticsError(f"{exc} The store {self.plan.request.output!r} is marked failed.")


class Append:
    """An append to a finished store: its rows after the store's, its statistics those of
    the store, frozen, and every clip's computed beside them."""

    def __init__(self, plan: Plan, found: Found) -> None:
        assert found.base is not None  # the plan of an append read its store
        self.plan, self.found = plan, found
        self.base: Base = found.base
        self.added = Added.of(plan, found)
        self.creates = False

    def check_unchanged(self) -> None:
        _check_unchanged(self.plan, self.found)

    def prepare(self, claim: lock.Claim) -> StoreAttrs:
        """The store's run state made anew; nothing a reader sees changes."""
        plan, request = self.plan, self.plan.request
        logger.info("Appending %d files of %s to %s, after its %d clips%s.",
                    len(plan.files), request.input, request.output, self.base.sizes.clips,
                    f" ({plan.skipped} files of this input are there already)"
                    if plan.skipped else "")  # fmt: skip
        writer.begin_append(claim, self.base.sizes)
        writer.write_listing(claim, self.added.paths)
        return self.base.attrs

    def lay_out(self, claim: lock.Claim, windows: Windows) -> None:
        writer.create_windows(claim, len(windows), self.base.chunk_length, self.plan.scratch)

    def resumed(self, claim: lock.Claim, windows: Windows) -> Analysed | None:
        return None  # an append that stopped is run again from its start

    def record_pass_1(
        self,
        claim: lock.Claim,
        attrs: StoreAttrs,
        windows: Windows,
        analysed: Analysed,
        own: GlobalStats | None,
    ) -> None:
        """The store's arrays grown, and this append's rows written after the store's;
        readers see none of it until :func:`melpipe.store.writer.finish`."""
        added = self.added
        values = added.values(analysed, windows, self.plan.request.config)
        sizes = Sizes(added.first_clip + len(analysed.chosen),
                      added.first_file + len(added.paths), sources=added.source + 1)  # fmt: skip
        writer.grow(claim, sizes)
        writer.write_rows(claim, {"clip": added.first_clip, "file": added.first_file,
                                  "source": added.source}, values)  # fmt: skip

    def complete(
        self,
        claim: lock.Claim,
        attrs: StoreAttrs,
        analysed: Analysed,
        summary: WriteSummary,
        source: SourceRecord,
    ) -> StoreAttrs:
        """Its source added to the table, the counts and the clipped fraction over every
        source, the frozen statistics kept and every clip's computed beside them."""
        sources = (*attrs.sources, source)
        clipped = sum(s.clipped_low + s.clipped_high for s in sources)
        pixels = sum(s.pixels for s in sources)
        old = attrs.counts or Counts(0, 0, 0)
        counts = Counts(old.files + source.files, old.decoded + int(analysed.decoded.sum()),
                        old.clips + source.clips)  # fmt: skip
        assert attrs.stats is not None
        record = dataclasses.replace(attrs.stats, clipped_fraction=clipped / pixels)
        grown = _grown(claim, sources, record.values.options, self.plan.request.config)
        return dataclasses.replace(attrs, status="complete", stats=record, counts=counts,
                                   sources=sources, grown=grown)  # fmt: skip

    def abort(self, claim: lock.Claim, attrs: StoreAttrs, exc: StatisticsError) -> StatisticsError:
        """The store left as it was."""
        writer.end_append(claim)
        return StatisticsError(f"{exc} Nothing was appended to {self.plan.request.output!r}.")


def _check_unchanged(plan: Plan, found: Found) -> None:
    before, now = found.output, opened.inspect(plan.request.output)
    entries = {e for e in now.entries if e != LOCK_FILE}
    if (now.kind, now.attrs, entries) != (before.kind, before.attrs,
                                          set(before.entries) - {LOCK_FILE}):  # fmt: skip
        raise StoreError(
            f"Output {plan.request.output!r} changed while this run was getting ready; "
            "nothing was done. Run the command again."
        )


def _grown(
    claim: lock.Claim,
    sources: Sequence[SourceRecord],
    options: StatsOptions,
    config: SpectrogramConfig,
) -> GlobalStats | None:
    """The statistics of every clip of a store that grew: the extrema from every clip's,
    the histogram every source's added, the moments joined from every source's own; None
    where they give none."""
    state = writer.read_chosen(claim, ["clip_min", "clip_max", "histogram"])
    extrema = Extrema.from_clips(state["clip_min"], state["clip_max"])
    histogram = writer.histogram_from(state["histogram"], config)
    try:
        summary = joined_summary([s.own.pixels for s in sources if s.own], histogram)
        return GlobalStats.of(extrema, summary, options)
    except StatisticsError:
        return None


# Every package whose release can change a store's bits (docs/design.md), and Dask.
VERSIONED = ("melpipe", "numpy", "scipy", "librosa", "soxr", "soundfile", "zarr", "numcodecs",
             "dask")  # fmt: skip


def _versions() -> dict[str, str]:
    return {**{name: version(name) for name in VERSIONED}, "libsndfile": libsndfile_version()}
