"""Pictures of a store for people: one PNG per clip, and a contact sheet with a histogram.

Needs the ``viz`` extra (Pillow and matplotlib), imported only when a picture is made so
that the pipeline itself does not depend on them.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from melpipe.analysis.pixels import BINS_PER_UNIT
from melpipe.errors import ArgumentError, ExportError, ExtraMissingError, StoreError
from melpipe.files import open_to_write
from melpipe.read.reader import SpectrogramStore

PNG_SUFFIX = ".png"
DRAWN_BINS_PER_UNIT = 16  # the preview's histogram: the stored one's bins, 8 at a time


def _require(module: str, extra: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ExtraMissingError(
            f"This needs {module}, which is not installed: install melpipe's {extra} extra "
            f"(python -m pip install '.[{extra}]' in a clone of melpipe)."
        )


def parse_indices(text: str, n: int) -> np.ndarray:
    """Clip indices from ``"0,5,10-19"`` (inclusive ranges), each checked against ``n``."""
    picked: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        first, sep, last = part.partition("-")
        try:
            lo = int(first)
            hi = int(last) if sep else lo
        except ValueError:
            raise ArgumentError(
                f"Expected indices like '0,5,10-19'. Got {part!r} in {text!r}."
            ) from None
        if not 0 <= lo <= hi < n:
            raise ArgumentError(f"Indices {part!r} are outside the store's clips 0-{n - 1}.")
        picked.extend(range(lo, hi + 1))
    if not picked:
        raise ArgumentError(f"No indices in {text!r}.")
    return np.asarray(picked, dtype=np.int64)


def png_path(outdir: str | os.PathLike[str], label: str) -> Path:
    """Where a clip's PNG goes: its label (input path and start time, ``a/b.wav@12.000s``)
    under ``outdir``, with ``.png`` appended.

    The audio extension is kept (``a/b.wav@0.000s.png``) so that ``b.wav`` and ``b.flac``
    never write the same picture.
    """
    root = Path(outdir).resolve()
    named = root / (label + PNG_SUFFIX)
    # The folders resolved, links and ".." included; the file's own name is not, since a
    # link there is refused when the file is opened, never followed.
    target = named.parent.resolve() / named.name
    if named.name in ("", ".", "..") or not target.is_relative_to(root):
        raise ExportError(f"Clip label {label!r} would leave {str(outdir)!r}; refused.")
    return target


def export_png(
    reader: SpectrogramStore,
    outdir: str | os.PathLike[str],
    indices: Sequence[int] | np.ndarray | None = None,
) -> list[Path]:
    """Write each asked-for clip (default all) as an 8-bit grayscale PNG, pixel for pixel,
    named after its file and start time. Returns the files written."""
    _require("PIL", "viz")
    from PIL import Image

    chosen = np.arange(len(reader)) if indices is None else np.asarray(indices, dtype=np.int64)
    written: list[Path] = []
    for start in range(0, len(chosen), reader.chunk_length):
        block = chosen[start : start + reader.chunk_length]
        for i, image in zip(block, reader.read_many(block), strict=True):
            target = png_path(outdir, reader.label(i))
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with open_to_write(target) as file:
                    Image.fromarray(image, mode="L").save(file, format="PNG")
            except OSError as exc:
                raise ExportError(
                    f"Cannot write clip {i}'s picture to {str(target)!r}: {exc.strerror}. "
                    f"{_fix(exc)} ({len(written)} pictures were written before it.)"
                ) from None
            written.append(target)
    return written


def _fix(exc: OSError) -> str:
    if exc.errno == errno.ENAMETOOLONG:
        return "Rename the input file, or export to a shorter OUTDIR."
    if isinstance(exc, (IsADirectoryError, NotADirectoryError, FileExistsError)):
        return "A file or folder of that name is in the way: move it, or choose another OUTDIR."
    return "Check OUTDIR and the space left on its disk."


def evenly_spaced(candidates: np.ndarray, count: int) -> np.ndarray:
    """Up to ``count`` of ``candidates``, spread evenly from first to last."""
    if len(candidates) <= count:
        return candidates
    return candidates[np.linspace(0, len(candidates) - 1, count).round().astype(int)]


def preview(
    reader: SpectrogramStore,
    output: str | os.PathLike[str],
    *,
    indices: Sequence[int] | np.ndarray | None = None,
    count: int = 12,
    columns: int = 4,
) -> None:
    """Save a contact sheet of clips with axes, above a histogram of log-mel values.

    The histogram is the store's own, of the log-mel values of every pixel that holds
    audio, with each statistic's range and how it spends the 256 levels.
    """
    if count < 1:
        raise ArgumentError(f"Expected a count of at least 1 clip. Got {count}.")
    if columns < 1:
        raise ArgumentError(f"Expected at least one column. Got {columns}.")
    _require("matplotlib", "viz")
    every = np.arange(len(reader))
    shown = evenly_spaced(every, count) if indices is None else np.asarray(indices, np.int64)
    if len(shown) == 0:
        raise StoreError(f"Store {reader.path!r} has no clip to show.")
    fig = contact_sheet(reader, shown, columns=columns)
    import matplotlib.pyplot as plt

    kind = Path(output).suffix.lstrip(".").lower() or "png"
    if kind not in fig.canvas.get_supported_filetypes():
        plt.close(fig)
        raise ExportError(
            f"Cannot write {str(output)!r}: its extension names no picture format matplotlib "
            f"writes ({', '.join(sorted(fig.canvas.get_supported_filetypes()))})."
        )
    try:
        with open_to_write(output) as file:
            fig.savefig(file, dpi=100, format=kind)
    except OSError as exc:
        raise ExportError(f"Cannot write {str(output)!r}: {exc.strerror}. {_fix(exc)}") from None
    finally:
        plt.close(fig)


def contact_sheet(reader: SpectrogramStore, shown: np.ndarray, *, columns: int = 4) -> Any:
    """The figure :func:`preview` saves: the clips ``shown``, each titled with its index,
    file and start time, above the histogram."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt

    rows = -(-len(shown) // columns)
    fig = plt.figure(figsize=(3.2 * columns, 2.6 * rows + 3.0), layout="constrained")
    grid = fig.add_gridspec(rows + 1, columns, height_ratios=[2.6] * rows + [3.0])
    for k, (i, image) in enumerate(zip(shown, reader.read_many(shown), strict=True)):
        _draw_clip(fig.add_subplot(grid[k // columns, k % columns]), reader, int(i), image)
    _draw_histogram(fig.add_subplot(grid[rows, :]), reader)
    fig.suptitle(
        f"{reader.path}: {len(reader)} clips of {len(reader.file_paths)} files, "
        f"{len(reader.failed_files)} files failed"
    )
    return fig


def _draw_clip(ax: Any, reader: SpectrogramStore, index: int, image: np.ndarray) -> None:
    config = reader.config
    start = float(reader.start[index])
    end = start + config.n_samples / config.sample_rate
    # Rows are equally spaced in mel, not in Hz: label a few rows with their frequency.
    ax.imshow(
        image,
        cmap="gray",
        vmin=0,
        vmax=255,
        aspect="auto",
        interpolation="nearest",
        extent=(start, end, config.n_bands - 0.5, -0.5),  # time in the file
    )
    ticks = np.linspace(0, config.n_bands - 1, 5).round().astype(int)
    ax.set_yticks(ticks, [_hz(f) for f in reader.mel_frequencies[ticks]])
    ax.set_xlabel("time in the file (s)", fontsize=8)
    ax.set_ylabel("frequency", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(f"{index}: {_shorten(reader.label(index))}", fontsize=8)


def _draw_histogram(ax: Any, reader: SpectrogramStore) -> None:
    """The stored histogram of every pixel that holds audio (no image is read), with the
    range of each statistic and how it spends the levels."""
    histogram = reader.histogram()
    held = np.flatnonzero(histogram.counts)
    # Drawn in bins of 1/16 log unit, wide enough to see (a spike at the floor included).
    group = BINS_PER_UNIT // DRAWN_BINS_PER_UNIT
    lo, hi = held[0] // group * group, (held[-1] // group + 1) * group
    counts = histogram.counts[lo:hi]
    counts = np.pad(counts, (0, hi - lo - len(counts))).reshape(-1, group).sum(axis=1)
    edges = (histogram.first + lo + group * np.arange(len(counts) + 1)) / BINS_PER_UNIT
    ax.stairs(counts, edges, color="0.3", fill=True)
    ax.set_yscale("log")
    styles = {
        "mean": ("tab:red", "--"),
        "extrema": ("tab:blue", ":"),
        "percentile": ("tab:green", "-."),
        "top-db": ("tab:purple", "-"),
        "band-moments": ("tab:orange", "none"),
    }
    for name, scale in reader.stats.ranges().items():
        colour, line = styles[name]
        if not scale.per_band and line != "none":
            for value in (scale.min, scale.max):
                ax.axvline(value, color=colour, linestyle=line, linewidth=1.2)
        f = reader.figures.get(name)
        span = "per band" if scale.per_band else f"{scale.min:.2f} .. {scale.max:.2f}"
        about = (
            f"{f.db_per_level:.2f} dB/level, {f.at_min:.1%} at min, {f.at_max:.1%} at max, "
            f"{f.levels_99} levels hold 99%"
            if f
            else "no usable range"
        )
        used = " (used)" if name == reader.used else ""
        ax.plot([], [], color=colour, linestyle=line, label=f"{name}{used}: {span}; {about}")
    clipped = reader.clipped_fraction
    note = f"; the run clipped {clipped:.2%} of all pixels" if clipped is not None else ""
    ax.set_title(
        f"log-mel values of the {histogram.total:,} pixels that hold audio, in bins of "
        f"1/{DRAWN_BINS_PER_UNIT}{note}",
        fontsize=9,
    )
    ax.set_xlabel("log(mel power + eps)")
    ax.set_ylabel("pixels")
    ax.margins(x=0.02)
    ax.legend(fontsize=7, loc="upper center", framealpha=0.85)


def _hz(f: float) -> str:
    return f"{f / 1000:.1f} kHz" if f >= 1000 else f"{f:.0f} Hz"


def _shorten(text: str, width: int = 40) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3) :]
