"""Files that hold the same audio, found before they leak into a split, without decoding.

Two files are duplicates when their bytes are the same (a copy), or their PCM samples are:
a WAV, an AIFF and a FLAC of one recording, at one rate, bit depth and channel count.
The samples are compared by their MD5 as FLAC's STREAMINFO holds it, which a FLAC's header
gives for free and a WAV's or AIFF's samples give by reading them, byte order normalised
(:func:`melpipe.sources.pcm.pcm_md5`): no decoding either way.

Only files that could be the same are read whole: those that share their size with
another (for the bytes), or their sample format, rate, channels and length (for the
samples), and what their first window gave in pass 1 (its level and log-mel extrema, the
:func:`probe_of` it): the same bytes or samples decode to the same bits, so files whose
first windows differ are not copies, and a dataset of clips of one length is not read
twice over. Each group that holds one of a run's files is hashed, the store's files in it
too for an append; a default run reads every other file no further than its clips.

Each file's ``duplicate_of`` is then the first file before it, in store order, with its
key, or -1. Pure functions on arrays, so that a run, an append and ``scan --duplicates``
group the same way; numpy's grouping, not a Python key per file, so that a run of
millions of files does it in seconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NOT_A_DUPLICATE = -1


def shape_ids(
    pcm_format: Sequence[str] | np.ndarray,
    sample_rate: Sequence[int] | np.ndarray,
    channels: Sequence[int] | np.ndarray,
    frames: Sequence[int] | np.ndarray,
    ok: Sequence[bool] | np.ndarray,
) -> np.ndarray:
    """What two files whose PCM samples are the same share (their sample format, rate,
    channels and length) as one number per file, equal for equal shapes; 0 for a file
    that holds no PCM (a lossy or other encoding), has no length, or is not ``ok``."""
    formats = np.asarray(pcm_format, dtype=object)
    length = np.asarray(frames, np.int64)
    has = np.asarray(ok, bool) & (formats != "") & (length > 0)
    ids = np.zeros(len(length), np.int64)
    if has.any():
        codes = _codes(formats[has])
        columns = (codes, np.asarray(sample_rate, np.int64)[has],
                   np.asarray(channels, np.int64)[has], length[has])  # fmt: skip
        ids[has] = _group_ids(np.stack(columns)) + 1
    return ids


def probe_of(level: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Each file's first window as pass 1 found it (its RMS level, log-mel minimum and
    maximum, float32) folded into a nonzero int64: files with the same bytes, or the same
    PCM samples at one rate, decode to the same bits and give the same; most others not."""
    values = (level, low, high)
    bits = np.stack([np.asarray(v, "<f4").view("<u4").astype(np.uint64) for v in values])
    folded = (bits[0] << np.uint64(32) | bits[1]) ^ (bits[2] * np.uint64(0x9E3779B97F4A7C15))
    return (folded | np.uint64(1)).view(np.int64)


def shared(columns: np.ndarray, valid: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Whether each file's key (its column of ``columns``, k rows of integers, for the
    files ``valid`` marks) is also another file's, in a group that holds at least one
    ``new`` file: the files to hash. Groups of the store's files alone were compared
    when the later of them was added."""
    result = np.zeros(columns.shape[1], bool)
    rows = np.flatnonzero(valid)
    if len(rows):
        group = _group_ids(columns[:, rows])
        with_new = np.bincount(group, weights=np.asarray(new, bool)[rows]) > 0
        result[rows] = (np.bincount(group)[group] > 1) & with_new[group]
    return result


def wanted(
    sizes: Sequence[int] | np.ndarray,
    shapes: np.ndarray,
    probes: Sequence[int] | np.ndarray,
    digests: np.ndarray,
    md5s: np.ndarray,
    new: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Which files to read whole for the hash of their bytes, and which for their samples':
    those whose size, or shape (:func:`shape_ids`), and probe another file shares
    (:func:`shared`), and whose hash is not known yet (""). One row per file, the store's
    first; ``new`` marks a run's; a size of 0, a shape of 0 or a probe of 0 is compared
    with nothing."""
    size, shape = np.asarray(sizes, np.int64), np.asarray(shapes, np.int64)
    probe = np.asarray(probes, np.int64)
    by_size = shared(np.stack([size, probe]), (size != 0) & (probe != 0), new)
    by_shape = shared(np.stack([shape, probe]), (shape != 0) & (probe != 0), new)
    return by_size & (digests == ""), by_shape & (md5s == "")


def keys_of(digests: np.ndarray, shapes: np.ndarray, md5s: np.ndarray) -> np.ndarray:
    """What two files share when they are duplicates, as one number per file: the shape
    and MD5 of their PCM samples where both are known (files whose bytes are equal have
    equal samples), else the hash of their bytes; -1 where neither is known, which
    matches nothing."""
    digests, md5s = np.asarray(digests, object), np.asarray(md5s, object)
    shapes = np.asarray(shapes, np.int64)
    pcm = (shapes != 0) & (md5s != "")
    by_bytes = ~pcm & (digests != "")
    keys = np.full(len(shapes), -1, np.int64)
    if pcm.any():
        keys[pcm] = _group_ids(np.stack([shapes[pcm], _codes(md5s[pcm])]))
    if by_bytes.any():  # numbered after the samples' keys, so that none is both
        keys[by_bytes] = _codes(digests[by_bytes]) + keys.max() + 1
    return keys


def assign(
    digests: np.ndarray,
    shapes: np.ndarray,
    md5s: np.ndarray,
    old_duplicate_of: Sequence[int] | np.ndarray = (),
) -> np.ndarray:
    """Each new file's ``duplicate_of``: the first file before it, in store order, with
    its key (:func:`keys_of`), or -1. From every file's hashes and shape, the store's
    ``len(old_duplicate_of)`` files first, then the new ones; of the store's files only
    the first of each group is a first for the new ones."""
    keys = keys_of(digests, shapes, md5s)
    old = np.asarray(old_duplicate_of, np.int64)
    rows = np.arange(len(keys))
    can_be_first = keys >= 0
    can_be_first[: len(old)] &= old == NOT_A_DUPLICATE
    # Rows ascend, so each key's first occurrence among them is its first file.
    firsts_keys, at = np.unique(keys[can_be_first], return_index=True)
    first_of_key = np.full(int(keys.max(initial=0)) + 1, NOT_A_DUPLICATE, np.int64)
    first_of_key[firsts_keys] = rows[can_be_first][at]
    new_rows, new_keys = rows[len(old) :], keys[len(old) :]
    first = np.where(new_keys >= 0, first_of_key[np.maximum(new_keys, 0)], new_rows)
    return np.where(first == new_rows, NOT_A_DUPLICATE, first).astype(np.int64)


def _codes(values: np.ndarray) -> np.ndarray:
    """Each of ``values`` (strings) as a number, equal for equal strings."""
    _, codes = np.unique(values.astype(str), return_inverse=True)
    return codes.reshape(-1).astype(np.int64)


def _group_ids(columns: np.ndarray) -> np.ndarray:
    """Each column of ``columns`` (k rows of integers) as a number, equal for equal
    columns."""
    # Sorted with lexsort, then numbered where a column differs from the one before:
    # ``np.unique(columns, axis=1)`` gives the same numbers, but compares columns as
    # records, which took 0.1 s per call for 100,000 files, ten times this.
    n = columns.shape[1]
    order = np.lexsort(columns[::-1])  # by the first row, then the next...
    ordered = columns[:, order]
    starts = np.any(ordered[:, 1:] != ordered[:, :-1], axis=0)
    ids = np.empty(n, np.int64)
    ids[order] = np.concatenate([[0], np.cumsum(starts)]) if n else []
    return ids


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
