"""The Zarr store: its layout, its attributes, and the only code that calls Zarr's API.

Layout of a store at OUTPUT (a Zarr v3 group):

``images``   uint8 (clip, mel, frame), one inner chunk per clip, one shard per batch
``paths``    str (clip,), relative paths with "/" separators
``valid``    bool (clip,)
``errors``   str (clip,), "" for good rows, the reason for failed ones
``file_min``, ``file_max``   float32 (clip,), each file's log-mel extrema, NaN if failed

Every per-clip array is chunked by batch, so one task writes one whole shard or chunk of
each and no two tasks ever touch the same stored object. The group's ``status`` attribute
is ``"incomplete"`` from creation until the very last write sets it to ``"complete"``.
"""

from __future__ import annotations

import datetime
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from pipeline.config import SpectrogramConfig
from pipeline.discover import utf8_safe
from pipeline.errors import StoreError
from pipeline.plan import Batch
from pipeline.stats import GlobalStats

FORMAT = "specpipe"
FORMAT_VERSION = 1
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
PER_CLIP_ARRAYS = ("paths", "valid", "errors", "file_min", "file_max")


def _url(store: str | os.PathLike[str]) -> str:
    return os.fspath(store)


def is_store(store: str | os.PathLike[str]) -> bool:
    return (Path(store) / "zarr.json").is_file()


def check_writable(store: str | os.PathLike[str], *, overwrite: bool) -> None:
    """Refuse, before any work starts, an OUTPUT that is in the way.

    An existing store is replaced only with ``overwrite``; anything else at OUTPUT that is
    not a Zarr store is never deleted, since it may be a user's folder given by mistake.
    """
    path = Path(store)
    if not path.exists():
        return
    if not is_store(path):
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
    path = Path(store)
    if path.exists():
        shutil.rmtree(path)
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
        chunks=(1, *config.image_shape),
        shards=(rows, *config.image_shape),
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
    ]
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


def write_rows(store: str | os.PathLike[str], batch: Batch, rows: Rows) -> None:
    """Write one batch's rows; the region must be exactly one shard of ``images``.

    Raises
    ------
    StoreError
        The region does not align with the store's shards, which would let two tasks
        write parts of one shard and silently lose one of the writes.
    """
    # Measured: encoding a shard's inner chunks as one batch instead of one by one (zarr's
    # default) nearly halves the cost of a write. Scoped, so a user's zarr config is untouched.
    with zarr.config.set({"codec_pipeline.batch_size": max(len(batch), 1)}):
        group = zarr.open_group(_url(store), mode="r+")
        images = _array(group, "images")
        shard = images.shards[0] if images.shards else images.chunks[0]
        n = images.shape[0]
        if batch.start % shard or (batch.stop != min(batch.start + shard, n)):
            raise StoreError(
                f"Region {batch.start}:{batch.stop} does not align with the store's shards of "
                f"{shard} clips; refusing a write that could overlap another task's."
            )
        region = slice(batch.start, batch.stop)
        images[region] = rows.images
        _array(group, "paths")[region] = _utf8_strings(rows.paths)
        _array(group, "valid")[region] = rows.valid
        _array(group, "errors")[region] = _utf8_strings(rows.errors)
        _array(group, "file_min")[region] = rows.file_min
        _array(group, "file_max")[region] = rows.file_max


def _utf8_strings(texts: list[str]) -> np.ndarray:
    return np.array([utf8_safe(t) for t in texts], dtype=np.dtypes.StringDType())


def _array(group: zarr.Group, name: str) -> zarr.Array:
    node = group.get(name)
    if not isinstance(node, zarr.Array):
        raise StoreError(f"Store {group.store} has no array {name!r}: it is not a specpipe store.")
    return node


def finish(store: str | os.PathLike[str], attrs: dict[str, Any]) -> None:
    """Record the run's results and mark the store complete, as the last write of a run."""
    group = zarr.open_group(_url(store), mode="r+")
    group.attrs.update({**attrs, "status": "complete"})


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
    if require_complete and attrs.get("status") != "complete":
        raise StoreError(
            f"Store {str(store)!r} is unfinished (status {attrs.get('status')!r}): the run "
            "that wrote it stopped early. Run it again to replace it."
        )
    return attrs


def read_stats(store: str | os.PathLike[str]) -> tuple[SpectrogramConfig, GlobalStats, str]:
    """Config, statistics and the statistic used, of a finished store (for --stats-from)."""
    attrs = read_attrs(store)
    stats = attrs["stats"]
    return SpectrogramConfig.from_dict(attrs["config"]), GlobalStats.from_dict(stats), stats["used"]
