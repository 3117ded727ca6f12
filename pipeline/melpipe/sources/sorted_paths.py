"""A dataset's list of files, in store order, kept on disk rather than in memory.

Ten million relative paths take about a gigabyte as Python strings. The client needs
them in order, once to write the run's listing into the store and otherwise only one at a
time (a failure to name, a duplicate to read), so the paths a walk or a manifest gives are
sorted as they come, in runs of :data:`RUN` paths that spill to temporary files, and the
runs merged into one temporary file (an external merge sort). :class:`PathsOnDisk` reads
that file by row, a block of :data:`BLOCK` paths at a time; what the client holds is one
offset per block and the block last read.

The temporary files are anonymous (``tempfile.TemporaryFile``): nothing is left behind
when the process ends, however it ends. They take about as many bytes as the paths, in
the temporary folder (``TMPDIR``).
"""

from __future__ import annotations

import heapq
import itertools
import os
import tempfile
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import overload

import numpy as np

BLOCK = 4096  # paths per block of a file, read at once
# Paths sorted in memory before they spill to a temporary file: about 100 MB of strings,
# and a listing of up to a million files is sorted without a merge.
RUN = 1 << 20


def _encode_block(paths: Sequence[str]) -> bytes:
    """A block: its count of paths, each one's length in bytes, then their bytes. Lengths,
    not separators, since a manifest may name a path holding any character (it then fails
    as a file, with its reason)."""
    encoded = [p.encode("utf-8", "surrogateescape") for p in paths]
    lengths = np.fromiter(map(len, encoded), np.uint32, len(encoded))
    return b"".join([len(encoded).to_bytes(4, "little"), lengths.tobytes(), *encoded])


def _decode_block(block: bytes) -> list[str]:
    n = int.from_bytes(block[:4], "little")
    first = 4 + 4 * n
    ends = (first + np.cumsum(np.frombuffer(block, np.uint32, n, 4), dtype=np.int64)).tolist()
    starts = [first, *ends[:-1]]
    pairs = zip(starts, ends, strict=True)
    return [block[a:b].decode("utf-8", "surrogateescape") for a, b in pairs]


class PathsOnDisk(Sequence[str]):
    """Paths in a temporary file, read by row: a sequence of str that holds none of them
    but the block last read. Made by :func:`sort_paths` or :meth:`of`; it cannot be
    pickled, so the paths never travel in a task's arguments by mistake."""

    def __init__(self, fd: int, offsets: np.ndarray, length: int) -> None:
        self._fd, self._offsets, self._length = fd, offsets, length
        self._cached: tuple[int, list[str]] = (-1, [])
        self._closed = weakref.finalize(self, os.close, fd)  # when the sequence goes

    @classmethod
    def of(cls, paths: Iterable[str]) -> PathsOnDisk:
        """``paths``, given in their order, kept in a new temporary file."""
        with tempfile.TemporaryFile() as file:  # nameless: nothing outlives the process
            fd = os.dup(file.fileno())
        offsets, length = [0], 0
        iterator = iter(paths)
        while block := list(itertools.islice(iterator, BLOCK)):
            data = _encode_block(block)
            with memoryview(data) as view:
                written = 0
                while written < len(data):
                    written += os.pwrite(fd, view[written:], offsets[-1] + written)
            offsets.append(offsets[-1] + len(data))
            length += len(block)
        return cls(fd, np.array(offsets, np.int64), length)

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._length)
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            return list(self._between(start, stop))
        i = index + self._length if index < 0 else index
        if not 0 <= i < self._length:
            raise IndexError(f"path {index} of {self._length}")
        return self._block(i // BLOCK)[i % BLOCK]

    def __iter__(self) -> Iterator[str]:
        return self._between(0, self._length)

    def __reduce__(self) -> tuple:
        raise TypeError("A listing on disk stays in the client: send rows, not paths.")

    def close(self) -> None:
        """Let the temporary file go now (it goes, too, when the sequence does)."""
        self._closed()

    def _between(self, start: int, stop: int) -> Iterator[str]:
        for block in range(start // BLOCK, -(-stop // BLOCK)):
            paths = self._block(block)
            first = block * BLOCK
            yield from paths[max(start - first, 0) : stop - first]

    def _block(self, block: int) -> list[str]:
        if self._cached[0] != block:
            lo, hi = int(self._offsets[block]), int(self._offsets[block + 1])
            self._cached = (block, _decode_block(os.pread(self._fd, hi - lo, lo)))
        return self._cached[1]


def sort_paths(paths: Iterable[str], run: int | None = None) -> PathsOnDisk:
    """``paths`` sorted (as str), each once, with at most ``run`` of them in memory
    (default :data:`RUN`)."""
    run = run or RUN
    runs: list[PathsOnDisk] = []
    buffer: list[str] = []
    for path in paths:
        buffer.append(path)
        if len(buffer) >= run:
            buffer.sort()  # fast on what comes nearly in order, as a walk's paths do
            runs.append(PathsOnDisk.of(_once(buffer)))
            buffer.clear()
    buffer.sort()
    if not runs:
        return PathsOnDisk.of(_once(buffer))
    runs.append(PathsOnDisk.of(_once(buffer)))
    del buffer
    try:
        return PathsOnDisk.of(_once(heapq.merge(*runs)))
    finally:
        for part in runs:
            part.close()


def _once(ordered: Iterable[str]) -> Iterator[str]:
    """Sorted paths, each once."""
    return (path for path, _ in itertools.groupby(ordered))


def not_in(paths: Iterable[str], held: Iterable[str]) -> Iterator[str]:
    """The ``paths`` that are not ``held``, both sorted, in one pass over each."""
    others = iter(held)
    other = next(others, None)
    for path in paths:
        while other is not None and other < path:
            other = next(others, None)
        if path != other:
            yield path
