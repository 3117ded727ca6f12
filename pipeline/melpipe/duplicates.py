"""Files that hold the same audio: found from their hashes, before they leak into a split.

Two files are duplicates when their samples at the store's rate are the same (a WAV and a
FLAC of one recording), or, for files that do not decode, when their bytes are. The
survey hashes both (:func:`melpipe.audio.read_header`); here the hashes become groups:
each file's ``duplicate_of`` is the first file before it, in store order, with its key,
or -1. Pure functions on strings, so that a run, an append and ``scan --duplicates`` group
the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

NOT_A_DUPLICATE = -1


def key_of(bytes_sha256: str, samples_sha256: str) -> str:
    """What two files share when they are duplicates: their samples' hash where they
    decoded, else their bytes' (files whose bytes are equal decode to equal samples);
    "" where neither is known, which matches nothing."""
    if samples_sha256:
        return f"samples:{samples_sha256}"
    return f"bytes:{bytes_sha256}" if bytes_sha256 else ""


def first_of_each(
    keys: Iterable[str], before: Mapping[str, int] | None = None, offset: int = 0
) -> np.ndarray:
    """For each key in order, the row of the first file with it, or -1 for the first of
    its group. The files' rows count on from ``offset``, and ``before`` maps the keys of
    files already in the store (rows below ``offset``) to their first file's row."""
    firsts = dict(before or {})
    result = []
    for row, key in enumerate(keys, start=offset):
        first = firsts.setdefault(key, row) if key else row
        result.append(NOT_A_DUPLICATE if first == row else first)
    return np.array(result, dtype=np.int64)


def firsts_by_key(keys: Sequence[str], duplicate_of: Sequence[int]) -> dict[str, int]:
    """The first file's row of each key among a store's files."""
    return {k: i for i, (k, d) in enumerate(zip(keys, duplicate_of, strict=True))
            if k and d == NOT_A_DUPLICATE}  # fmt: skip


def groups(duplicate_of: np.ndarray) -> list[list[int]]:
    """The groups of two or more files, each as its rows, first first."""
    members: dict[int, list[int]] = {}
    for i, first in enumerate(np.asarray(duplicate_of).tolist()):
        if first != NOT_A_DUPLICATE:
            members.setdefault(first, [first]).append(i)
    return [members[first] for first in sorted(members)]


def group_of(duplicate_of: np.ndarray) -> np.ndarray:
    """Each file's group: the row of its group's first file, or its own row."""
    duplicate_of = np.asarray(duplicate_of, np.int64)
    return np.where(duplicate_of == NOT_A_DUPLICATE, np.arange(len(duplicate_of)), duplicate_of)
