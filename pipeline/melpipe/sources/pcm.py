"""What a file is, without decoding it: the SHA-256 of its bytes, the MD5 of its PCM
samples as FLAC's STREAMINFO defines it, and a file read whole for those and its peak.

What finds duplicates (:mod:`melpipe.sources.duplicates`) compares; the facts of the
sample layout are xiph/flac's (``src/libFLAC/md5.c``, ``format_input_``) and RFC 9639's.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import stat
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from melpipe.sources.audio import BLOCK_FRAMES, open_audio, peak_of, truncated
from melpipe.sources.discover import is_url
from melpipe.sources.retries import transient

# What libsndfile reads each format's samples as, exactly: 8 and 24 bits come shifted left
# into 16 and 32, unsigned 8-bit samples less 128 (so as signed ones).
_READ_AS = {"s8": "int16", "s16le": "int16", "s24le": "int32", "s32le": "int32",
            "f32le": "float32", "f64le": "float64"}  # fmt: skip


def pcm_md5(f: sf.SoundFile, pcm_format: str) -> str:
    """The MD5 of an open file's samples in ``pcm_format`` (:data:`PCM_FORMATS`), as a
    FLAC's STREAMINFO holds it: a WAV and a FLAC of one recording give the same. Read
    through libsndfile a block at a time; for PCM that is a copy, not a decoding.

    Raises
    ------
    TruncatedAudioError
        The file ends before the frames its header declares.
    """
    digest = hashlib.md5(usedforsecurity=False)
    f.seek(0)
    read = 0
    while read < f.frames:
        block = f.read(min(BLOCK_FRAMES, f.frames - read), dtype=_READ_AS[pcm_format],
                       always_2d=True)  # fmt: skip
        if not len(block):
            truncated(f, read)
        read += len(block)
        if pcm_format == "s8":
            digest.update((block >> 8).astype(np.int8).tobytes())
        elif pcm_format == "s24le":  # the low three bytes of each little-endian int32
            digest.update((block >> 8).astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes())
        else:
            digest.update(block.astype(block.dtype.newbyteorder("<"), copy=False).tobytes())
    return digest.hexdigest()


HASH_BLOCK = 1 << 20  # bytes read at a time to hash a file


def hash_bytes(path: str | os.PathLike[str]) -> tuple[str, int]:
    """The SHA-256 of a file's bytes, read once, a block at a time, and how many bytes
    were read; "" for what is not a regular file (which could block a reader forever), or
    cannot be read."""
    location = os.fspath(path)
    digest, n = hashlib.sha256(), 0
    try:
        if is_url(location):
            import fsspec

            with fsspec.open(location, "rb") as raw:
                while block := raw.read(HASH_BLOCK):
                    digest.update(block)
                    n += len(block)
            return digest.hexdigest(), n
        fd = os.open(os.fsencode(location), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return "", 0
            while block := os.read(fd, HASH_BLOCK):
                digest.update(block)
                n += len(block)
        finally:
            os.close(fd)
    except OSError as exc:
        if transient(exc):
            raise
        return "", n
    return digest.hexdigest(), n


@dataclass(frozen=True)
class WholeFile:
    """What reading one file whole found, and its size as it stood ("" and NaN for what
    was not asked, or where it failed: ``error`` says why)."""

    size: int = 0
    bytes_sha256: str = ""
    pcm_md5: str = ""
    peak: float = math.nan
    error: str = ""


def read_whole(location: str, digest: bool, samples: bool, peak: bool, rate: int) -> WholeFile:
    """Read one file whole for what is asked: the SHA-256 of its bytes (``digest``), the
    MD5 of its PCM samples (``samples``, where it holds PCM: :func:`pcm_md5`), its peak
    at ``rate`` (``peak``: :func:`peak_of`).

    Raises
    ------
    OSError, soundfile.LibsndfileError, AudioError
        The file cannot be read whole.
    """
    sha, size = hash_bytes(location) if digest else ("", 0)
    if digest and not sha:
        raise OSError(errno.EIO, "the file could not be read whole")
    if not (samples or peak):
        return WholeFile(size=size, bytes_sha256=sha)
    with open_audio(location, whole=True) as (f, info):
        md5 = pcm_md5(f, info.pcm_format) if samples and info.pcm_format else ""
        loudest = peak_of(f, rate) if peak else math.nan
    return WholeFile(info.size, sha, md5, loudest)
