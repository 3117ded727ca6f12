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
key, or -1. Pure functions on arrays and strings, so that a run, an append and ``scan
--duplicates`` group the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

NOT_A_DUPLICATE = -1


def shape_of(pcm_format: str, sample_rate: int, channels: int, frames: int) -> str:
    """What two files whose PCM samples are the same share: their sample format, rate,
    channels and length; "" for a file that holds no PCM (a lossy or other encoding)."""
    if not pcm_format or frames <= 0:
        return ""
    return f"{pcm_format} {sample_rate} Hz {channels} ch {frames} frames"


def key_of(bytes_sha256: str, shape: str, pcm_md5: str) -> str:
    """What two files share when they are duplicates: the shape and MD5 of their PCM
    samples where known (files whose bytes are equal have equal samples), else the hash
    of their bytes; "" where neither is known, which matches nothing."""
    if shape and pcm_md5:
        return f"pcm:{shape}:{pcm_md5}"
    return f"bytes:{bytes_sha256}" if bytes_sha256 else ""


def probe_of(level: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Each file's first window as pass 1 found it (its RMS level, log-mel minimum and
    maximum, float32) folded into a nonzero int64: files with the same bytes, or the same
    PCM samples at one rate, decode to the same bits and give the same; most others not."""
    values = (level, low, high)
    bits = np.stack([np.asarray(v, "<f4").view("<u4").astype(np.uint64) for v in values])
    folded = (bits[0] << np.uint64(32) | bits[1]) ^ (bits[2] * np.uint64(0x9E3779B97F4A7C15))
    return (folded | np.uint64(1)).view(np.int64)


def shared(keys: Sequence[object], new: np.ndarray) -> np.ndarray:
    """Whether each file's ``keys`` value (None for none) is also another file's, in a
    group that holds at least one ``new`` file: the files to hash. Groups of the store's
    files alone were compared when the later of them was added."""
    rows_of: dict[object, list[int]] = {}
    for row, key in enumerate(keys):
        if key is not None:
            rows_of.setdefault(key, []).append(row)
    result = np.zeros(len(keys), bool)
    for rows in rows_of.values():
        if len(rows) > 1 and np.any(new[rows]):
            result[rows] = True
    return result


def wanted(
    sizes: Sequence[int],
    shapes: Sequence[str],
    probes: Sequence[int],
    digests: np.ndarray,
    md5s: np.ndarray,
    new: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Which files to read whole for the hash of their bytes, and which for their samples':
    those whose size, or shape, and probe another file shares (:func:`shared`), and whose
    hash is not known yet (""). One row per file, the store's first; ``new`` marks a
    run's; a size of 0, a shape of "" or a probe of 0 is compared with nothing."""
    by_size = [(s, p) if s and p else None for s, p in zip(sizes, probes, strict=True)]
    by_shape = [(h, p) if h and p else None for h, p in zip(shapes, probes, strict=True)]
    return shared(by_size, new) & (digests == ""), shared(by_shape, new) & (md5s == "")


def assign(
    digests: Sequence[str],
    shapes: Sequence[str],
    md5s: Sequence[str],
    old_duplicate_of: Sequence[int] = (),
) -> np.ndarray:
    """Each new file's ``duplicate_of``, from every file's hashes and shape (the store's
    ``len(old_duplicate_of)`` files first, then the new ones)."""
    keys = [key_of(*k) for k in zip(digests, shapes, md5s, strict=True)]
    n_old = len(old_duplicate_of)
    firsts = firsts_by_key(keys[:n_old], old_duplicate_of) if n_old else None
    return first_of_each(keys[n_old:], firsts, n_old)


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
    firsts: dict[str, int] = {}
    for row, (key, first) in enumerate(zip(keys, duplicate_of, strict=True)):
        if key and first == NOT_A_DUPLICATE:
            firsts.setdefault(key, row)
    return firsts


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
