"""The Zarr store: its layout, its attributes, and the code that creates, writes and opens it.

Layout of a store at OUTPUT (a Zarr v3 group):

``images``   uint8 (clip, mel, frame), one chunk per batch
``mel``      float64 (mel,), each image row's mel band centre frequency in Hz (row 0 highest)
``frame``    float64 (frame,), each image column's frame centre time in seconds
``paths``    str (clip,), relative paths with "/" separators
``valid``    bool (clip,)
``errors``   str (clip,), "" for good rows, the reason for failed ones
``file_min``, ``file_max``   float32 (clip,), each file's log-mel extrema, NaN if failed
``clipped``  uint32 (clip,), pixels of each image that the scaling clipped

Every array is chunked by batch, so one task writes one whole chunk of each and no two
tasks ever touch the same stored object. Not sharded with one inner chunk per clip:
zarr-python spends about 0.15 ms per inner chunk, which made reading a batch 10 times and
writing it 6 times slower than one zstd chunk, and made one clip no faster to read.

The group's ``status`` attribute is ``"incomplete"`` from creation until the very last
write sets it to ``"complete"`` (and consolidates the metadata, so that readers such as
xarray open it in one read). An incomplete store can be resumed: its ``plan`` attribute
says what run made it, ``statistics`` holds pass 1's result once known, and a batch is
written when its chunk of ``paths``, always written last, is there.

OUTPUT may be a local path or an fsspec URL (``s3://bucket/x.zarr``); file-system
operations go through fsspec, and credentials come from the usual places (environment,
config files), never from arguments.
Reading clips is :mod:`pipeline.reader`'s job; it opens the arrays through :func:`open_arrays`.
"""

from __future__ import annotations

import datetime
import os
import warnings
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import zarr

from pipeline import features
from pipeline.config import SpectrogramConfig
from pipeline.discover import utf8_safe
from pipeline.errors import StoreError
from pipeline.plan import Batch
from pipeline.stats import GlobalStats

FORMAT = "specpipe"
FORMAT_VERSION = 2  # 2: one chunk per batch, coordinates, consolidated metadata, resume
FAILED_PIXEL = 255  # a failed row's image: all white, i.e. no energy
IMAGE_CONVENTIONS: dict[str, Any] = {
    "dtype": "uint8",
    "flipped": True,
    "inverted": True,
    "row_0": "highest mel band",
    "black": "most energy",
    "scaling": "clip(rint((logmel - min) / (max - min) * 255), 0, 255), flipped, then 255 - x",
    "failed_rows": "all 255 (no energy); valid is False",
}
# Written in this order; ``paths`` last, so that its chunk marks a batch as written.
PER_CLIP_ARRAYS = ("valid", "errors", "file_min", "file_max", "clipped", "paths")


def _url(store: str | os.PathLike[str]) -> str:
    return os.fspath(store)


def _fs(store: str | os.PathLike[str]) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(_url(store))
    return fs, path.rstrip("/")


def is_store(store: str | os.PathLike[str]) -> bool:
    fs, path = _fs(store)
    return bool(fs.isfile(f"{path}/zarr.json"))


def size_on_disk(store: str | os.PathLike[str]) -> int:
    """Bytes of every object of a store."""
    fs, path = _fs(store)
    return int(fs.du(path))


def check_writable(store: str | os.PathLike[str], *, overwrite: bool) -> None:
    """Refuse, before any work starts, an OUTPUT that is in the way.

    An existing store is replaced only with ``overwrite``; anything else at OUTPUT that is
    not a Zarr store is never deleted, since it may be a user's folder given by mistake.
    """
    fs, path = _fs(store)
    if not fs.exists(path):
        return
    if not is_store(store):
        raise StoreError(
            f"Output {str(store)!r} exists and is not a Zarr store; refusing to replace it. "
            "Choose a new path."
        )
    if not overwrite:
        raise StoreError(f"Output {str(store)!r} already exists. Pass --overwrite to replace it.")


def create(
    store: str | os.PathLike[str],
    *,
    n_files: int,
    batch_size: int,
    config: SpectrogramConfig,
    attrs: dict[str, Any],
) -> None:
    """Create an empty store, marked incomplete, replacing one already checked writable."""
    fs, path = _fs(store)
    if fs.exists(path):
        fs.rm(path, recursive=True)
    group = zarr.open_group(_url(store), mode="w-", zarr_format=3)
    group.attrs.put(
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "status": "incomplete",
            "config": config.to_dict(),
            "image": IMAGE_CONVENTIONS,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            **attrs,
        }
    )
    rows = min(batch_size, n_files)
    group.create_array(
        "images",
        shape=(n_files, *config.image_shape),
        chunks=(rows, *config.image_shape),
        dtype="uint8",
        fill_value=FAILED_PIXEL,
        dimension_names=("clip", "mel", "frame"),
    )
    per_clip: list[tuple[str, Any, Any]] = [
        ("paths", str, ""),
        ("valid", bool, False),
        ("errors", str, ""),
        ("file_min", "float32", np.nan),
        ("file_max", "float32", np.nan),
        ("clipped", "uint32", 0),
    ]
    # Coordinates, named after the dimensions they label, so xarray indexes by them.
    group.create_array(
        "mel",
        data=features.mel_band_centres(config)[::-1].copy(),
        dimension_names=("mel",),
        attributes={"units": "Hz", "long_name": "mel band centre frequency"},
    )
    group.create_array(
        "frame",
        data=features.frame_times(config),
        dimension_names=("frame",),
        attributes={"units": "s", "long_name": "frame centre time"},
    )
    for name, dtype, fill in per_clip:
        group.create_array(
            name,
            shape=(n_files,),
            chunks=(rows,),
            dtype=dtype,
            fill_value=fill,
            dimension_names=("clip",),
        )


@dataclass(frozen=True)
class Rows:
    """What one batch writes: one row per file."""

    images: np.ndarray
    paths: list[str]
    valid: np.ndarray
    errors: list[str]
    file_min: np.ndarray
    file_max: np.ndarray
    clipped: np.ndarray


def write_rows(store: str | os.PathLike[str], batch: Batch, rows: Rows) -> None:
    """Write one batch's rows; the region must be exactly one chunk of the arrays.

    Raises
    ------
    StoreError
        The region does not align with the store's chunks, which would let two tasks
        write parts of one chunk and silently lose one of the writes.
    """
    group = zarr.open_group(_url(store), mode="r+")
    images = _array(group, "images")
    rows_per_chunk, n = images.chunks[0], images.shape[0]
    if batch.start % rows_per_chunk or batch.stop != min(batch.start + rows_per_chunk, n):
        raise StoreError(
            f"Region {batch.start}:{batch.stop} does not align with the store's chunks of "
            f"{rows_per_chunk} clips; refusing a write that could overlap another task's."
        )
    region = slice(batch.start, batch.stop)
    images[region] = rows.images
    values = {
        "valid": rows.valid,
        "errors": _utf8_strings(rows.errors),
        "file_min": rows.file_min,
        "file_max": rows.file_max,
        "clipped": rows.clipped,
        "paths": _utf8_strings(rows.paths),
    }
    for name in PER_CLIP_ARRAYS:  # paths last: its chunk says the whole batch is there
        _array(group, name)[region] = values[name]


def _utf8_strings(texts: list[str]) -> np.ndarray:
    return np.array([utf8_safe(t) for t in texts], dtype=np.dtypes.StringDType())


def _array(group: zarr.Group, name: str) -> zarr.Array:
    node = group.get(name)
    if not isinstance(node, zarr.Array):
        raise StoreError(f"Store {group.store} has no array {name!r}: it is not a specpipe store.")
    return node


def finish(store: str | os.PathLike[str], attrs: dict[str, Any]) -> None:
    """Record the run's results and mark the store complete, as the last write of a run."""
    group = zarr.open_group(_url(store), mode="r+", use_consolidated=False)
    group.attrs.update({**attrs, "status": "complete"})
    with warnings.catch_warnings():
        # Zarr warns that consolidated metadata is not in the v3 spec yet; xarray and zarr
        # both read it, and without it xarray warns on every open instead.
        warnings.simplefilter("ignore", zarr.errors.ZarrUserWarning)
        zarr.consolidate_metadata(_url(store))


def record_statistics(store: str | os.PathLike[str], statistics: dict[str, Any]) -> None:
    """Keep pass 1's result in an incomplete store, so that a resumed run need not redo it."""
    group = zarr.open_group(_url(store), mode="r+", use_consolidated=False)
    group.attrs["statistics"] = statistics


def written_batches(store: str | os.PathLike[str], batches: list[Batch]) -> list[Batch]:
    """The batches whose rows an earlier run wrote completely."""
    paths = _array(zarr.open_group(_url(store), mode="r", use_consolidated=False), "paths")
    # Unwritten chunks read as the fill value "", and every written row has a path.
    starts = np.array([b.start for b in batches], dtype=np.int64)
    firsts = np.asarray(paths.get_coordinate_selection(starts))
    return [b for b, first in zip(batches, firsts.tolist(), strict=True) if first != ""]


def read_rows(
    store: str | os.PathLike[str], batch: Batch
) -> tuple[list[str], list[str], np.ndarray]:
    """Paths, errors and clipped-pixel counts of one written batch."""
    group = zarr.open_group(_url(store), mode="r", use_consolidated=False)
    region = slice(batch.start, batch.stop)
    return (
        [str(p) for p in np.asarray(_array(group, "paths")[region]).tolist()],
        [str(e) for e in np.asarray(_array(group, "errors")[region]).tolist()],
        np.asarray(_array(group, "clipped")[region]),
    )


def read_attrs(store: str | os.PathLike[str], *, require_complete: bool = True) -> dict[str, Any]:
    """The attributes of a specpipe store.

    Raises
    ------
    StoreError
        Nothing is there, it is not a specpipe store, or (with ``require_complete``) its run
        never finished.
    """
    if not is_store(store):
        raise StoreError(f"No Zarr store at {str(store)!r}.")
    attrs = dict(zarr.open_group(_url(store), mode="r").attrs)
    if attrs.get("format") != FORMAT:
        raise StoreError(f"{str(store)!r} is a Zarr store but not a specpipe store.")
    if attrs.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"Store {str(store)!r} has specpipe format version {attrs.get('format_version')!r}; "
            f"this version of specpipe reads version {FORMAT_VERSION}. Run preprocess again."
        )
    if require_complete and attrs.get("status") != "complete":
        raise StoreError(
            f"Store {str(store)!r} is unfinished (status {attrs.get('status')!r}): the run "
            "that wrote it stopped early. Run it again to replace it."
        )
    return attrs


def open_arrays(store: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, zarr.Array]]:
    """The attributes and the arrays of a finished store, opened read-only.

    Raises
    ------
    StoreError
        As :func:`read_attrs`, or an array of the layout is missing.
    """
    attrs = read_attrs(store)
    group = zarr.open_group(_url(store), mode="r")
    names = ("images", "mel", "frame", *PER_CLIP_ARRAYS)
    return attrs, {name: _array(group, name) for name in names}


def read_stats(store: str | os.PathLike[str]) -> tuple[SpectrogramConfig, GlobalStats, str]:
    """Config, statistics and the statistic used, of a finished store (for --stats-from)."""
    attrs = read_attrs(store)
    stats = attrs["stats"]
    return SpectrogramConfig.from_dict(attrs["config"]), GlobalStats.from_dict(stats), stats["used"]
