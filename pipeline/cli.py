"""The ``specpipe`` command line: the only place that talks to a person."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click
from tqdm import tqdm

from pipeline import runner
from pipeline.config import SpectrogramConfig
from pipeline.errors import SpecpipeError
from pipeline.stats import STATS_NAMES

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
@click.argument("input_dir", metavar="INPUT", type=click.Path(file_okay=False))
@click.argument("output", metavar="OUTPUT", type=click.Path())
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
    type=click.Path(file_okay=False),
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
    help="Files per task, and clips per shard of the store.",
)
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it is an existing store.")
def preprocess(input_dir: str, output: str, **options: Any) -> None:
    """Turn the audio files under INPUT into one Zarr store of uint8 images at OUTPUT."""
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


def _echo_summary(report: runner.RunReport) -> None:
    click.echo(
        f"Wrote {report.n_files} clips to {report.output}: "
        f"{report.n_valid} valid, {report.n_failed} failed."
    )
    for name in STATS_NAMES:
        r = getattr(report.stats, name)
        mark = "  (used)" if name == report.used else ""
        click.echo(f"  {name:<8} min {r.min:10.4f}  max {r.max:10.4f}{mark}")
    click.echo(f"  {report.clipped_fraction:.3%} of pixels clipped by the scaling.")
    click.echo("Seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in report.seconds.items()) + ".")
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
