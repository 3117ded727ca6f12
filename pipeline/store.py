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
``scratch``  float32 (clip, mel, frame), during a run only: pass 1's log-mels, which
             pass 2 scales instead of computing them again; removed before completion

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
import functools
import os
import uuid
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
SCRATCH = "scratch"
SCRATCH_WRITES = ("valid", "errors", "file_min", "file_max")  # written by pass 1 with it


@dataclass(frozen=True)
class Target:
    """The store a run writes, as its tasks name it: where, and which run created it."""

    url: str
    run_id: str


Writable = str | os.PathLike[str] | Target


def _url(store: Writable) -> str:
    return store.url if isinstance(store, Target) else os.fspath(store)


def _writable_arrays(store: Writable) -> dict[str, zarr.Array]:
    """The store's arrays opened for writing; per process and run, they are opened once."""
    if isinstance(store, Target):
        return _cached_arrays(store)
    return _open_writable(_url(store))


@functools.lru_cache(maxsize=4)
def _cached_arrays(target: Target) -> dict[str, zarr.Array]:
    # Measured: opening the group and its arrays for every batch cost about 7 ms, a tenth
    # of a batch's work. The run id keys the cache, so a store made again at the same URL
    # is never written through arrays opened for the one it replaced.
    return _open_writable(target.url)


def _open_writable(url: str) -> dict[str, zarr.Array]:
    group = zarr.open_group(url, mode="r+", use_consolidated=False)
    names = ["images", *PER_CLIP_ARRAYS]
    if SCRATCH in group:
        names.append(SCRATCH)
    return {name: _array(group, name) for name in names}


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
    scratch: bool = False,
) -> Target:
    """Create an empty store, marked incomplete, replacing one already checked writable.

    With ``scratch``, also the temporary array of pass 1's log-mels. Returns the target
    that the run's tasks write to.
    """
    run_id = uuid.uuid4().hex
    fs, path = _fs(store)
    if fs.exists(path):
        fs.rm(path, recursive=True)
    group = zarr.open_group(_url(store), mode="w-", zarr_format=3)
    group.attrs.put(
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "status": "incomplete",
            "run_id": run_id,
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
    if scratch:
        group.create_array(
            SCRATCH,
            shape=(n_files, *config.image_shape),
            chunks=(rows, *config.image_shape),
            dtype="float32",
            fill_value=np.nan,
            # Measured: zstd saved only 16% of this array's bytes (log-mel mantissas do not
            # compress) and made it 1.6x slower to write and 3x slower to read.
            compressors=None,
            dimension_names=("clip", "mel", "frame"),
        )
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
    return Target(_url(store), run_id)


@dataclass(frozen=True)
class Analysis:
    """One batch analysed: log-mels of the files that decoded, the reasons of those that
    did not, and per-file extrema. Pass 1 keeps it in the scratch array."""

    logmel: np.ndarray  # (n_valid, n_mels, n_frames) float32
    valid: np.ndarray
    errors: list[str]
    file_min: np.ndarray
    file_max: np.ndarray


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


def write_rows(store: Writable, batch: Batch, rows: Rows, *, after_scratch: bool = False) -> None:
    """Write one batch's rows; the region must be exactly one chunk of the arrays.

    ``after_scratch``: pass 1 already wrote the arrays that do not depend on the statistics
    (see :func:`write_scratch`), so only images, clipped counts and paths are written.

    Raises
    ------
    StoreError
        The region does not align with the store's chunks, which would let two tasks
        write parts of one chunk and silently lose one of the writes.
    """
    arrays = _writable_arrays(store)
    images = arrays["images"]
    _check_region(images, batch)
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
    skipped = SCRATCH_WRITES if after_scratch else ()
    for name in PER_CLIP_ARRAYS:  # paths last: its chunk says the whole batch is there
        if name not in skipped:
            arrays[name][region] = values[name]


def _check_region(array: zarr.Array, batch: Batch) -> None:
    rows_per_chunk, n = array.chunks[0], array.shape[0]
    if batch.start % rows_per_chunk or batch.stop != min(batch.start + rows_per_chunk, n):
        raise StoreError(
            f"Region {batch.start}:{batch.stop} does not align with the store's chunks of "
            f"{rows_per_chunk} clips; refusing a write that could overlap another task's."
        )


def _utf8_strings(texts: list[str]) -> np.ndarray:
    return np.array([utf8_safe(t) for t in texts], dtype=np.dtypes.StringDType())


def _array(group: zarr.Group, name: str) -> zarr.Array:
    node = group.get(name)
    if not isinstance(node, zarr.Array):
        raise StoreError(f"Store {group.store} has no array {name!r}: it is not a specpipe store.")
    return node


def finish(store: str | os.PathLike[str], attrs: dict[str, Any]) -> None:
    """Remove the scratch array, record the run's results and mark the store complete, as
    the last write of a run."""
    fs, path = _fs(store)
    if fs.exists(f"{path}/{SCRATCH}"):
        fs.rm(f"{path}/{SCRATCH}", recursive=True)
    group = zarr.open_group(_url(store), mode="r+", use_consolidated=False)
    group.attrs.update({**attrs, "status": "complete"})
    with warnings.catch_warnings():
        # Zarr warns that consolidated metadata is not in the v3 spec yet; xarray and zarr
        # both read it, and without it xarray warns on every open instead.
        warnings.simplefilter("ignore", zarr.errors.ZarrUserWarning)
        zarr.consolidate_metadata(_url(store))


def write_scratch(store: Writable, batch: Batch, pass1: Analysis) -> None:
    """Write pass 1's results for one batch: its log-mels and the per-file arrays that do
    not depend on the statistics."""
    arrays = _writable_arrays(store)
    if SCRATCH not in arrays:
        raise StoreError(f"Store {_url(store)!r} has no scratch array to write to.")
    _check_region(arrays[SCRATCH], batch)
    region = slice(batch.start, batch.stop)
    if pass1.valid.all():  # the common case: no copy of the batch's log-mels
        logmel = pass1.logmel
    else:
        logmel = np.full((len(batch), *pass1.logmel.shape[1:]), np.nan, dtype=np.float32)
        logmel[pass1.valid] = pass1.logmel
    arrays[SCRATCH][region] = logmel
    values = {
        "valid": pass1.valid,
        "errors": _utf8_strings(pass1.errors),
        "file_min": pass1.file_min,
        "file_max": pass1.file_max,
    }
    for name in SCRATCH_WRITES:
        arrays[name][region] = values[name]


def read_scratch(store: Writable, batch: Batch) -> Analysis:
    """What :func:`write_scratch` wrote for one batch."""
    arrays = _writable_arrays(store)
    if SCRATCH not in arrays:
        raise StoreError(
            f"Store {_url(store)!r} has no scratch array: pass 1's log-mels are gone. "
            "Run again with --overwrite."
        )
    region = slice(batch.start, batch.stop)
    valid = np.asarray(arrays["valid"][region], dtype=bool)
    return Analysis(
        logmel=np.asarray(arrays[SCRATCH][region])[valid],
        valid=valid,
        errors=[str(e) for e in np.asarray(arrays["errors"][region]).tolist()],
        file_min=np.asarray(arrays["file_min"][region]),
        file_max=np.asarray(arrays["file_max"][region]),
    )


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
    store: str | os.PathLike[str], batches: list[Batch]
) -> list[tuple[list[str], list[str], np.ndarray]]:
    """Paths, errors and clipped-pixel counts of each written batch."""
    group = zarr.open_group(_url(store), mode="r", use_consolidated=False)
    paths, errors, clipped = (_array(group, n) for n in ("paths", "errors", "clipped"))
    rows = []
    for batch in batches:
        region = slice(batch.start, batch.stop)
        rows.append(
            (
                [str(p) for p in np.asarray(paths[region]).tolist()],
                [str(e) for e in np.asarray(errors[region]).tolist()],
                np.asarray(clipped[region]),
            )
        )
    return rows


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
