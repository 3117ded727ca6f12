"""The Zarr store: the only module that speaks Zarr's API.

The layout is :mod:`melpipe.store.schema`'s; this module creates it, writes one batch's chunks
(tasks) or whole small arrays (the client), reads them back, and checks a store on
opening. An array tasks write is chunked by batch, so one task writes one whole chunk of
it and no two tasks ever touch the same stored object; every chunk is written, even one
equal to the fill value, so a missing chunk is always an error, never a value. Writes go
through a :class:`~melpipe.store.lock.Claim` and check first that the run still owns the store.

OUTPUT may be a local path or an fsspec URL (``s3://bucket/x.zarr``); file-system
operations go through fsspec, and credentials come from the usual places (environment,
config files), never from arguments.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from melpipe.analysis import features
from melpipe.analysis.stats import BINS_PER_UNIT, Histogram, histogram_grid
from melpipe.errors import ArgumentError, MelpipeError, StoreError
from melpipe.sources.discover import filesystem, utf8_safe
from melpipe.store import lock
from melpipe.store.schema import (
    ARRAYS,
    BY_NAME,
    CLIP_COORDINATES,
    FORMAT,
    FORMER_FORMAT,
    LOCK_FILE,
    LOCK_FILES,
    MARKER,
    RUN_STATE,
    SCRATCH,
    WINDOW_ARRAYS,
    ArraySpec,
    Batch,
    OutputState,
    Sizes,
    Step,
    StoreAttrs,
    arrays_of,
    chunks_of,
    shape_of,
    store_entries,
)

# --- What is at OUTPUT --------------------------------------------------------------------


def inspect(url: str, *, written: bool = True) -> OutputState:
    """What is at ``url``, read without changing anything; for melpipe's own stores, their
    attributes as recorded and (with ``written``) the batches already written."""
    fs, path = filesystem(url)
    if not fs.exists(path):
        return OutputState("absent")
    if not fs.isdir(path):
        return OutputState("folder", problem="it is a file")
    entries = tuple(sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)))
    links = [e for e in entries if fs.islink(f"{path}/{e}")] if _is_local(fs) else []
    if links:  # a store melpipe wrote holds none: a link is someone's, and leads elsewhere
        return OutputState("folder", entries, problem=f"{links[0]!r} in it is a link")
    if "zarr.json" not in entries:
        return OutputState("leftover" if set(entries) <= LOCK_FILES else "folder", entries)
    try:
        metadata = json.loads(fs.cat_file(f"{path}/zarr.json"))
        attrs = metadata.get("attributes", {}) if metadata.get("node_type") == "group" else {}
    except (ValueError, AttributeError) as exc:
        return OutputState("damaged", entries, problem=f"its zarr.json is not valid JSON ({exc})")
    if attrs.get("format") not in (FORMAT, FORMER_FORMAT):
        return OutputState("zarr", entries)
    batches = tuple(sorted(_written_batches(url))) if written and MARKER in entries else ()
    return OutputState("melpipe", entries, attrs, batches)


def _is_local(fs: Any) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def _written_batches(url: str) -> set[int]:
    """The batches of clips pass 2 wrote: those whose chunk of the marker array is stored.
    A marker array that cannot be opened counts as none written: they are written again."""
    try:
        marker = zarr.open_array(url, path=MARKER, mode="r")
    except Exception:  # each store and Zarr version raises its own errors for a bad node
        return set()
    return _stored_chunks(url, marker)


def _stored_chunks(url: str, array: zarr.Array) -> set[int]:
    """Indices along the rows of the chunks of ``array``, of the store at ``url``, that are
    stored. Every array here is chunked along its rows only, whole along the others.

    The work is bounded by what is stored, never by the shape the metadata claims (an
    altered shape of 2**44 rows must not build a set of every index): each stored object's
    first number is a candidate row index, and it is one only if the array's own metadata
    encodes that index to exactly that key.
    """
    fs, path = filesystem(url)
    folder = f"{path}/{array.path}".rstrip("/")  # an array at the store's root has no path
    n_chunks = array.cdata_shape[0]
    found = set()
    for stored in fs.find(folder):
        key = stored[len(folder) + 1 :]
        first = _FIRST_NUMBER.search(key)
        if first and int(first.group()) < n_chunks and _chunk_key(array, int(first.group())) == key:
            found.add(int(first.group()))
    return found


_FIRST_NUMBER = re.compile(r"\d+")


def _missing_chunks(url: str, array: zarr.Array, first: int = 3) -> tuple[int, list[int]]:
    """How many chunks along the rows of ``array`` are not stored, and the ``first`` of
    them, found in at most as many steps as chunks are stored, plus ``first``."""
    stored = _stored_chunks(url, array)
    n_missing = array.cdata_shape[0] - len(stored)
    missing = list(itertools.islice((i for i in itertools.count() if i not in stored), first))
    return n_missing, missing[: min(first, n_missing)]


def _chunk_key(array: zarr.Array, index: int) -> str:
    """The key, relative to the array, of its chunk ``index`` along the rows, as the
    array's own metadata encodes it."""
    return array.metadata.encode_chunk_key((index, *[0] * (array.ndim - 1)))


def size_on_disk(url: str | os.PathLike[str]) -> int:
    """Bytes of every object of a store."""
    fs, path = filesystem(url)
    return int(fs.du(path))


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


def create(
    claim: lock.Claim, attrs: StoreAttrs, *, sizes: Sizes, batch_size: int, scratch: bool
) -> None:
    """Create the store in the claimed, empty location: the group with its attributes,
    the coordinates, the file arrays and the run state of ``sizes.windows`` windows (with
    ``scratch``, their log-mels too). The clip arrays come once pass 1 has chosen the
    clips (:func:`create_clips`)."""
    lock.check(claim)
    group = zarr.create_group(claim.url, zarr_format=3, attributes=attrs.to_dict())
    config = attrs.config
    centres = features.band_centres(config)
    coordinates = {
        "mel": centres[::-1].copy(),  # row 0 is the highest band
        "frame": features.frame_times(config, config.n_frames),
    }
    specs = [a for a in ARRAYS if a.rows != "clip"] + [*WINDOW_ARRAYS]
    for spec in [*specs, SCRATCH] if scratch else specs:
        array = _create_array(group, spec, sizes, batch_size, config)
        if spec.step is Step.CREATE:
            array[:] = coordinates[spec.name]


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
    return group.create_array(
        spec.name,
        shape=shape_of(spec, sizes, config),
        chunks=chunks_of(spec, sizes, batch_size, config),
        dtype=str if spec.dtype == "str" else spec.dtype,
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


HISTOGRAM = "histogram"


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
    arrays = _writable_arrays(claim)
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
    arrays = _writable_arrays(claim)
    if SCRATCH.name not in arrays:
        raise StoreError(f"Store {claim.url!r} has no scratch array to read from.")
    scratch = arrays[SCRATCH.name]
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    size = scratch.chunks[0]
    fs, path = filesystem(claim.url)
    for chunk in range(lo // size, (hi - 1) // size + 1):  # one look each: a batch's own
        if not fs.exists(f"{path}/{scratch.path}/{_chunk_key(scratch, chunk)}"):
            raise StoreError(
                f"Store {claim.url!r} lacks pass 1's 'scratch' chunk for windows "
                f"{chunk * size}-{(chunk + 1) * size - 1}: its data is gone. Run again with "
                "`overwrite=True`."
            )
    region = np.asarray(scratch[lo:hi])
    return region if hi - lo == len(rows) else region[rows - lo]  # consecutive: no copy


def write_chosen(claim: lock.Claim, values: Mapping[str, Any]) -> None:
    """Write, whole, the arrays known once pass 1 is done and the clips are chosen: the
    windows' values, the file arrays and the clips' small values. Every array of that
    step must be given."""
    lock.check(claim)
    specs = arrays_of(Step.CHOSEN)
    arrays = _writable_arrays(claim, [s.name for s in specs])
    for spec in specs:
        arrays[spec.name][:] = _encode(spec, values[spec.name])


def write_rows(claim: lock.Claim, starts: Mapping[str, int], values: Mapping[str, Any]) -> None:
    """Write what an append adds to the arrays the client writes (every array of
    :func:`write_chosen`'s step but the run state's): each from the row ``starts`` gives
    for its dimension (``clip``, ``file`` or ``source``) on, after :func:`grow`."""
    lock.check(claim)
    specs = [s for s in arrays_of(Step.CHOSEN) if s.rows != "window"]
    arrays = _writable_arrays(claim, [s.name for s in specs])
    for spec in specs:
        value = _encode(spec, values[spec.name])
        lo = starts[spec.dims[0]]
        arrays[spec.name][lo : lo + len(value)] = value


def begin_append(claim: lock.Claim, committed: Sizes, windows: int, scratch: bool) -> None:
    """Make a finished store ready for an append of ``windows`` windows: what an append
    killed before left (its run state, rows past the ``committed`` sizes) removed, and
    the run state made anew. Nothing a reader of the store sees changes."""
    end_append(claim)
    group = zarr.open_group(claim.url, mode="r+", use_consolidated=False)
    config = StoreAttrs.from_dict(group.attrs.asdict()).config
    _resize(group, committed, config)
    images = group["images"]
    assert isinstance(images, zarr.Array)  # the store was checked on opening
    batch = int(images.chunks[0])
    for spec in [*WINDOW_ARRAYS, SCRATCH] if scratch else WINDOW_ARRAYS:
        _create_array(group, spec, Sizes(0, 0, windows), batch, config)
    _cached_arrays.cache_clear()


def end_append(claim: lock.Claim) -> None:
    """Undo what :func:`begin_append` and a failed append did: the store as it was."""
    lock.check(claim)
    fs, path = filesystem(claim.url)
    for spec in RUN_STATE:
        if fs.exists(f"{path}/{spec.name}"):
            fs.rm(f"{path}/{spec.name}", recursive=True)
    _cached_arrays.cache_clear()


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
        if array is None or _missing_chunks(claim.url, array)[0]:
            raise StoreError(
                f"Store {claim.url!r} lacks its {name!r} array, or part of it, which its run "
                "keeps until it ends, so it cannot be resumed. Run again with `overwrite=True`."
            )
        values[name] = _decode(spec, array[:])
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
    fs, path = filesystem(claim.url)
    for spec in RUN_STATE:
        if fs.exists(f"{path}/{spec.name}"):
            fs.rm(f"{path}/{spec.name}", recursive=True)
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
        name: _checked_array(group, BY_NAME[name], where).with_config({"write_empty_chunks": True})
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
    if spec.dtype == "str":
        return np.array([utf8_safe(str(t)) for t in value], dtype=np.dtypes.StringDType())
    return np.asarray(value, dtype=spec.dtype)


def _decode(spec: ArraySpec, value: Any) -> np.ndarray:
    if spec.dtype == "str":
        return np.asarray(value, dtype=object)
    return np.asarray(value)


# --- Reading a finished store -------------------------------------------------------------


class ReadableStore:
    """A finished store opened read-only, checked against its schema.

    On opening: the attributes parse, every array of the layout is there with the dtype
    and shape the config and the clip count give, the counts agree with ``valid``, and
    (with ``check_chunks``) every chunk exists.

    Raises
    ------
    StoreError
        Nothing is there, it is not a melpipe store, its run did not finish, or any of the
        checks above fails; the message names the store and what is wrong.
    """

    def __init__(self, url: str | os.PathLike[str], *, check_chunks: bool = True) -> None:
        self.url = os.fspath(url)
        state = inspect(self.url, written=False)
        where = f"Store {self.url!r}"
        if state.kind in ("absent", "leftover", "folder"):
            raise StoreError(f"No Zarr store at {self.url!r}.")
        if state.kind == "damaged":
            raise StoreError(f"{where} is damaged: {state.problem}. Run preprocess again.")
        if state.kind == "zarr":
            raise StoreError(f"{where} is a Zarr store but not a melpipe store.")
        assert state.attrs is not None  # a melpipe store's attributes were read
        self.attrs = StoreAttrs.from_dict(state.attrs, where)
        if self.attrs.status == "failed":
            raise StoreError(
                f"{where} is unfinished: the run that wrote it failed: {self.attrs.failure} "
                "Change the input or parameters and run preprocess with `overwrite=True`."
            )
        if self.attrs.status != "complete":
            raise StoreError(
                f"{where} is unfinished: the run that wrote it stopped early. Run the same "
                "command again to resume it."
            )
        group = zarr.open_group(self.url, mode="r")
        self._arrays = {spec.name: _checked_array(group, spec, where) for spec in ARRAYS}
        self.sizes = Sizes(
            clips=int(self._arrays["images"].shape[0]),
            files=int(self._arrays["path"].shape[0]),
            sources=len(self.attrs.sources),
        )
        self.n_clips = self.sizes.clips
        self.chunk_length = int(self._arrays["images"].chunks[0])
        self._check_layout(where)
        if check_chunks:
            self._check_chunks(where)
        self._check_counts(where)
        self._check_scale(where)
        self._decoder = _fast_chunk_decoder(self._arrays["images"])

    def _check_layout(self, where: str) -> None:
        config = self.attrs.config
        counts = self.attrs.counts
        assert counts is not None  # a complete store's attributes are checked to have them
        if (counts.files, counts.clips) != (self.sizes.files, self.sizes.clips):
            raise StoreError(
                f"{where} records {counts.files} files and {counts.clips} clips, but its "
                f"arrays hold {self.sizes.files} files and {self.sizes.clips} clips. The "
                "store was altered; run preprocess again."
            )
        for spec in ARRAYS:
            array = self._arrays[spec.name]
            expected = shape_of(spec, self.sizes, config)
            chunks = chunks_of(spec, self.sizes, self.chunk_length, config)
            if array.shape != expected or array.chunks != chunks:
                raise StoreError(
                    f"{where}: array {spec.name!r} has shape {array.shape} in chunks "
                    f"{array.chunks}, where its config gives {expected} in chunks {chunks}. "
                    "The store was altered; run preprocess again."
                )

    def _check_scale(self, where: str) -> None:
        """The statistic that scaled the images must give a usable range: it is what
        undoes the scaling, and what a store scaled with this one's statistics uses."""
        record = self.attrs.stats
        assert record is not None  # a complete store's attributes are checked to have them
        scale = record.values.scale(record.used)
        if not scale.usable:
            raise StoreError(
                f"{where} records {record.used!r} statistics that cannot have scaled its "
                f"images ({scale.describe()}): they were altered. Run preprocess again."
            )

    def _check_counts(self, where: str) -> None:
        counts = self.attrs.counts
        assert counts is not None  # a complete store's attributes are checked to have them
        decoded = int(np.count_nonzero(self.read("decoded")))
        found = (self.sizes.files, decoded, self.sizes.clips)
        if (counts.files, counts.decoded, counts.clips) != found:
            raise StoreError(
                f"{where} records {counts.files} files, {counts.decoded} decoded, "
                f"{counts.clips} clips, but holds {found[0]} files, {found[1]} decoded, "
                f"{found[2]} clips. The store was altered; run preprocess again."
            )

    def _check_chunks(self, where: str) -> None:
        for spec in ARRAYS:
            if spec.rows is None:
                continue
            array = self._arrays[spec.name]
            n, size = array.shape[0], array.chunks[0]
            n_missing, missing = _missing_chunks(self.url, array)
            if n_missing:
                rows = [f"{i * size}-{min((i + 1) * size, n) - 1}" for i in missing]
                raise StoreError(
                    f"{where} lacks {n_missing} chunk(s) of {spec.name!r} ({spec.rows}s "
                    f"{', '.join(rows)}{', ...' if n_missing > 3 else ''}): that data is "
                    "gone. Run preprocess again."
                )

    def read(self, name: str) -> np.ndarray:
        """A whole clip, file or coordinate array (strings as Python objects)."""
        with self._decoding(name):
            return _decode(BY_NAME[name], self._arrays[name][:])

    def histogram(self, sources: slice = slice(None)) -> Histogram:
        """The histogram of the pixels that hold audio of the clips of ``sources`` (rows
        of the sources table; default all)."""
        array = self._arrays[HISTOGRAM]
        first = array.attrs.get("first_bin")
        if not isinstance(first, int):
            raise StoreError(f"Store {self.url!r}'s histogram lacks its first_bin attribute.")
        return Histogram(first, np.asarray(array[sources], np.int64).sum(axis=0))

    def read_images(self, lo: int, hi: int, out: np.ndarray) -> None:
        """Decode images ``lo:hi`` (within one chunk) into ``out``, uint8 of shape
        ``(hi - lo, n_mels, n_frames)``."""
        from zarr.buffer.cpu import NDBuffer

        images = self._arrays["images"]
        with self._decoding("images", lo // images.chunks[0]):
            images.get_basic_selection(slice(lo, hi), out=NDBuffer.from_numpy_array(out))

    @contextlib.contextmanager
    def _decoding(self, name: str, chunk: int | None = None) -> Iterator[None]:
        """Zarr's errors for data that does not decode as the store's own, naming it."""
        try:
            yield
        except MelpipeError:
            raise
        except Exception as exc:  # each codec and store raises its own errors
            raise _undecodable(f"Store {self.url!r}", name, chunk, exc) from None

    def read_chunk(self, index: int, out: np.ndarray) -> bool:
        """Decode chunk ``index`` of ``images`` whole into ``out`` without going through
        Zarr, when this store allows it (a local store in melpipe's own encoding); False
        when it does not, and :meth:`read_images` must be used instead."""
        return self._decoder is not None and self._decoder(index, out)

    def size_on_disk(self) -> int:
        return size_on_disk(self.url)


def _checked_array(group: zarr.Group, spec: ArraySpec, where: str) -> zarr.Array:
    node = group.get(spec.name)
    if not isinstance(node, zarr.Array):
        raise StoreError(f"{where} has no array {spec.name!r}: it is not a whole melpipe store.")
    expected = np.dtypes.StringDType() if spec.dtype == "str" else np.dtype(spec.dtype)
    if node.dtype != expected:
        raise StoreError(
            f"{where}: array {spec.name!r} holds {node.dtype}, not {expected}. The store was "
            "altered; run preprocess again."
        )
    return node


def _fast_chunk_decoder(images: zarr.Array) -> Callable[[int, np.ndarray], bool] | None:
    """A function that decodes one whole chunk of ``images`` into a buffer, or None.

    Given for a local store holding the layout melpipe writes (chunks of whole uint8
    images, encoded as bytes, then zstd): it reads the chunk's file and decodes it with
    numcodecs' Zstd, the decoder Zarr's own ZstdCodec calls, without Zarr's asynchronous
    machinery around it. Measured in a DataLoader worker, that machinery cost more than
    the decoding (docs/benchmarks.md). For any other store or encoding, None: reads go
    through Zarr. What it relies on in Zarr's internals is checked by
    ``tests/test_store.py::test_the_fast_chunk_path_relies_on_what_zarr_provides``.

    It checks what Zarr's own path checks: that the chunk decodes, and to exactly a
    chunk's bytes (zstd decodes a shorter frame into a larger buffer without a word). A
    frame whose header does not say its size is left to Zarr: the function returns False.
    """
    from numcodecs import Zstd
    from zarr.codecs import BytesCodec, ZstdCodec
    from zarr.core.metadata import ArrayV3Metadata
    from zarr.storage import LocalStore

    metadata = images.metadata
    if (
        not isinstance(images.store, LocalStore)
        or not isinstance(metadata, ArrayV3Metadata)
        or images.dtype != np.uint8
        or images.chunks[1:] != images.shape[1:]  # a chunk is whole images
        or [type(codec) for codec in metadata.codecs] != [BytesCodec, ZstdCodec]
    ):
        return None
    directory = Path(images.store.root) / images.path
    zstd = Zstd()
    chunk_shape = images.chunks

    where = f"Store {str(directory.parent)!r}"

    def decode(chunk: int, out: np.ndarray) -> bool:
        if out.shape != chunk_shape:
            raise ArgumentError(f"A chunk of {chunk_shape} cannot be decoded into {out.shape}.")
        try:
            encoded = (directory / _chunk_key(images, chunk)).read_bytes()
        except FileNotFoundError:
            raise StoreError(
                f"{where} lacks chunk {chunk} of its images: that data is gone. Run "
                "preprocess again."
            ) from None
        size = zstd_content_size(encoded)
        if size is None:
            return False
        if size != out.nbytes:
            raise _wrong_size(where, chunk, size, out)
        try:
            zstd.decode(encoded, out=out)
        except (RuntimeError, ValueError) as exc:
            raise _undecodable(where, "images", chunk, exc) from None
        return True

    return decode


def zstd_content_size(frame: bytes) -> int | None:
    """The decoded size in bytes that a zstd frame's header declares, or None where it
    does not declare one (RFC 8878, section 3.1.1.1: the frame header descriptor, then
    the window descriptor, dictionary id and frame content size fields)."""
    if len(frame) < 5 or frame[:4] != b"\x28\xb5\x2f\xfd":
        return None
    descriptor = frame[4]
    single_segment = (descriptor >> 5) & 1
    size_bytes = (single_segment, 2, 4, 8)[descriptor >> 6]
    if size_bytes == 0:
        return None
    start = 5 + (1 - single_segment) + (0, 1, 2, 4)[descriptor & 3]
    field = frame[start : start + size_bytes]
    if len(field) < size_bytes:
        return None
    return int.from_bytes(field, "little") + (256 if size_bytes == 2 else 0)


def _wrong_size(where: str, chunk: int, size: int, out: np.ndarray) -> StoreError:
    n, n_mels, n_frames = out.shape
    return StoreError(
        f"{where}: chunk {chunk} of 'images' holds {size} bytes, where a chunk of {n} images "
        f"of {n_mels} x {n_frames} holds {out.nbytes}: it was altered or comes from another "
        "store. Run preprocess again."
    )


def _undecodable(where: str, name: str, chunk: int | None, exc: BaseException) -> StoreError:
    which = "a chunk" if chunk is None else f"chunk {chunk}"
    return StoreError(
        f"{where}: {which} of {name!r} does not decode ({type(exc).__name__}: {exc}): the "
        "store is damaged. Run preprocess again."
    )
