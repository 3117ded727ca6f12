"""The commands that read a finished store: ``info`` (describe it), ``export-png`` and
``preview`` (look at its clips) and ``invert`` (hear one)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from melpipe.cli.reports import echo_store

if TYPE_CHECKING:
    from melpipe.read.reader import SpectrogramStore


def _open(path: str) -> SpectrogramStore:
    from melpipe.read.reader import open_store

    return open_store(path)


@click.command()
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
    echo_store(_open(store_path), max_failures)


@click.command("export-png")
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


@click.command()
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


@click.command()
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
    from melpipe.sources.audio import audio_format, write_audio

    audio_format(output)  # refused before the store is read
    reader = _open(store_path)
    if not 0 <= index < len(reader):
        raise click.ClickException(
            f"Index {index} is outside the store's clips 0-{len(reader) - 1}."
        )
    audio = reader.to_audio(index, n_iter=n_iter)
    write_audio(output, audio, reader.config.sample_rate)
    rate = reader.config.sample_rate
    click.echo(
        f"Wrote {output}: {len(audio) / rate:.2f} s at {rate} Hz, from clip {index} "
        f"({reader.label(index)})."
    )
