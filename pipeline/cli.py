"""The ``specpipe`` command line: the only place that talks to a person."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np
from tqdm import tqdm

from pipeline import runner
from pipeline.config import SpectrogramConfig
from pipeline.errors import SpecpipeError
from pipeline.stats import STATS_NAMES, GlobalStats

SHOWN_FAILURES = 5


def _progress(description: str, total: int) -> tqdm:
    return tqdm(total=total, desc=description, unit="batch", file=sys.stderr, dynamic_ncols=True)


def _fail(exc: SpecpipeError) -> click.ClickException:
    return click.ClickException(str(exc))


@click.group()
@click.version_option(package_name="specpipe")
def main() -> None:
    """Audio datasets to normalized log-mel spectrogram images in one Zarr store."""
    # Our own messages only: Dask's loggers keep their own configuration.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("specpipe: %(message)s"))
    log = logging.getLogger("pipeline")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


@main.command()
@click.argument("input_dir", metavar="INPUT")
@click.argument("output", metavar="OUTPUT")
@click.option(
    "--sample-rate", default=22050, show_default=True, help="Hz every file is resampled to."
)
@click.option("--n-mels", default=128, show_default=True, help="Mel bands (image height).")
@click.option("--hop-length", default=256, show_default=True, help="Samples between frames.")
@click.option("--n-fft", type=int, help="FFT size.  [default: 2 x hop length]")
@click.option("--fmin", default=0.0, show_default=True, help="Lowest mel frequency, Hz.")
@click.option("--fmax", type=float, help="Highest mel frequency, Hz.  [default: sample rate / 2]")
@click.option("--duration", type=float, help="Clip length in seconds.  [default: 1.0]")
@click.option("--frames", type=int, help="Clip length in frames, instead of --duration.")
@click.option(
    "--stats",
    type=click.Choice(STATS_NAMES),
    help="Statistics that scale the images.  [default: mean, or --stats-from's]",
)
@click.option(
    "--stats-from",
    help="Scale with the statistics of this finished store; skip the first pass.",
)
@click.option(
    "--workers", type=int, help="Worker processes of the local cluster.  [default: cores]"
)
@click.option("--scheduler", help="Address of a running Dask scheduler, or 'sync' for no Dask.")
@click.option(
    "--batch-size",
    default=runner.DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Files per task, and clips per chunk of the store.",
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
    help="Replace OUTPUT if it is a finished store, or an unfinished one of another run.",
)
def preprocess(input_dir: str, output: str, **options: Any) -> None:
    """Turn the audio files under INPUT into one Zarr store of uint8 images at OUTPUT.

    INPUT and OUTPUT are local paths or fsspec URLs (s3://bucket/audio, gs://...). An
    unfinished OUTPUT left by this same command is resumed, not started over.
    """
    tls_files = [options.pop(k) for k in ("tls_ca_file", "tls_cert", "tls_key")]
    if any(tls_files) and not all(tls_files):
        raise click.UsageError("Give all three of --tls-ca-file, --tls-cert and --tls-key.")
    options["tls"] = runner.TLSFiles(*tls_files) if all(tls_files) else None
    feature_options = {
        k: options.pop(k)
        for k in (
            "sample_rate",
            "n_mels",
            "hop_length",
            "n_fft",
            "fmin",
            "fmax",
            "duration",
            "frames",
        )
    }
    try:
        config = SpectrogramConfig.from_options(**feature_options)
        report = runner.preprocess(input_dir, output, config, progress=_progress, **options)
    except SpecpipeError as exc:
        raise _fail(exc) from exc
    _echo_summary(report)


def _echo_stats(stats: GlobalStats, used: str, clipped_fraction: float) -> None:
    for name in STATS_NAMES:
        r = getattr(stats, name)
        mark = "  (used)" if name == used else ""
        click.echo(f"  {name:<8} min {r.min:10.4f}  max {r.max:10.4f}{mark}")
    click.echo(f"  {clipped_fraction:.3%} of pixels clipped by the scaling.")


def _echo_summary(report: runner.RunReport) -> None:
    click.echo(
        f"Wrote {report.n_files} clips to {report.output}: "
        f"{report.n_valid} valid, {report.n_failed} failed."
    )
    _echo_stats(report.stats, report.used, report.clipped_fraction)
    click.echo("Seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in report.seconds.items()) + ".")
    if report.n_tasks:
        click.echo(f"Dask tasks: {report.n_tasks}.")
    if report.failures:
        shown = report.failures[:SHOWN_FAILURES]
        click.echo(f"First {len(shown)} of {report.n_failed} failures:")
        for failure in shown:
            click.echo(f"  {failure.path}: {failure.error}")


@main.command()
@click.argument("input_dir", metavar="INPUT", type=click.Path(file_okay=False))
def scan(input_dir: str) -> None:
    """Report what INPUT holds, from file headers only."""
    from pipeline.scan import format_report, scan

    try:
        click.echo(format_report(scan(input_dir)))
    except SpecpipeError as exc:
        raise _fail(exc) from exc


@main.command()
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--count", default=300, show_default=True, help="Audio clips to write.")
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--broken/--no-broken",
    default=True,
    show_default=True,
    help="Also write two broken files, to see how failures are recorded.",
)
def demo(folder: str, count: int, seed: int, broken: bool) -> None:
    """Write deterministic demo audio into FOLDER."""
    from pipeline.demo import generate_demo

    written = generate_demo(folder, count=count, seed=seed, broken=broken)
    click.echo(f"Wrote {len(written)} files under {folder}.")


def _open(path: str) -> Any:
    from pipeline.reader import open_store

    try:
        return open_store(path)
    except SpecpipeError as exc:
        raise _fail(exc) from exc


@main.command()
@click.argument("store_path", metavar="STORE", type=click.Path())
@click.option(
    "--failures",
    "max_failures",
    default=20,
    show_default=True,
    help="Failed clips to list, with their reasons.",
)
def info(store_path: str, max_failures: int) -> None:
    """Describe a store: parameters, statistics, counts, failures and size."""
    reader = _open(store_path)
    attrs, config = reader.attrs, reader.config
    n_failed = len(reader) - len(reader.valid_indices)
    click.echo(f"{reader.path}: specpipe store, format {attrs['format_version']}, complete")
    click.echo(f"  created {attrs.get('created', '?')} from {attrs.get('input', '?')}")
    click.echo(f"  clips {len(reader)}: {len(reader.valid_indices)} valid, {n_failed} failed")
    click.echo(
        f"  images uint8 {config.n_mels} x {config.n_frames} (mels x frames), "
        f"{reader.chunk_length} clips per chunk"
    )
    click.echo(f"  size on disk {reader.size_on_disk() / 2**20:.2f} MiB")
    click.echo("Parameters:")
    for key, value in config.to_dict().items():
        click.echo(f"  {key:<12} {value}")
    click.echo("Statistics of log(mel power + eps):")
    stats = attrs["stats"]
    _echo_stats(reader.stats, reader.used, stats["clipped_fraction"])
    if stats.get("from"):
        click.echo(f"  statistics taken from {stats['from']}")
    failed = np.flatnonzero(~reader.valid)
    if len(failed):
        click.echo(f"Failures ({min(len(failed), max_failures)} of {len(failed)} shown):")
        for i in failed[:max_failures]:
            click.echo(f"  {i}: {reader.paths[i]}: {reader.errors[i]}")


@main.command("export-png")
@click.argument("store_path", metavar="STORE", type=click.Path())
@click.argument("outdir", metavar="OUTDIR", type=click.Path(file_okay=False))
@click.option("--indices", help="Clips to export, e.g. '0,5,10-19'.  [default: all valid]")
def export_png(store_path: str, outdir: str, indices: str | None) -> None:
    """Write clips as 8-bit grayscale PNGs under OUTDIR, one per clip, named by input path."""
    from pipeline import pictures

    reader = _open(store_path)
    try:
        chosen = None if indices is None else pictures.parse_indices(indices, len(reader))
        written, skipped = pictures.export_png(reader, outdir, chosen)
    except SpecpipeError as exc:
        raise _fail(exc) from exc
    click.echo(f"Wrote {len(written)} PNG files under {outdir}.")
    if skipped:
        click.echo(f"Skipped {len(skipped)} failed clips: {', '.join(map(str, skipped[:20]))}")


@main.command()
@click.argument("store_path", metavar="STORE", type=click.Path())
@click.option("-o", "--output", default="preview.png", show_default=True, help="Image file.")
@click.option("--indices", help="Clips to show, e.g. '0,5,10-19'.  [default: spread evenly]")
@click.option("--count", default=12, show_default=True, help="Clips shown without --indices.")
def preview(store_path: str, output: str, indices: str | None, count: int) -> None:
    """Save a contact sheet of clips and a histogram of log-mel values with both statistics."""
    from pipeline import pictures

    reader = _open(store_path)
    try:
        chosen = None if indices is None else pictures.parse_indices(indices, len(reader))
        pictures.preview(reader, output, indices=chosen, count=count)
    except SpecpipeError as exc:
        raise _fail(exc) from exc
    click.echo(f"Wrote {output}.")


@main.command()
@click.argument("store_path", metavar="STORE", type=click.Path())
@click.option("--index", "index", type=int, required=True, help="The clip to turn into audio.")
@click.option("-o", "--output", required=True, help="Audio file to write (.wav, .flac, ...).")
@click.option("--n-iter", default=32, show_default=True, help="Griffin-Lim iterations.")
def invert(store_path: str, index: int, output: str, n_iter: int) -> None:
    """Estimate a clip's audio from its image (Griffin-Lim) and write it to a file."""
    import soundfile

    kind = Path(output).suffix.lstrip(".").upper()
    if kind not in soundfile.available_formats():
        raise click.ClickException(
            f"Cannot write audio to {output!r}: its extension names no format soundfile "
            f"writes ({', '.join(sorted(soundfile.available_formats()))})."
        )
    reader = _open(store_path)
    if not 0 <= index < len(reader):
        raise click.ClickException(
            f"Index {index} is outside the store's clips 0-{len(reader) - 1}."
        )
    if not reader.valid[index]:
        raise click.ClickException(
            f"Clip {index} ({reader.paths[index]}) failed and has no image: {reader.errors[index]}"
        )
    audio = reader.to_audio(index, n_iter=n_iter)
    soundfile.write(output, audio, reader.config.sample_rate)
    click.echo(
        f"Wrote {output}: {len(audio) / reader.config.sample_rate:.2f} s at "
        f"{reader.config.sample_rate} Hz, from clip {index} ({reader.paths[index]})."
    )
