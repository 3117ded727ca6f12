"""Reading a store: what is at an OUTPUT (:func:`inspect`), and a finished store opened
read-only and checked against its schema (:class:`ReadableStore`), with the fast path
that decodes a chunk of images straight into a caller's buffer.

With :mod:`.writer`, the only modules that speak Zarr's API. OUTPUT may be a local path
or an fsspec URL; credentials come from the usual places, never from arguments.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from melpipe.analysis.pixels import Histogram
from melpipe.errors import ArgumentError, MelpipeError, StoreError
from melpipe.sources.discover import filesystem
from melpipe.store.schema import (
    ARRAYS,
    BY_NAME,
    FORMAT,
    FORMER_FORMAT,
    LOCK_FILES,
    MARKER,
    ArraySpec,
    OutputState,
    Sizes,
    StoreAttrs,
    chunks_of,
    shape_of,
)

HISTOGRAM = "histogram"


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
    chunks = set()
    for stored in fs.find(folder):
        key = stored[len(folder) + 1 :]
        first = _FIRST_NUMBER.search(key)
        if first and int(first.group()) < n_chunks and chunk_key(array, int(first.group())) == key:
            chunks.add(int(first.group()))
    return chunks


_FIRST_NUMBER = re.compile(r"\d+")


def missing_chunks(url: str, array: zarr.Array, first: int = 3) -> tuple[int, list[int]]:
    """How many chunks along the rows of ``array`` are not stored, and the ``first`` of
    them, found in at most as many steps as chunks are stored, plus ``first``."""
    stored = _stored_chunks(url, array)
    n_missing = array.cdata_shape[0] - len(stored)
    missing = list(itertools.islice((i for i in itertools.count() if i not in stored), first))
    return n_missing, missing[: min(first, n_missing)]


def chunk_key(array: zarr.Array, index: int) -> str:
    """The key, relative to the array, of its chunk ``index`` along the rows, as the
    array's own metadata encodes it."""
    return array.metadata.encode_chunk_key((index, *[0] * (array.ndim - 1)))


def size_on_disk(url: str | os.PathLike[str]) -> int:
    """Bytes of every object of a store."""
    fs, path = filesystem(url)
    return int(fs.du(path))


def decoded(spec: ArraySpec, value: Any) -> np.ndarray:
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
        self._arrays = {spec.name: checked_array(group, spec, where) for spec in ARRAYS}
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
        held = (self.sizes.files, decoded, self.sizes.clips)
        if (counts.files, counts.decoded, counts.clips) != held:
            raise StoreError(
                f"{where} records {counts.files} files, {counts.decoded} decoded, "
                f"{counts.clips} clips, but holds {held[0]} files, {held[1]} decoded, "
                f"{held[2]} clips. The store was altered; run preprocess again."
            )

    def _check_chunks(self, where: str) -> None:
        for spec in ARRAYS:
            if spec.rows is None:
                continue
            array = self._arrays[spec.name]
            n, size = array.shape[0], array.chunks[0]
            n_missing, missing = missing_chunks(self.url, array)
            if n_missing:
                rows = [f"{i * size}-{min((i + 1) * size, n) - 1}" for i in missing]
                raise StoreError(
                    f"{where} lacks {n_missing} chunk(s) of {spec.name!r} ({spec.rows}s "
                    f"{', '.join(rows)}{', ...' if n_missing > 3 else ''}): that data is "
                    "gone. Run preprocess again."
                )

    def read(self, name: str, rows: slice = slice(None)) -> np.ndarray:
        """A clip, file or coordinate array, whole or its ``rows`` (strings as Python
        objects)."""
        with self._decoding(name):
            return decoded(BY_NAME[name], self._arrays[name][rows])

    def read_by_chunk(self, name: str) -> Iterator[np.ndarray]:
        """A clip or file array, a chunk of rows at a time."""
        array = self._arrays[name]
        for start in range(0, array.shape[0], array.chunks[0]):
            yield self.read(name, slice(start, start + array.chunks[0]))

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


def checked_array(group: zarr.Group, spec: ArraySpec, where: str) -> zarr.Array:
    node = group.get(spec.name)
    if not isinstance(node, zarr.Array):
        raise StoreError(f"{where} has no array {spec.name!r}: it is not a whole melpipe store.")
    expected: np.dtype[Any] = (
        np.dtypes.StringDType() if spec.dtype == "str"
        else np.dtype(object) if spec.dtype == "bytes"  # Zarr's variable-length bytes
        else np.dtype(spec.dtype)
    )  # fmt: skip
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
            encoded = (directory / chunk_key(images, chunk)).read_bytes()
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
