"""The ``melpipe`` command line: the only place that talks to a person.

Every error a user can meet ends the command with one line that names the thing and the
fix, never a traceback (``MELPIPE_TRACEBACK=1`` shows one for a bug report).
"""

from __future__ import annotations

import ast
import errno
import logging
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np
from tqdm import tqdm

from melpipe import __version__, interrupts, records
from melpipe.analysis import config as defaults
from melpipe.analysis import features
from melpipe.analysis.presets import PRESET_NAMES
from melpipe.analysis.stats import SCALES, Figures, GlobalStats
from melpipe.errors import MelpipeError, name_parameters
from melpipe.run.executors import TLSFiles, open_executor, prepare_local_workers
from melpipe.run.plan import DEFAULT_BATCH_SIZE, DUPLICATES
from melpipe.sources.retries import transient, unreachable

if TYPE_CHECKING:
    from melpipe.run.runner import RunReport

SHOWN_FAILURES = 5
_FIXES = {
    errno.ENOSPC: "Free some space or choose another location; an unfinished store is marked "
    "so, and the same command resumes it.",
    errno.EACCES: "Check the permissions of that path.",
    errno.EROFS: "That file system is read-only: choose another location.",
    errno.ENAMETOOLONG: "Choose a shorter path.",
}


def _one_line(exc: BaseException) -> str:
    """The message a person sees for an error, on one line, in the command line's words."""
    if isinstance(exc, MelpipeError):
        return _as_flags(str(exc))
    if transient(exc):  # storage out of reach in this process, where nothing retries
        return str(unreachable("INPUT or OUTPUT", exc))
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        fix = _FIXES.get(exc.errno or 0, "")
        return f"{exc.strerror or exc}{where}. {fix}".strip()
    return (
        f"internal error: {type(exc).__name__}: {exc}. This is a bug in melpipe: run again "
        "with MELPIPE_TRACEBACK=1 to see where it happened, and report it."
    )


# Library parameters that the command line sets through options of other names.
_SPELLED = {"n_samples": "--duration", "tls": "--tls-ca-file, --tls-cert and --tls-key"}


def _as_flags(text: str) -> str:
    """``text`` with the library's parameters, as messages name them (`hop_length`,
    `overwrite=True`, `segments='all'`), named by this command line's options instead
    (--hop-length, --overwrite, --segments all). An option of the same name means the same
    in every command, so any command's will do: a reading command's message may name
    preprocess's."""
    ctx = click.get_current_context(silent=True)
    options: dict[str, click.Option] = {}
    if ctx is not None:
        root = ctx.find_root().command
        commands = list(root.commands.values()) if isinstance(root, click.Group) else []
        for command in [*commands, ctx.command]:
            options.update((p.name, p) for p in command.params if isinstance(p, click.Option))

    def flag(name: str, value: str | None) -> str | None:
        option = options.get(name)
        if name in _SPELLED or option is None or option.name is None:
            return _SPELLED.get(name)
        long = max(option.opts, key=len)
        if value is None:
            return long
        given = _literal(value)
        if option.is_flag:
            off = given is False and option.secondary_opts
            return max(option.secondary_opts, key=len) if off else long
        return f"{long} {shlex.quote(str(given))}"

    return name_parameters(text, flag)


def _literal(value: str) -> Any:
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


class _Commands(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return self._invoke(ctx)
        finally:
            _FINISHED.set()
            interrupts.reset()

    def _invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:
            # The reader of our output stopped reading (`info STORE | head -1`): click ends
            # quietly, as Unix tools do, where our handler would print "Broken pipe".
            raise
        except KeyboardInterrupt:
            _BAR_OUTPUT.end_line()
            raise click.ClickException(
                "Interrupted. An unfinished store is marked so; the same command resumes it."
            ) from None
        except Exception as exc:
            if os.environ.get("MELPIPE_TRACEBACK") and not isinstance(exc, MelpipeError):
                raise
            _BAR_OUTPUT.end_line()
            raise click.ClickException(_one_line(exc).replace("\n", " ") + _log_note()) from None


class _Bar(tqdm):
    """A progress bar that also ends the run once it was asked to stop, at the next batch
    that finishes (see :mod:`melpipe.interrupts`)."""

    def update(self, n: float | None = 1) -> bool | None:
        interrupts.check()
        return super().update(n)


class _BarOutput:
    """The error output, for progress bars, knowing whether they left a line unended: a
    signal can stop a run between a bar's first line and its close, and the error that
    follows then begins a line of its own (:meth:`end_line`), not the bar's."""

    unended = False

    def write(self, text: str) -> None:
        if text:
            self.unended = not text.endswith("\n")
        sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, fileno: what tqdm asks a file
        return getattr(sys.stderr, name)

    def end_line(self) -> None:
        if self.unended:
            self.write("\n")


_BAR_OUTPUT = _BarOutput()
_LOGS: list[Path] = []  # the local cluster's log, once something was written there


def _log_note() -> str:
    if not _LOGS:
        return ""
    return f" (Dask's messages, the failed tasks' tracebacks among them, are in {_LOGS[-1]}.)"


def _progress(description: str, total: int) -> tqdm:
    return _Bar(total=total, desc=description, unit="batch", file=_BAR_OUTPUT, dynamic_ncols=True)


@click.group(cls=_Commands)
@click.version_option(version=__version__, prog_name="melpipe")
def main() -> None:
    """Audio datasets to normalized log-mel spectrogram images in one Zarr store."""
    # SIGTERM, how `timeout` and batch systems stop a job, ends a run as Ctrl-C does: the
    # cluster closes, the store stays resumable, one line says so.
    _FINISHED.clear()
    if threading.current_thread() is threading.main_thread():  # only it may set handlers
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, _interrupt)
    interrupts.check()  # a signal while the command line loaded (melpipe.launch)
    # Our own messages only: Dask's loggers keep their own configuration.
    handler = logging.StreamHandler()
    handler.setFormatter(_FlagsFormatter("melpipe: %(message)s"))
    log = logging.getLogger("melpipe")
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


class _FlagsFormatter(logging.Formatter):
    """The library's messages as the command line speaks: its parameters as flags."""

    def format(self, record: logging.LogRecord) -> str:
        return _as_flags(super().format(record))


# Set once the command has done its work: a signal then ends nothing, and an exception
# raised on the way out (in an exit hook of Dask's) would print a traceback.
_FINISHED = threading.Event()


def _interrupt(signum: int, frame: Any) -> None:
    """Stop the command as Ctrl-C does. During a run, where the signal may find the
    process inside Dask's or Zarr's machinery, the stop is only requested, and the run
    ends at its next safe point (:mod:`melpipe.interrupts`). So, too, where the signal
    came in during a garbage collector callback or a finalizer (Dask's scheduler, in this
    process, watches the collector), where Python would print the KeyboardInterrupt and
    drop it."""
    if _FINISHED.is_set() or not interrupts.request():
        return
    while frame is not None:
        if frame.f_code.co_name in ("_gc_callback", "__del__"):
            return
        frame = frame.f_back
    raise KeyboardInterrupt


def _decorated(command: Any, options: list[Any]) -> Any:
    """``command`` with click's ``options``, listed in ``--help`` in their order."""
    for option in reversed(options):
        command = option(command)
    return command


def _segment_options(command: Any) -> Any:
    """The options that cut files into clips, shared by preprocess and scan."""
    options = [
        click.option(
            "--segments",
            type=click.Choice(defaults.SEGMENTS),
            help="One clip from each file's start, or every window of it.  [default: first]",
        ),
        click.option(
            "--segment-hop",
            type=float,
            help="Seconds between window starts with --segments all.  [default: clip length]",
        ),
        click.option(
            "--tail",
            type=click.Choice(defaults.TAILS),
            help="A last window shorter than a clip: zero-padded or dropped.  [default: pad]",
        ),
        click.option(
            "--max-clips-per-file", type=int, help="Keep at most this many windows of a file."
        ),
        click.option(
            "--select",
            type=click.Choice(defaults.SELECTS),
            help="Which windows --max-clips-per-file keeps.  [default: first]",
        ),
        click.option(
            "--min-level-db",
            type=float,
            help="Drop windows whose RMS level is below this many dB full scale.",
        ),
    ]
    return _decorated(command, options)


def _analysis_options(command: Any) -> Any:
    """The options of the analysis beyond the STFT and mel sizes: a preset, and each
    convention a preset sets (docs/cli.md, "Presets")."""
    # long because: one option per convention, read as a table of them
    options = [
        click.option(
            "--preset",
            type=click.Choice(PRESET_NAMES),
            help="Features of a model or vocoder; every option given beside it wins.  "
            "[default: post]",
        ),
        click.option(
            "--spectrum",
            type=click.Choice(features.SPECTRA),
            help="Mel bands, or the FFT's linear frequency bins.  [default: mel]",
        ),
        click.option(
            "--power", type=click.Choice(["1", "2"]), help="1: magnitude, 2: power.  [default: 2]"
        ),
        click.option("--win-length", type=int, help="Window length.  [default: n_fft]"),
        click.option(
            "--padding",
            type=click.Choice(features.PADDINGS),
            help="center: librosa's centred frames; same: (n_fft - hop) / 2 reflected "
            "samples each side; end: frames from sample 0, zeros appended.  [default: center]",
        ),
        click.option(
            "--pad-mode",
            type=click.Choice(features.PAD_MODES),
            help="What pads centred frames.  [default: constant]",
        ),
        click.option(
            "--mel-htk/--no-mel-htk",
            default=None,
            help="HTK's mel scale instead of Slaney's.  [default: no]",
        ),
        click.option(
            "--mel-norm",
            type=click.Choice(features.MEL_NORMS),
            help="Slaney's area norm of the filters, or none.  [default: slaney]",
        ),
        click.option(
            "--drop-nyquist/--keep-nyquist",
            default=None,
            help="Leave out the last bin of a linear spectrum.  [default: keep]",
        ),
        click.option(
            "--log",
            type=click.Choice(features.LOGS),
            help="add: log(x + eps); clamp: log(max(x, eps)).  [default: add]",
        ),
        click.option("--eps", type=float, help="The log's epsilon.  [default: 1e-9]"),
        click.option(
            "--stft-eps",
            type=float,
            help="Added to re^2 + im^2 before the power (HiFi-GAN's 1e-9).  [default: 0]",
        ),
        click.option(
            "--peak-normalize",
            metavar="PEAK|none",
            help="Scale each file so that its peak is PEAK first (HiFi-GAN's 0.95).  "
            "[default: none]",
        ),
    ]
    return _decorated(command, options)


_CONFIG_OPTIONS = (
    "sample_rate", "n_mels", "hop_length", "n_fft", "fmin", "fmax", "duration", "frames",
    "segments", "segment_hop", "tail", "max_clips_per_file", "select", "min_level_db",
    "preset", "spectrum", "power", "win_length", "padding", "pad_mode", "mel_htk", "mel_norm",
    "drop_nyquist", "log", "eps", "stft_eps", "peak_normalize",
)  # fmt: skip


@main.command()
@click.argument("input_dir", metavar="INPUT")
@click.argument("output", metavar="OUTPUT")
@click.option(
    "--sample-rate",
    type=int,
    help=f"Hz every file is resampled to.  [default: {defaults.SAMPLE_RATE}]",
)
@click.option("--n-mels", type=int, help=f"Mel bands (image height).  [default: {defaults.N_MELS}]")
@click.option(
    "--hop-length", type=int, help=f"Samples between frames.  [default: {defaults.HOP_LENGTH}]"
)
@click.option("--n-fft", type=int, help="FFT size.  [default: 2 x hop length]")
@click.option("--fmin", type=float, help=f"Lowest mel frequency, Hz.  [default: {defaults.FMIN:g}]")
@click.option("--fmax", type=float, help="Highest mel frequency, Hz.  [default: sample rate / 2]")
@click.option(
    "--duration", type=float, help=f"Clip length in seconds.  [default: {defaults.DURATION:g}]"
)
@click.option("--frames", type=int, help="Clip length in frames, instead of --duration.")
@_analysis_options
@_segment_options
@click.option(
    "--stats",
    type=click.Choice(SCALES),
    help="Statistics that scale the images; all are computed and recorded.  "
    "[default: the preset's (mean for post), or --stats-from's]",
)
@click.option(
    "--percentiles",
    nargs=2,
    type=float,
    metavar="LO HI",
    help="Percentiles of the pixels that hold audio, for --stats percentile.  "
    "[default: 0.1 99.9, or --stats-from's]",
)
@click.option(
    "--top-db",
    type=float,
    help="Decibels below the maximum, for --stats top-db.  [default: 80, or --stats-from's]",
)
@click.option(
    "--clip-std",
    type=float,
    help="Standard deviations each side of a band's mean, for --stats band-moments.  "
    "[default: 3, or --stats-from's]",
)
@click.option(
    "--stats-from",
    help="Scale with the statistics of this finished store.",
)
@click.option(
    "--workers", type=int, help="Worker processes of the local cluster.  [default: cores]"
)
@click.option("--scheduler", help="Address of a running Dask scheduler, or 'sync' for no Dask.")
@click.option(
    "--batch-size",
    type=int,
    help=f"Files per task, and clips per chunk of the store.  [default: {DEFAULT_BATCH_SIZE}, "
    "or the store's with --append]",
)
@click.option(
    "--tls-ca-file", type=click.Path(dir_okay=False), help="CA certificate for a tls:// scheduler."
)
@click.option("--tls-cert", type=click.Path(dir_okay=False), help="Client certificate (PEM).")
@click.option("--tls-key", type=click.Path(dir_okay=False), help="Client private key (PEM).")
@click.option(
    "--scratch/--no-scratch",
    default=True,
    show_default=True,
    help="Keep pass 1's log-mels in OUTPUT for pass 2 (4 bytes a pixel, until the end), "
    "or compute them again.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace OUTPUT if it is a store that melpipe wrote (and nothing else).",
)
@click.option(
    "--append",
    is_flag=True,
    help="Add INPUT's files that OUTPUT, a finished store, lacks, scaled with its "
    "statistics and options, unchanged.",
)
@click.option(
    "--duplicates",
    type=click.Choice(DUPLICATES),
    default="keep",
    show_default=True,
    help="Files with the same samples or bytes as one before them: stored and reported, "
    "or left without clips.",
)
def preprocess(input_dir: str, output: str, **options: Any) -> None:
    """Turn the audio files under INPUT into one Zarr store of uint8 images at OUTPUT.

    INPUT and OUTPUT are local paths or fsspec URLs (s3://bucket/audio, gs://...). An
    unfinished OUTPUT left by this same command is resumed, not started over; with
    --append, INPUT's new files are added to the finished store OUTPUT.
    """
    from melpipe.analysis.config import SpectrogramConfig

    tls_files = [options.pop(k) for k in ("tls_ca_file", "tls_cert", "tls_key")]
    if any(tls_files) and not all(tls_files):
        raise click.UsageError("Give all three of --tls-ca-file, --tls-cert and --tls-key.")
    cluster = {k: options.pop(k) for k in ("workers", "scheduler")}
    given = {k: options.pop(k) for k in _CONFIG_OPTIONS}
    if options["append"] and options["overwrite"]:
        raise click.UsageError("Give --append or --overwrite, not both.")
    if options["append"]:  # the store's options, and any given must agree with them
        config = _store_config(output, given)
    else:
        config = SpectrogramConfig.from_options(**given)
    with interrupts.deferred():  # a signal ends the run at its next safe point
        if cluster["workers"] is not None:
            prepare_local_workers()  # their imports, while this process reads the input
        tls = TLSFiles(*tls_files) if all(tls_files) else None
        report, cluster_seconds = _run(input_dir, output, config, cluster, tls, options)
        _echo_summary(report, cluster_seconds)


def _run(
    input_dir: str,
    output: str,
    config: Any,
    cluster: dict[str, Any],
    tls: TLSFiles | None,
    options: dict[str, Any],
) -> tuple[RunReport, float]:
    """The run on its executor, and the seconds the executor took to be ready."""
    from melpipe.run import runner

    started = time.perf_counter()
    with open_executor(**cluster, tls=tls) as ex:
        options["progress"] = _progress
        cluster_seconds = time.perf_counter() - started
        try:
            report = runner.preprocess(input_dir, output, config, executor=ex, **options)
        except BaseException as exc:
            log = getattr(ex, "log", None)
            if log is not None and log.exists():  # something was logged: say where
                _LOGS.append(log)
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC and not exc.filename:
                raise OSError(exc.errno, exc.strerror, output) from None  # Zarr says not where
            raise
    return report, cluster_seconds


def _store_config(output: str, given: Mapping[str, Any]) -> Any:
    """The config of the store an append adds to, with the options given set on top (the
    run refuses it if they change it); None where there is no finished store to read it
    from, which the run then says."""
    if all(v is None for v in given.values()):
        return None
    try:
        base = _open(output).config
    except MelpipeError:
        return None
    return base.with_options(**given)


def _echo_stats(
    stats: GlobalStats,
    used: str,
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


def source_lines(source: Any, used: str) -> list[str]:
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


def _echo_summary(report: RunReport, cluster_seconds: float) -> None:
    counts, record, added = report.counts, report.stats, report.added
    if report.action == "append":
        _echo_added(report)
    else:
        click.echo(
            f"Wrote {counts.clips} clips to {report.output}, from {counts.files} files: "
            f"{counts.decoded} decoded, {counts.failed} failed."
        )
        _echo_stats(record.values, record.used, record.clipped_fraction, record.figures)
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


@main.command()
@click.argument("input_dir", metavar="INPUT")
@click.option(
    "--sample-rate",
    type=int,
    help=f"Hz every file would be resampled to.  [default: {defaults.SAMPLE_RATE}]",
)
@click.option(
    "--hop-length", type=int, help=f"Samples between frames.  [default: {defaults.HOP_LENGTH}]"
)
@click.option(
    "--duration", type=float, help=f"Clip length in seconds.  [default: {defaults.DURATION:g}]"
)
@click.option("--frames", type=int, help="Clip length in frames, instead of --duration.")
@click.option(
    "--preset",
    type=click.Choice(PRESET_NAMES),
    help="The preset whose rate and clip length to count with.  [default: post]",
)
@_segment_options
@click.option(
    "--duplicates",
    "find_duplicates",
    is_flag=True,
    help="Also list the files whose bytes are the same (reads every file once).",
)
def scan(input_dir: str, find_duplicates: bool, **options: Any) -> None:
    """Report what INPUT holds, from file headers, and how many clips preprocess
    would make of it with these options."""
    from melpipe.analysis.config import SpectrogramConfig
    from melpipe.sources import scan as scanning

    config = SpectrogramConfig.from_options(**options)
    click.echo(_as_flags(scanning.format_report(scanning.scan(input_dir, config))))
    if find_duplicates:
        click.echo("\n" + scanning.format_duplicates(scanning.find_duplicates(input_dir)))


@main.command()
@click.argument("folder", type=click.Path(file_okay=False))
@click.option(
    "--count",
    default=300,
    show_default=True,
    type=click.IntRange(min=0),
    help="Audio clips to write.",
)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--broken/--no-broken",
    default=True,
    show_default=True,
    help="Also write two broken files, to see how failures are recorded.",
)
def demo(folder: str, count: int, seed: int, broken: bool) -> None:
    """Write deterministic demo audio into FOLDER."""
    from melpipe.sources.demo import generate_demo

    written = generate_demo(folder, count=count, seed=seed, broken=broken)
    click.echo(f"Wrote {len(written)} files under {folder}.")


def _open(path: str) -> Any:
    from melpipe.read.reader import open_store

    return open_store(path)


@main.command()
@click.argument("store_path", metavar="STORE")
@click.option(
    "--failures",
    "max_failures",
    default=20,
    show_default=True,
    type=click.IntRange(min=0),
    help="Failed files to list, with their reasons.",
)
def info(store_path: str, max_failures: int) -> None:
    """Describe a store: parameters, statistics, counts, failed files and size."""
    from melpipe.store.schema import FORMAT_VERSION

    reader = _open(store_path)
    attrs, config = reader.attrs, reader.config
    failed = reader.failed_files
    click.echo(f"{reader.path}: melpipe store, format {FORMAT_VERSION}, complete")
    click.echo(f"  created {attrs.created} from {attrs.input}")
    click.echo(
        f"  clips {len(reader)} from {len(reader.file_paths)} files: "
        f"{len(reader.file_paths) - len(failed)} decoded, {len(failed)} failed"
    )
    click.echo(
        f"  audio {np.nansum(reader.array('duration')[reader.decoded]) / 3600:.3f} hours in "
        f"the files that decoded, of which the clips hold {_coverage(reader):.1%}"
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
    _echo_stats(reader.stats, reader.used, reader.clipped_fraction, reader.figures)
    if attrs.stats.source:
        click.echo(f"  statistics taken from {attrs.stats.source.store}")
    _echo_sources(attrs, reader.used)
    for folder in attrs.skipped:
        click.echo(f"Skipped folder {folder.path}: {folder.reason}")
    unique = reader.array("duplicate_of") < 0  # a duplicate dropped has no clip either
    quiet = np.flatnonzero(reader.decoded & (reader.array("n_clips") == 0) & unique)
    if len(quiet):
        click.echo(f"Files that decoded but gave no clip (every window too quiet): {len(quiet)}")
        for i in quiet[:max_failures]:
            click.echo(f"  {reader.file_paths[i]}")
    if len(failed):
        click.echo(f"Failed files ({min(len(failed), max_failures)} of {len(failed)} shown):")
        for i in failed[:max_failures]:
            click.echo(f"  {reader.file_paths[i]}: {reader.file_errors[i]}")


def _echo_sources(attrs: Any, used: str) -> None:
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
        _echo_stats(attrs.grown, used, None, None)


def _rows(first: int, n: int) -> str:
    return f"{first}-{first + n - 1} ({n})" if n else "none"


def _coverage(reader: Any) -> float:
    """The share of the decoded audio that the store's clips hold."""
    from melpipe.analysis.segments import covered_seconds

    durations = np.nan_to_num(reader.array("duration"))
    length = reader.config.n_samples / reader.config.sample_rate
    held = covered_seconds(reader.file_index, reader.start, durations, length)
    total = float(durations[reader.decoded].sum())
    return held / total if total else 0.0


@main.command("export-png")
@click.argument("store_path", metavar="STORE")
@click.argument("outdir", metavar="OUTDIR")
@click.option("--indices", help="Clips to export, e.g. '0,5,10-19'.  [default: all]")
def export_png(store_path: str, outdir: str, indices: str | None) -> None:
    """Write clips as 8-bit grayscale PNGs under OUTDIR, one per clip, named after its file
    and start time (a/b.wav@12.000s.png)."""
    from melpipe.read import pictures

    reader = _open(store_path)
    chosen = None if indices is None else pictures.parse_indices(indices, len(reader))
    written = pictures.export_png(reader, outdir, chosen)
    click.echo(f"Wrote {len(written)} PNG files under {outdir}.")


@main.command()
@click.argument("store_path", metavar="STORE")
@click.option("-o", "--output", default="preview.png", show_default=True, help="Image file.")
@click.option("--indices", help="Clips to show, e.g. '0,5,10-19'.  [default: spread evenly]")
@click.option(
    "--count",
    default=12,
    show_default=True,
    type=click.IntRange(min=1),
    help="Clips shown without --indices.",
)
def preview(store_path: str, output: str, indices: str | None, count: int) -> None:
    """Save a contact sheet of clips and a histogram of log-mel values with both statistics."""
    from melpipe.read import pictures

    reader = _open(store_path)
    chosen = None if indices is None else pictures.parse_indices(indices, len(reader))
    pictures.preview(reader, output, indices=chosen, count=count)
    click.echo(f"Wrote {output}.")


@main.command()
@click.argument("store_path", metavar="STORE")
@click.option("--index", "index", type=int, required=True, help="The clip to turn into audio.")
@click.option("-o", "--output", required=True, help="Audio file to write (.wav, .flac, ...).")
@click.option(
    "--n-iter",
    default=32,
    show_default=True,
    type=click.IntRange(min=1),
    help="Griffin-Lim iterations.",
)
def invert(store_path: str, index: int, output: str, n_iter: int) -> None:
    """Estimate a clip's audio from its image (Griffin-Lim) and write it to a file."""
    import soundfile

    kind = Path(output).suffix.lstrip(".").upper()
    if kind not in soundfile.available_formats():
        raise click.ClickException(
            f"Cannot write audio to {output!r}: its extension names no format soundfile "
            f"writes ({', '.join(sorted(soundfile.available_formats()))})."
        )
    folder = Path(output).parent
    if not folder.is_dir():
        raise click.ClickException(
            f"Cannot write {output!r}: the folder {str(folder)!r} does not exist. Create it first."
        )
    reader = _open(store_path)
    if not 0 <= index < len(reader):
        raise click.ClickException(
            f"Index {index} is outside the store's clips 0-{len(reader) - 1}."
        )
    from melpipe.files import open_to_write

    audio = reader.to_audio(index, n_iter=n_iter)
    with open_to_write(output) as file:
        soundfile.write(file, audio, reader.config.sample_rate, format=kind)
    click.echo(
        f"Wrote {output}: {len(audio) / reader.config.sample_rate:.2f} s at "
        f"{reader.config.sample_rate} Hz, from clip {index} ({reader.label(index)})."
    )
