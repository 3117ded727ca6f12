"""The commands that make data: ``preprocess`` (a store of INPUT's audio), ``scan`` (what
INPUT holds, and what preprocess would make of it) and ``demo`` (audio to try them on)."""

from __future__ import annotations

import errno
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import click

from melpipe import interrupts
from melpipe.cli import options as declared_options
from melpipe.cli.errors import as_flags
from melpipe.cli.progress import LOGS, progress
from melpipe.cli.reports import echo_summary
from melpipe.errors import MelpipeError
from melpipe.run.clusters import prepare_local_workers
from melpipe.run.executors import TLSFiles, open_executor

if TYPE_CHECKING:
    from melpipe.analysis.config import SpectrogramConfig
    from melpipe.run.runner import RunReport


@click.command()
@click.argument("input_dir", metavar="INPUT")
@click.argument("output", metavar="OUTPUT")
@declared_options.declared(*declared_options.PREPROCESS)
def preprocess(input_dir: str, output: str, **options: Any) -> None:
    """Turn the audio files under INPUT into one Zarr store of uint8 images at OUTPUT.

    INPUT and OUTPUT are local paths or fsspec URLs (s3://bucket/audio, gs://...). An
    unfinished OUTPUT left by this same command is resumed, not started over; with
    --append, INPUT's new files are added to the finished store OUTPUT.
    """
    from melpipe.analysis.config import SpectrogramConfig

    tls_files = [options.pop(k) for k in declared_options.TLS]
    if any(tls_files) and not all(tls_files):
        raise click.UsageError("Give all three of --tls-ca-file, --tls-cert and --tls-key.")
    cluster = {k: options.pop(k) for k in declared_options.CLUSTER}
    given = {k: options.pop(k) for k in declared_options.CONFIG}
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
        echo_summary(report, cluster_seconds)


def _run(
    input_dir: str,
    output: str,
    config: SpectrogramConfig | None,
    cluster: dict[str, Any],
    tls: TLSFiles | None,
    options: dict[str, Any],
) -> tuple[RunReport, float]:
    """The run on its executor, and the seconds the executor took to be ready."""
    from melpipe.run import runner

    given = {k: v for k, v in options.items() if v is not None}  # not given: the defaults
    started = time.perf_counter()
    with open_executor(**cluster, tls=tls) as ex:
        cluster_seconds = time.perf_counter() - started
        try:
            report = runner.preprocess(input_dir, output, config, executor=ex,
                                       progress=progress, **given)  # fmt: skip
        except BaseException as exc:
            log = getattr(ex, "log", None)
            if log is not None and log.exists():  # something was logged: say where
                LOGS.append(log)
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC and not exc.filename:
                raise OSError(exc.errno, exc.strerror, output) from None  # Zarr says not where
            raise
    return report, cluster_seconds


def _store_config(output: str, given: Mapping[str, Any]) -> SpectrogramConfig | None:
    """The config of the store an append adds to, with the options given set on top (the
    run refuses it if they change it); None where there is no finished store to read it
    from, which the run then says."""
    from melpipe.read.reader import open_store

    if all(v is None for v in given.values()):
        return None
    try:
        base = open_store(output).config
    except MelpipeError:
        return None
    return base.with_options(**given)


@click.command()
@click.argument("input_dir", metavar="INPUT")
@declared_options.declared(*declared_options.SCAN)
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
    click.echo(as_flags(scanning.format_report(scanning.scan(input_dir, config))))
    if find_duplicates:
        click.echo("\n" + scanning.format_duplicates(scanning.find_duplicates(input_dir)))


@click.command()
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
