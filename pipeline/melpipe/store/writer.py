"""Writing a store: create its layout (:mod:`melpipe.store.schema`'s), write one batch's
chunks (tasks) or whole small arrays (the client), grow it for an append, and finish it.

An array tasks write is chunked by batch, so one task writes one whole chunk of it and no
two tasks ever touch the same stored object; every chunk is written, even one equal to
the fill value, so a missing chunk is always an error, never a value. Writes go through
a :class:`~melpipe.store.lock.Claim` and check first that the run still owns the store.
With :mod:`.opened`, the only modules that speak Zarr's API.
"""

from __future__ import annotations

import functools
import itertools
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import zarr

from melpipe.analysis import features
from melpipe.analysis.pixels import BINS_PER_UNIT, Histogram, histogram_grid
from melpipe.errors import StoreError
from melpipe.sources.discover import filesystem, utf8_safe
from melpipe.store import lock
from melpipe.store.opened import HISTOGRAM, checked_array, chunk_key, decoded, missing_chunks
from melpipe.store.schema import (
    ARRAYS,
    BY_NAME,
    CLIP_COORDINATES,
    LISTING,
    LOCK_FILE,
    PASS_1,
    RUN_STATE,
    SCRATCH,
    WINDOW_ARRAYS,
    ArraySpec,
    Batch,
    Sizes,
    Step,
    StoreAttrs,
    arrays_of,
    chunks_of,
    shape_of,
    store_entries,
)

# --- Writing: create, one batch's chunks, finish -------------------------------------------


def clear(claim: lock.Claim) -> None:
    """Remove what melpipe wrote at the claimed location, and only that.

    The lock file stays: it is what the claim holds. The plan has already refused a
    location holding anything else.
    """
    lock.check(claim)
    fs, path = filesystem(claim.url)
    # zarr.json last: a store cut short while being cleared is still known to be ours.
    for name in [*sorted(store_entries() - {LOCK_FILE, "zarr.json"}), "zarr.json"]:
        if fs.exists(f"{path}/{name}"):
            fs.rm(f"{path}/{name}", recursive=True)


def create(claim: lock.Claim, attrs: StoreAttrs, *, sizes: Sizes, batch_size: int) -> None:
    """Create the store in the claimed, empty location: the group with its attributes,
    the coordinates and the file arrays. The run state of its windows comes once they are
    laid out (:func:`create_windows`), the clip arrays once pass 1 has chosen the clips
    (:func:`create_clips`)."""
    lock.check(claim)
    group = zarr.create_group(claim.url, zarr_format=3, attributes=attrs.to_dict())
    config = attrs.config
    centres = features.band_centres(config)
    coordinates = {
        "mel": centres[::-1].copy(),  # row 0 is the highest band
        "frame": features.frame_times(config, config.n_frames),
    }
    for spec in [a for a in ARRAYS if a.rows != "clip"]:
        array = _create_array(group, spec, sizes, batch_size, config)
        if spec.step is Step.CREATE:
            array[:] = coordinates[spec.name]


def create_windows(claim: lock.Claim, windows: int, batch_size: int, scratch: bool) -> None:
    """Create (or create again) the run state of ``windows`` windows: the arrays of what
    pass 1 finds of them and, with ``scratch``, their log-mels."""
    lock.check(claim)
    group = zarr.open_group(claim.url, mode="r+", use_consolidated=False)
    config = StoreAttrs.from_dict(group.attrs.asdict()).config
    for spec in [*WINDOW_ARRAYS, SCRATCH] if scratch else WINDOW_ARRAYS:
        _create_array(group, spec, Sizes(0, 0, windows), batch_size, config, overwrite=True)
    _cached_arrays.cache_clear()


def create_clips(claim: lock.Claim, n_clips: int, batch_size: int) -> None:
    """Create (or create again, after an interrupted pass 1) the arrays of ``n_clips``
    clips."""
    lock.check(claim)
    group = zarr.open_group(claim.url, mode="r+", use_consolidated=False)
    config = StoreAttrs.from_dict(group.attrs.asdict()).config
    for spec in ARRAYS:
        if spec.rows == "clip":
            _create_array(group, spec, Sizes(n_clips, 0), batch_size, config, overwrite=True)
    _cached_arrays.cache_clear()  # the arrays of a store opened before are gone


def _create_array(
    group: zarr.Group,
    spec: ArraySpec,
    sizes: Sizes,
    batch_size: int,
    config: Any,
    *,
    overwrite: bool = False,
) -> zarr.Array:
    coordinates = {"coordinates": " ".join(CLIP_COORDINATES)} if spec.rows == "clip" else {}
    with warnings.catch_warnings():
        # Zarr warns that its variable-length bytes have no v3 specification yet: only the
        # listing has them, which the run that wrote it reads, and removes when it ends.
        warnings.simplefilter("ignore", zarr.errors.UnstableSpecificationWarning)
        return group.create_array(
            spec.name,
            shape=shape_of(spec, sizes, config),
            chunks=chunks_of(spec, sizes, batch_size, config),
            dtype=_DTYPES.get(spec.dtype, spec.dtype),
            fill_value=spec.fill,
            # Measured: zstd saved only 16% of the scratch log-mels' bytes (mantissas do not
            # compress) and made the array 1.6x slower to write and 3x slower to read.
            compressors="auto" if spec.compressed else None,
            dimension_names=spec.dims,
            attributes={
                "long_name": spec.description,
                **({"units": spec.units} if spec.units else {}),
                **({} if spec.name in CLIP_COORDINATES else coordinates),
                **(_histogram_grid(config) if spec.name == HISTOGRAM else {}),
            },
            # Every chunk is written, so that a missing one is known to be missing.
            config={"write_empty_chunks": True},
            overwrite=overwrite,
        )


_DTYPES: dict[str, Any] = {"str": str, "bytes": zarr.dtype.VariableLengthBytes()}


def _histogram_grid(config: Any) -> dict[str, int]:
    first, _ = histogram_grid(config.eps)
    return {"first_bin": first, "bins_per_unit": BINS_PER_UNIT}


def histogram_values(histogram: Histogram, config: Any) -> np.ndarray:
    """One source's row of the ``histogram`` array: the counts over the whole grid."""
    return histogram.on_grid(*histogram_grid(config.eps))[None]


def histogram_from(values: np.ndarray, config: Any) -> Histogram:
    """The histogram of the rows of the ``histogram`` array in ``values``, added."""
    first, _ = histogram_grid(config.eps)
    return Histogram(first, np.asarray(values, np.int64).reshape(-1, values.shape[-1]).sum(0))


def write(claim: lock.Claim, batch: Batch, values: Mapping[str, Any]) -> None:
    """Write one batch of clips: its chunk of each array pass 2 writes, the marker last.

    A batch that starts inside its chunk (an append's first, after the rows the store
    held) rewrites the chunk whole: the rows before it as they are stored, then its own.

    Raises
    ------
    StoreError
        The region is not exactly one chunk, which could let two tasks write parts of one
        chunk and silently lose one of the writes.
    RunLockedError
        Another run owns the store now.
    """
    lock.check(claim)
    specs = arrays_of(Step.IMAGES)
    arrays = _writable_arrays(claim, [s.name for s in specs], rows=batch.stop)
    for spec in specs:
        array = arrays[spec.name]
        value = _encode(spec, values[spec.name])
        held = batch.start % array.chunks[0]  # rows of the chunk before the batch's
        if held:
            value = np.concatenate([array[batch.start - held : batch.start], value])
        region = Batch(batch.index, batch.start - held, batch.stop)
        _check_region(array, region)
        array[region.start : region.stop] = value


def write_scratch(claim: lock.Claim, batch: Batch, logmel: np.ndarray) -> None:
    """Pass 1's log-mels for one batch of windows, one per window (NaN where it failed)."""
    lock.check(claim)
    arrays = _writable_arrays(claim, [SCRATCH.name])  # made after the survey read others
    if SCRATCH.name not in arrays:
        raise StoreError(f"Store {claim.url!r} has no scratch array to write to.")
    _check_region(arrays[SCRATCH.name], batch)
    arrays[SCRATCH.name][batch.start : batch.stop] = logmel


def read_scratch(claim: lock.Claim, rows: np.ndarray) -> np.ndarray:
    """The scratch log-mels of the windows at ``rows`` (ascending).

    Raises
    ------
    StoreError
        A chunk pass 1 should have written is missing: its rows would otherwise be read as
        the fill value, and turned into images of nothing.
    """
    arrays = _writable_arrays(claim, [SCRATCH.name])  # made after the survey read others
    if SCRATCH.name not in arrays:
        raise StoreError(f"Store {claim.url!r} has no scratch array to read from.")
    scratch = arrays[SCRATCH.name]
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    size = scratch.chunks[0]
    fs, path = filesystem(claim.url)
    for chunk in range(lo // size, (hi - 1) // size + 1):  # one look each: a batch's own
        if not fs.exists(f"{path}/{scratch.path}/{chunk_key(scratch, chunk)}"):
            raise StoreError(
                f"Store {claim.url!r} lacks pass 1's 'scratch' chunk for windows "
                f"{chunk * size}-{(chunk + 1) * size - 1}: its data is gone. Run again with "
                "`overwrite=True`."
            )
    region = np.asarray(scratch[lo:hi])
    return region if hi - lo == len(rows) else region[rows - lo]  # consecutive: no copy


def write_pass_1(claim: lock.Claim, batch: Batch, found: bytes) -> None:
    """What the pass-1 task of ``batch`` found, as one object (never empty)."""
    lock.check(claim)
    assert found, "an empty object reads as a missing one"
    fs, path = filesystem(claim.url)
    fs.makedirs(f"{path}/{PASS_1}", exist_ok=True)
    fs.pipe_file(f"{path}/{PASS_1}/{batch.index}", found)


def read_pass_1(claim: lock.Claim, batches: range) -> list[bytes]:
    """What the pass-1 tasks of ``batches`` found, as they wrote it.

    Raises
    ------
    StoreError
        One is missing: its windows' values would otherwise be lost.
    """
    fs, path = filesystem(claim.url)
    keys = [f"{path}/{PASS_1}/{index}" for index in batches]
    found = fs.cat(keys, on_error="omit") if keys else {}  # all at once, in parallel on S3
    missing = next((i for i, key in zip(batches, keys, strict=True) if not found.get(key)), None)
    if missing is not None:
        raise StoreError(
            f"Store {claim.url!r} lacks what pass 1 found of batch {missing}: its data is "
            "gone. Run again with `overwrite=True`."
        )
    return [found[key] for key in keys]


def write_listing(claim: lock.Claim, paths: Sequence[str]) -> None:
    """Make the run's listing anew (after a run stopped while writing it, say) and write
    ``paths`` into it, a chunk at a time: the paths of its files, by row in the run."""
    lock.check(claim)
    group = zarr.open_group(claim.url, mode="r+", use_consolidated=False)
    config = StoreAttrs.from_dict(group.attrs.asdict()).config
    sizes = Sizes(0, 0, listed=len(paths))
    array = _create_array(group, LISTING, sizes, 0, config, overwrite=True)
    _cached_arrays.cache_clear()
    _write_in_chunks(array, LISTING, paths)


def read_listing(claim: lock.Claim, files: np.ndarray) -> list[str]:
    """The paths of the run's files at rows ``files`` (ascending), from its listing.

    Raises
    ------
    StoreError
        A chunk of the listing is missing: its paths would read as "", which no file has.
    """
    if not len(files):
        return []
    listing = _writable_arrays(claim, [LISTING.name]).get(LISTING.name)
    if listing is None:
        raise StoreError(f"Store {claim.url!r} has no listing of its run's files to read.")
    lo, hi = int(files[0]), int(files[-1]) + 1
    region = np.asarray(listing[lo:hi])[np.asarray(files) - lo]
    paths = [bytes(p).decode("utf-8", "surrogateescape") for p in region]
    if "" in paths:
        raise StoreError(
            f"Store {claim.url!r} lacks part of its run's listing (rows {lo}-{hi - 1}): its "
            "data is gone. Run again with `overwrite=True`."
        )
    return paths


class Columns(Mapping[str, Any]):
    """Columns to write, each made only when asked for: the client then holds the one
    being written beside what they are made from, not all of them at once."""

    def __init__(self, made: Mapping[str, Callable[[], Any]]) -> None:
        self._made = dict(made)

    def __getitem__(self, name: str) -> Any:
        return self._made[name]()

    def __iter__(self) -> Iterator[str]:
        return iter(self._made)

    def __len__(self) -> int:
        return len(self._made)

    def with_values(self, values: Mapping[str, Any]) -> Columns:
        """These columns and ``values``, made already."""
        return Columns({**self._made, **{k: functools.partial(values.__getitem__, k)
                                          for k in values}})  # fmt: skip


def write_chosen(claim: lock.Claim, values: Mapping[str, Any]) -> None:
    """Write, whole, the arrays known once pass 1 is done and the clips are chosen: the
    windows' values, the file arrays and the clips' small values. Every array of that
    step must be given."""
    lock.check(claim)
    specs = arrays_of(Step.CHOSEN)
    arrays = _writable_arrays(claim, [s.name for s in specs])
    for spec in specs:
        array, value = arrays[spec.name], values[spec.name]
        assert len(value) == array.shape[0], f"{spec.name}: {len(value)} rows, not {array.shape[0]}"
        _write_in_chunks(array, spec, value)


def _write_in_chunks(array: zarr.Array, spec: ArraySpec, value: Any, start: int = 0) -> None:
    """Write ``value`` at rows ``start`` on, a chunk at a time, each encoded only as it is
    written: the client's peak is then one chunk's encoding, not a whole array's (its
    paths, as text, take a copy of every path)."""
    rows, stop = array.chunks[0], start + len(value)
    cuts = [start, *range((start // rows + 1) * rows, stop, rows), stop]
    for lo, hi in itertools.pairwise(cuts):
        if lo < hi:
            array[lo:hi] = _encode(spec, value[lo - start : hi - start])


def write_rows(claim: lock.Claim, starts: Mapping[str, int], values: Mapping[str, Any]) -> None:
    """Write what an append adds to the arrays the client writes (every array of
    :func:`write_chosen`'s step but the run state's): each from the row ``starts`` gives
    for its dimension (``clip``, ``file`` or ``source``) on, after :func:`grow`."""
    lock.check(claim)
    specs = [s for s in arrays_of(Step.CHOSEN) if s.rows != "window"]
    arrays = _writable_arrays(claim, [s.name for s in specs])
    for spec in specs:
        _write_in_chunks(arrays[spec.name], spec, values[spec.name], starts[spec.dims[0]])


def begin_append(claim: lock.Claim, committed: Sizes) -> None:
    """Make a finished store ready for an append: what an append killed before left (its
    run state, rows past the ``committed`` sizes) removed; the append's run state comes
    next (:func:`write_listing`, :func:`create_windows`). Nothing a reader of the store
    sees changes."""
    end_append(claim)
    group = zarr.open_group(claim.url, mode="r+", use_consolidated=False)
    _resize(group, committed, StoreAttrs.from_dict(group.attrs.asdict()).config)
    _cached_arrays.cache_clear()


def end_append(claim: lock.Claim) -> None:
    """Undo what :func:`begin_append` and a failed append did: the store as it was."""
    lock.check(claim)
    _remove_run_state(claim)
    _cached_arrays.cache_clear()


def _remove_run_state(claim: lock.Claim) -> None:
    """Remove the run state's arrays and the pass_1 objects, where they are."""
    fs, path = filesystem(claim.url)
    for name in [spec.name for spec in RUN_STATE] + [PASS_1]:
        if fs.exists(f"{path}/{name}"):
            fs.rm(f"{path}/{name}", recursive=True)


def grow(claim: lock.Claim, sizes: Sizes) -> None:
    """Give every array along clips, files or sources the lengths ``sizes`` gives. Only
    each array's own metadata changes: a reader goes by the store's consolidated metadata,
    which :func:`finish` writes last, so it sees the old lengths until then."""
    lock.check(claim)
    group = zarr.open_group(claim.url, mode="r+", use_consolidated=False)
    _resize(group, sizes, StoreAttrs.from_dict(group.attrs.asdict()).config)
    _cached_arrays.cache_clear()


def _resize(group: zarr.Group, sizes: Sizes, config: Any) -> None:
    for spec in ARRAYS:
        array = group[spec.name]
        assert isinstance(array, zarr.Array)
        shape = shape_of(spec, sizes, config)
        if spec.rows is not None and array.shape != shape:
            array.resize(shape)  # shrinking removes the chunks past the end, and only those


def read_chosen(claim: lock.Claim, names: Iterable[str]) -> dict[str, np.ndarray]:
    """Arrays :func:`write_chosen` wrote, for resuming after pass 1.

    Raises
    ------
    StoreError
        One is missing, or a chunk of it: the store cannot be resumed.
    """
    arrays = _writable_arrays(claim)
    values = {}
    for name in names:
        spec = BY_NAME[name]
        array = arrays.get(name)
        if array is None or missing_chunks(claim.url, array)[0]:
            raise StoreError(
                f"Store {claim.url!r} lacks its {name!r} array, or part of it, which its run "
                "keeps until it ends, so it cannot be resumed. Run again with `overwrite=True`."
            )
        values[name] = decoded(spec, array[:])
    return values


def put_attrs(claim: lock.Claim, attrs: StoreAttrs) -> None:
    """Replace the group's attributes, as the run that owns the store."""
    lock.check(claim)
    zarr.open_group(claim.url, mode="r+", use_consolidated=False).attrs.put(attrs.to_dict())


def finish(claim: lock.Claim, attrs: StoreAttrs) -> None:
    """The run's last writes: record the final attributes (a ``complete`` or ``failed``
    status), remove the run state, and consolidate the metadata for readers.

    The status comes first: a run stopped before it resumes with its run state whole (and
    finds nothing left to do), and one stopped after it leaves a finished store with some
    arrays that readers ignore and ``--overwrite`` removes.
    """
    lock.check(claim)
    put_attrs(claim, attrs)
    _remove_run_state(claim)
    _cached_arrays.cache_clear()  # the run state's arrays are gone
    with warnings.catch_warnings():
        # Zarr warns that consolidated metadata is not in the v3 spec yet; xarray and zarr
        # both read it, and without it xarray warns on every open instead.
        warnings.simplefilter("ignore", zarr.errors.ZarrUserWarning)
        zarr.consolidate_metadata(claim.url)


def _writable_arrays(
    claim: lock.Claim, needed: Iterable[str] = (), rows: int = 0
) -> dict[str, zarr.Array]:
    """The store's arrays, opened once per process; opened again when one ``needed`` was
    created since (the clip arrays), or is shorter than ``rows`` (it grew, in an append)."""
    needed = list(needed)
    arrays = _cached_arrays(claim.url, claim.attempt)
    if not set(needed) <= arrays.keys() or any(arrays[n].shape[0] < rows for n in needed):
        _cached_arrays.cache_clear()
        arrays = _cached_arrays(claim.url, claim.attempt)
    return arrays


@functools.lru_cache(maxsize=4)
def _cached_arrays(url: str, attempt: str) -> dict[str, zarr.Array]:
    # Measured: opening the group and its arrays for every batch cost about 7 ms, a tenth
    # of a batch's work. The attempt keys the cache, so a store made again at the same URL
    # is never written through arrays opened for the one it replaced.
    group = zarr.open_group(url, mode="r+", use_consolidated=False)
    names = [spec.name for spec in (*ARRAYS, *RUN_STATE) if spec.name in group]
    # Every chunk is written, even one equal to the fill value, so that a missing chunk
    # always means missing data. (A runtime setting: it is not stored with the array.)
    where = f"Store {url!r}"
    return {
        name: checked_array(group, BY_NAME[name], where).with_config({"write_empty_chunks": True})
        for name in names
    }


def _check_region(array: zarr.Array, batch: Batch) -> None:
    rows_per_chunk, n = array.chunks[0], array.shape[0]
    if batch.start % rows_per_chunk or batch.stop != min(batch.start + rows_per_chunk, n):
        raise StoreError(
            f"Region {batch.start}:{batch.stop} does not align with the store's chunks of "
            f"{rows_per_chunk} clips; refusing a write that could overlap another task's."
        )


def _encode(spec: ArraySpec, value: Any) -> Any:
    if spec.dtype == "bytes":  # text as the file system gives it
        return np.array([t.encode("utf-8", "surrogateescape") for t in value], dtype=object)
    if spec.dtype == "str":
        texts = [str(t) for t in value]
        try:  # the common case, every name UTF-8: one check for all, not one per name
            "\n".join(texts).encode("utf-8")
        except UnicodeEncodeError:
            texts = [utf8_safe(t) for t in texts]
        return np.array(texts, dtype=np.dtypes.StringDType())
    return np.asarray(value, dtype=spec.dtype)
