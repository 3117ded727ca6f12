"""What the commands print: a run's summary, a store's description, the statistics
table. Printing only: every figure comes from the library (:class:`RunReport`,
:class:`~melpipe.read.reader.SpectrogramStore`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import click

from melpipe import records
from melpipe.analysis.stats import Figures, GlobalStats, StatsName
from melpipe.store.schema import FORMAT_VERSION, SourceRecord, StoreAttrs

if TYPE_CHECKING:
    from melpipe.read.reader import SpectrogramStore
    from melpipe.run.runner import RunReport

SHOWN_FAILURES = 5


def echo_stats(
    stats: GlobalStats,
    used: StatsName,
    clipped_fraction: float | None,
    figures: Mapping[str, Figures] | None,
) -> None:
    """The statistics as a table, with how each spends the levels where ``figures`` are
    known."""
    click.echo(
        f"  {'statistic':<14} {'min':>9} {'max':>9}  {'dB/level':>8}  {'at min':>7}  "
        f"{'at max':>7}  {'levels for 99%':>14}"
    )
    for name, r in stats.ranges().items():
        lo, hi = (f"{'per band':>9}" if r.per_band else f"{v:9.3f}" for v in (r.min, r.max))
        mark = "*" if name == used else " "
        f = figures.get(name) if figures is not None else None
        shares = (
            f"{f.db_per_level:8.3f}  {f.at_min:7.2%}  {f.at_max:7.2%}  {f.levels_99:14d}"
            if f
            else "  no usable range"
            if figures is not None or not r.usable
            else f"{r.db_per_level(stats.pixels.db_per_unit):8.3f}"
        )
        click.echo(f"{mark} {name:<14} {lo} {hi}  {shares}")
    if used == "image-top-db":
        r = stats.scale("image-top-db")
        db = r.db_per_level(stats.pixels.db_per_unit)
        click.echo(f"* {used:<14} {r.min:9.3f} {r.max:9.3f}  {db:8.3f}"
                   "  (relative to each image's maximum)")  # fmt: skip
    options = stats.options
    click.echo(
        f"  (* scales the images; percentiles {options.percentiles[0]:g} and "
        f"{options.percentiles[1]:g}, top-db {options.top_db:g}, clip-std {options.clip_std:g}; "
        "shares and levels are of the pixels that hold audio)"
    )
    if clipped_fraction is not None:
        click.echo(f"  {clipped_fraction:.3%} of all pixels clipped by the scaling.")


def _echo_added(report: RunReport) -> None:
    counts, added = report.counts, report.added
    skipped = (f"; {report.skipped_existing} files of it were in the store already, left out"
               if report.skipped_existing else "")  # fmt: skip
    if added is None:
        click.echo(f"Nothing to append to {report.output}: every file of the input is in "
                   f"it already{skipped.partition(';')[0]}.")  # fmt: skip
        return
    click.echo(
        f"Appended {added.clips} clips from {added.files} files to {report.output}{skipped}. "
        f"It now holds {counts.clips} clips from {counts.files} files."
    )
    for line in source_lines(added, report.stats.used):
        click.echo(f"  {line}")


def source_lines(source: SourceRecord, used: StatsName) -> list[str]:
    """How one source's clips sit on the store's scale: the pixels clipped at each end,
    and the range their own statistics would give beside the store's."""
    lines = []
    if source.pixels:
        lines.append(
            f"{source.clipped_low / source.pixels:.3%} of its pixels fell below the scale, "
            f"{source.clipped_high / source.pixels:.3%} above it"
        )
    if source.own is not None and used != "image-top-db":
        own = source.own.scale(used)
        lines.append(f"its own {used!r} statistics: {own.describe()}")
    return lines


def _echo_duplicates(report: RunReport) -> None:
    if not report.duplicates:
        return
    n_files = sum(len(g) - 1 for g in report.duplicates)
    what = "left without clips" if report.dropped else "stored (--duplicates drop leaves them out)"
    click.echo(
        f"{n_files} files repeat the samples or bytes of an earlier one, in "
        f"{len(report.duplicates)} groups; all but the first of each were {what}:"
    )
    for group in report.duplicates[:SHOWN_FAILURES]:
        click.echo("  " + " = ".join(group))
    if len(report.duplicates) > SHOWN_FAILURES:
        click.echo(f"  ... and {len(report.duplicates) - SHOWN_FAILURES} more groups")


def echo_summary(report: RunReport, cluster_seconds: float) -> None:
    counts, record, added = report.counts, report.stats, report.added
    if report.action == "append":
        _echo_added(report)
    else:
        click.echo(
            f"Wrote {counts.clips} clips to {report.output}, from {counts.files} files: "
            f"{counts.decoded} decoded, {counts.failed} failed."
        )
        echo_stats(record.values, record.used, record.clipped_fraction, record.figures)
    if added is None:
        return
    _echo_duplicates(report)
    laps = {"executor": cluster_seconds, **report.seconds}
    click.echo("Seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in laps.items()) + ".")
    if report.n_tasks:
        click.echo(f"Dask tasks: {report.n_tasks}.")
    for folder in report.skipped:
        click.echo(f"Skipped folder {folder.path}: {folder.reason}")
    if report.failures:
        shown = report.failures[:SHOWN_FAILURES]
        click.echo(f"First {len(shown)} of {counts.failed} failures:")
        for failure in shown:
            click.echo(f"  {failure.path}: {failure.error}")
    if report.quiet:
        click.echo(
            f"{len(report.quiet)} files decoded but gave no clip, every window below "
            f"--min-level-db: {', '.join(report.quiet[:SHOWN_FAILURES])}"
            + (", ..." if len(report.quiet) > SHOWN_FAILURES else "")
        )


def echo_store(reader: SpectrogramStore, max_failures: int) -> None:
    """A store described: parameters, statistics, counts, failed files and size."""
    attrs, config = reader.attrs, reader.config
    failed = reader.failed_files
    click.echo(f"{reader.path}: melpipe store, format {FORMAT_VERSION}, complete")
    click.echo(f"  created {attrs.created} from {attrs.input}")
    click.echo(
        f"  clips {len(reader)} from {len(reader.file_paths)} files: "
        f"{len(reader.file_paths) - len(failed)} decoded, {len(failed)} failed"
    )
    click.echo(
        f"  audio {reader.decoded_hours:.3f} hours in "
        f"the files that decoded, of which the clips hold {reader.coverage:.1%}"
    )
    click.echo(
        f"  images uint8 {config.n_bands} x {config.n_frames} ({config.spectrum} bands x "
        f"frames, preset {config.preset}), "
        f"{reader.chunk_length} clips per chunk"
    )
    click.echo(f"  size on disk {reader.size_on_disk() / 2**20:.2f} MiB")
    click.echo("Parameters:")
    for key, value in records.to_dict(config).items():
        click.echo(f"  {key:<18} {value}")
    click.echo("Statistics of log(mel power + eps):")
    echo_stats(reader.stats, reader.used, reader.clipped_fraction, reader.figures)
    taken_from = attrs.stats.source if attrs.stats else None
    if taken_from:
        click.echo(f"  statistics taken from {taken_from.store}")
    _echo_sources(attrs, reader.used)
    for folder in attrs.skipped:
        click.echo(f"Skipped folder {folder.path}: {folder.reason}")
    quiet = reader.quiet_files
    if len(quiet):
        click.echo(f"Files that decoded but gave no clip (every window too quiet): {len(quiet)}")
        for i in quiet[:max_failures]:
            click.echo(f"  {reader.file_paths[i]}")
    if len(failed):
        click.echo(f"Failed files ({min(len(failed), max_failures)} of {len(failed)} shown):")
        for i in failed[:max_failures]:
            click.echo(f"  {reader.file_paths[i]}: {reader.file_errors[i]}")


def _echo_sources(attrs: StoreAttrs, used: StatsName) -> None:
    """The table of sources, and, once the store grew, the statistics of all its clips."""
    click.echo("Sources (the run that made the store, then each append):")
    for i, source in enumerate(attrs.sources):
        click.echo(
            f"  {i} {source.action:<6} {source.created} {source.input}: files "
            f"{_rows(source.first_file, source.files)}, clips "
            f"{_rows(source.first_clip, source.clips)}, run {source.run_id[:8]}"
        )
        notes = [f"{source.skipped} files of its input in the store already"] * bool(source.skipped)
        if source.duplicates:
            notes.append(f"{source.duplicates} duplicates ({source.dropped} left without clips)")
        for line in [*notes, *source_lines(source, used)]:
            click.echo(f"      {line}")
    if attrs.grown is not None:
        click.echo(
            "Statistics of every clip now (the images stay on the scale above; a new store "
            "made with --stats-from this one would use that scale too):"
        )
        echo_stats(attrs.grown, used, None, None)


def _rows(first: int, n: int) -> str:
    return f"{first}-{first + n - 1} ({n})" if n else "none"
