"""Decoding the windows of one audio file: mono, resampled, fixed length.

Decoding is soundfile's (libsndfile), resampling soxr's at librosa's default quality, and
the mono mix librosa's (the mean of channels), so that a window equals
``librosa.load(path, sr=sample_rate)[start:start + n_samples]``, zero-padded past the end,
to float32 rounding. Only the samples the windows need are decoded, in blocks, through
soxr's streaming resampler: a window is never resampled on its own, whose edges would
differ, and a long recording is never held whole in memory. A stretch that starts inside
the file is decoded from a little earlier (:data:`WARMUP`), at a sample that lies on both
rates' common grid, so that the resampler's filter has seen what it sees in the whole file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from melpipe.errors import (
    EmptyAudioError,
    ExportError,
    NonFiniteAudioError,
    NotRegularFileError,
    TruncatedAudioError,
)
from melpipe.files import open_to_write
from melpipe.sources.discover import is_url
from melpipe.sources.headers import FileInfo, Stamp, flac_stream_info
from melpipe.sources.retries import transient

# libsndfile shrinks the frame count of a WAV/AIFF file whose data chunk runs past the end
# of the file, and only says so in its log: "data : 44100 (should be 14670)".
_SHORT_DATA_CHUNK = re.compile(r"^\s*(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
STREAMING_SIZE = 0xFFFFFFFF  # the data size a writer to a pipe leaves in the header

# Output samples decoded before a stretch that starts inside a file. Measured: with 4096
# the samples after them equal a whole-file resample to 1.3e-7 for rates from 8 kHz to
# 96 kHz into 22.05 kHz; soxr's "HQ" filter spans under 2,000 of them.
WARMUP = 4096
BLOCK_FRAMES = 1 << 16  # frames decoded at a time: 0.5 MB of stereo float32
# Output samples resampled by one stream (6 s at 22.05 kHz), see _decode. A task whose
# windows start inside a span decodes it from its start: on average half a span, 5% more
# for a batch of 64 one-second windows; a file's first span (and so --segments first)
# costs nothing more.
SPAN = 1 << 17
# Output samples' worth of input read past the last one wanted: soxr's "HQ" stream holds
# back under 2,000 output samples (measured: at most 1,774, from 8 kHz), so one read mostly
# suffices; where it does not, the stream is fed more. 4,096 decoded 9% more of a
# one-second clip of a 44.1 kHz file for nothing, and gave the same bits.
READ_MARGIN = 2048


def read_header(path: str | os.PathLike[str], *, whole: bool = False) -> FileInfo:
    """The header of one file; a failure is recorded in the result, never raised.

    ``whole``: also check that the file holds the last frame its header declares, for a
    run that lays out windows over the whole length (:func:`check_length`).
    """
    try:
        with open_audio(path) as (f, info):
            if whole:
                check_length(f)
            return info
    except Exception as exc:  # one unreadable file is a finding, not a reason to stop
        if transient(exc):  # unless it is the storage's: that says nothing of the file
            raise
        return FileInfo(error=describe_error(exc))


def check_length(f: sf.SoundFile) -> None:
    """Raise unless the file holds the last frame its header declares.

    A header may claim far more than the file holds (a FLAC's 36-bit sample count, a few
    bytes to change), and windows are laid out from it: millions of them for a second of
    audio. One seek to the claimed end and one frame decoded tell, before any window
    exists: measured, 0.2 ms for a 10-minute FLAC, 34 ms for an MP3, which libsndfile
    scans to seek in.
    """
    try:
        f.seek(f.frames - 1)
        holds = len(f.read(1)) == 1
    except (sf.LibsndfileError, RuntimeError):
        holds = False
    if not holds:
        raise TruncatedAudioError(
            f"the header declares {f.frames} frames, but the file does not hold the last of them"
        )
    f.seek(0)


# Bytes fetched at a time from object storage for a file's windows: s3fs's default, 50
# MiB, fetched whole objects of most files to decode their first second. 2 MiB holds a
# header and a clip of most files in one request.
URL_BLOCK = 2 << 20


@contextlib.contextmanager
def open_audio(
    path: str | os.PathLike[str], *, whole: bool = False
) -> Iterator[tuple[sf.SoundFile, FileInfo]]:
    """Open a file whose header shows it can give a clip, as a context manager: the open
    file, and what its header says (:class:`FileInfo`, with the file's size and time of
    last modification as it was opened, and for a FLAC its STREAMINFO's MD5). ``whole``:
    it will be read to its end (on object storage, in the file system's large blocks;
    otherwise in blocks of :data:`URL_BLOCK`).

    Only a regular file is opened: a FIFO or a device named ``x.wav`` (or a link to one)
    would block a reader forever or never end, so the path is opened without blocking
    and its type checked before libsndfile reads a byte.

    Raises
    ------
    NotRegularFileError
        The path is not a regular file.
    OSError
        The file cannot be opened (its errno is kept in the recorded reason).
    EmptyAudioError, TruncatedAudioError, soundfile.LibsndfileError
        As :func:`check_header`, or libsndfile cannot read the file.
    """
    location = os.fspath(path)
    if is_url(location):
        # Read through fsspec; libsndfile seeks in the file object, so only the blocks
        # holding the header and the needed samples are fetched.
        import fsspec

        fs, inner = fsspec.core.url_to_fs(location)
        block = {} if whole else {"block_size": URL_BLOCK}
        with fs.open(inner, "rb", **block) as raw, sf.SoundFile(raw) as f:
            check_header(f)
            stamp = _stamp_of(getattr(raw, "details", None) or {})
            flac = flac_stream_info(_reader_at(raw)) if f.format == "FLAC" else None
            yield f, FileInfo.of(f, stamp, flac)
        return
    # As bytes: a str would be encoded strictly and fail on a non-UTF-8 file name.
    fd = os.open(os.fsencode(location), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFileError(f"it is {_file_kind(info.st_mode)}, not a regular file")
        with sf.SoundFile(fd, closefd=False) as f:
            check_header(f)
            # pread leaves the offset libsndfile reads from where it is.
            flac = (
                flac_stream_info(lambda at, n: os.pread(fd, n, at)) if f.format == "FLAC" else None
            )
            yield f, FileInfo.of(f, (info.st_size, info.st_mtime), flac)
    finally:
        os.close(fd)


def _reader_at(raw: Any) -> Callable[[int, int], bytes]:
    """``read_at(offset, n)`` on a file object that libsndfile reads from: it leaves the
    position where it found it. The header's bytes are in fsspec's cache already."""

    def read_at(offset: int, n: int) -> bytes:
        position = raw.tell()
        try:
            raw.seek(offset)
            return bytes(raw.read(n))
        finally:
            raw.seek(position)

    return read_at


# A file's size in bytes and when it was last modified (seconds since 1970; 0 where object
# storage does not say): what tells a file replaced since it was read.


def _stamp_of(details: Mapping[str, Any]) -> Stamp:
    """The stamp in what fsspec knows of an open object: its size, and S3's LastModified
    or another file system's mtime. No request of its own: the open made it."""
    when: Any = details.get("LastModified") or details.get("mtime") or details.get("updated")
    seconds = float(when.timestamp()) if hasattr(when, "timestamp") else float(when or 0.0)
    return int(details.get("size") or 0), seconds


def _file_kind(mode: int) -> str:
    kinds = {
        stat.S_ISFIFO: "a FIFO (named pipe)",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISSOCK: "a socket",
        stat.S_ISDIR: "a folder",
    }
    return next((name for test, name in kinds.items() if test(mode)), "not a file")


def check_header(f: sf.SoundFile) -> None:
    """Raise if an open file's header already shows that it cannot give a clip.

    A WAV or AIFF file whose data chunk claims more bytes than the file holds is a broken
    download, which libsndfile would quietly read in part. A size of 0xFFFFFFFF is not a
    claim but a placeholder: programs writing to a pipe (ffmpeg among them) cannot seek
    back to fill it in, and libsndfile reads such a stream to its end.
    """
    if f.frames <= 0:
        raise EmptyAudioError("the file holds no samples")
    if short := _SHORT_DATA_CHUNK.search(f.extra_info):
        declared, present = map(int, short.groups())
        if present < declared != STREAMING_SIZE:
            raise TruncatedAudioError(
                f"the header declares {declared} bytes of audio data but the file holds {present}"
            )


def read_windows(
    path: str | os.PathLike[str],
    starts: np.ndarray,
    *,
    sample_rate: int,
    n_samples: int,
    out: np.ndarray | None = None,
    peak: bool = False,
) -> tuple[np.ndarray, FileInfo]:
    """Decode the windows of one file that start at ``starts`` (samples at
    ``sample_rate``, ascending), and what its header says.

    Only the samples the windows hold are decoded, each stretch of close windows once;
    with ``peak``, the whole file, span by span, for its peak too (:func:`peak_of`),
    which the header's ``peak`` then holds: one decoding gives both.

    Returns
    -------
    clips : np.ndarray [shape=(len(starts), n_samples)], float32
        ``out`` when given (zeros, as a new array would be), filled.
    header : FileInfo

    Raises
    ------
    soundfile.LibsndfileError, OSError
        libsndfile cannot open or decode the file.
    EmptyAudioError, TruncatedAudioError, NonFiniteAudioError
        The file decodes but cannot give meaningful clips.
    """
    starts = np.asarray(starts, dtype=np.int64)
    clips = np.zeros((len(starts), n_samples), dtype=np.float32) if out is None else out
    with open_audio(path, whole=peak) as (f, header):
        n_audio = resampled_length(f.frames, f.samplerate, sample_rate)
        if peak:
            loudest = _whole(f, n_audio, sample_rate, starts, clips)
            return clips, dataclasses.replace(header, peak=loudest)
        for lo, hi in _stretches(starts, n_samples):
            first, end = int(starts[lo]), min(int(starts[hi - 1]) + n_samples, n_audio)
            if first >= end:
                continue  # windows wholly in the padding past the end
            _copy(_decode(f, first, end, sample_rate), first, starts[lo:hi], clips[lo:hi])
    return clips, header


def _copy(signal: np.ndarray, first: int, starts: np.ndarray, clips: np.ndarray) -> None:
    """Copy into each window of ``clips`` (starting at ``starts``) the samples of it that
    ``signal``, samples ``first:first + len(signal)`` of the file, holds."""
    n_samples, end = clips.shape[1], first + len(signal)
    for i, s in enumerate(starts.tolist()):
        a, b = max(s, first), min(s + n_samples, end)
        if a < b:
            clips[i, a - s : b - s] = signal[a - first : b - first]


def _whole(
    f: sf.SoundFile, n_audio: int, sample_rate: int, starts: np.ndarray, clips: np.ndarray
) -> float:
    """Decode a whole file span by span, as the windows are (:func:`_decode`): fill the
    windows at ``starts`` and return the peak, never holding more than a span."""
    loudest, n_samples = 0.0, clips.shape[1]
    for lo in range(0, n_audio, SPAN):
        signal = _decode(f, lo, min(lo + SPAN, n_audio), sample_rate)
        loudest = max(loudest, float(np.abs(signal).max(initial=0.0)))
        i, j = (
            np.searchsorted(starts + n_samples, lo, "right"),
            np.searchsorted(starts, lo + len(signal)),
        )
        _copy(signal, lo, starts[i:j], clips[i:j])
    return loudest


def peak_of(f: sf.SoundFile, sample_rate: int) -> float:
    """The greatest absolute sample of the whole file, mono at ``sample_rate``: decoded
    span by span as the windows are (:func:`_decode`), so that it is the peak of exactly
    the samples the windows hold, and never more than a span is held."""
    n_audio = resampled_length(f.frames, f.samplerate, sample_rate)
    return _whole(f, n_audio, sample_rate, np.empty(0, np.int64), np.empty((0, 1), np.float32))


def resampled_length(frames: int, source_rate: int, sample_rate: int) -> int:
    """Samples of ``frames`` frames at ``source_rate`` once resampled, as
    ``librosa.resample`` (and so ``librosa.load``) counts them."""
    if source_rate == sample_rate:
        return frames
    return int(np.ceil(frames * (float(sample_rate) / source_rate)))


def _stretches(starts: np.ndarray, n_samples: int) -> Iterator[tuple[int, int]]:
    """Runs ``lo:hi`` of windows close enough to decode as one stretch: a gap shorter than
    two warm-ups costs less to decode than to skip."""
    lo = 0
    for i in range(1, len(starts) + 1):
        if i == len(starts) or starts[i] - (starts[i - 1] + n_samples) > 2 * WARMUP:
            yield lo, i
            lo = i


def _decode(f: sf.SoundFile, first: int, end: int, sample_rate: int) -> np.ndarray:
    """Output samples ``first:end`` of the whole file, mixed to mono and resampled."""
    source_rate = f.samplerate
    out = np.zeros(end - first, dtype=np.float32)
    if source_rate == sample_rate:  # librosa does not resample: neither is there a filter
        f.seek(first)
        _check_read(f, first, _mono(f.read(end - first, dtype="float32", always_2d=True)), out)
        return out
    # The whole file's stream ends after this many samples (libsoxr's own rounding, checked
    # in tests/test_audio.py); librosa pads past it with zeros. A stream started elsewhere
    # may round its end the other way, so its last sample is not the whole file's.
    end = min(end, int(f.frames / (source_rate / sample_rate) + 0.5))
    # Each span of SPAN samples comes from a stream of its own, started WARMUP samples
    # early: a sample's value then depends on its span alone, never on where the task
    # that decodes it begins, so any batching gives the same bits.
    for lo in range(first - first % SPAN, end, SPAN):
        a, b = max(lo, first), min(lo + SPAN, end)
        _resample_span(f, lo, out[a - first : b - first], a, sample_rate)
    return out


def _resample_span(
    f: sf.SoundFile, span: int, out: np.ndarray, first: int, sample_rate: int
) -> None:
    """Fill ``out`` with output samples ``first:first + len(out)`` of the span starting at
    ``span``, from a stream started where both rates' sample grids meet, WARMUP output
    samples before the span (or at the file's start)."""
    common = math.gcd(f.samplerate, sample_rate)
    step_in, step_out = f.samplerate // common, sample_rate // common
    grid = max(0, span - WARMUP) // step_out
    position, produced = grid * step_in, grid * step_out  # input frame, output sample
    end = first + len(out)
    f.seek(position)
    stream = soxr.ResampleStream(f.samplerate, sample_rate, 1, dtype="float32", quality="HQ")
    while produced < end:
        # Input for the samples still wanted, and READ_MARGIN more for the stream's delay: a
        # whole block past the span's end would be decoded for nothing.
        needed = math.ceil((end - produced + READ_MARGIN) * f.samplerate / sample_rate)
        wanted = min(BLOCK_FRAMES, needed, f.frames - position)
        samples = _mono(f.read(max(wanted, 0), dtype="float32", always_2d=True))
        position += len(samples)
        last = position >= f.frames
        if len(samples) < wanted:
            truncated(f, position)
        resampled = stream.resample_chunk(_finite(samples), last=last)
        lo, hi = max(first, produced), min(end, produced + len(resampled))
        if lo < hi:
            out[lo - first : hi - first] = resampled[lo - produced : hi - produced]
        produced += len(resampled)
        if last:
            break  # past the end, librosa pads with zeros: out already holds them


def _mono(samples: np.ndarray) -> np.ndarray:
    """librosa's mono mix, ``np.mean`` over the channel axis of a (channels, frames) array:
    the channels added in order, then divided by their count, in float32. Done column by
    column here: ``mean(axis=1)`` over a (frames, channels) block, the same bits, took
    half of all decoding time. From 8 channels numpy adds pairwise, so that path is kept."""
    if samples.shape[1] == 1:
        return samples[:, 0]
    if samples.shape[1] >= 8:
        return samples.mean(axis=1, dtype=np.float32)
    mix = samples[:, 0].copy()
    for c in range(1, samples.shape[1]):
        mix += samples[:, c]
    mix /= np.float32(samples.shape[1])
    return mix


def _finite(samples: np.ndarray) -> np.ndarray:
    if not np.isfinite(samples).all():
        raise NonFiniteAudioError("the file holds NaN or infinite samples")
    return samples


def _check_read(f: sf.SoundFile, first: int, samples: np.ndarray, out: np.ndarray) -> None:
    if len(samples) < len(out):
        truncated(f, first + len(samples))
    out[:] = _finite(samples)


def truncated(f: sf.SoundFile, position: int) -> None:
    raise TruncatedAudioError(
        f"the header declares {f.frames} frames but the audio ends after {position}"
    )


def describe_error(exc: BaseException) -> str:
    """The reason recorded for a failed file: the error's type and what went wrong.

    libsndfile messages repeat the path (already in the store's ``paths``); its bare
    reason is kept instead, e.g. ``LibsndfileError: Format not recognised``. An operating
    system error keeps its errno: ``PermissionError: [Errno 13] Permission denied``.
    """
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{type(exc).__name__}: [Errno {exc.errno}] {exc.strerror}"
    reason = getattr(exc, "error_string", None) or str(exc) or "no details"
    return f"{type(exc).__name__}: {reason.rstrip('.')}"


def libsndfile_version() -> str:
    """The decoder itself: soundfile bundles libsndfile, or uses the system's."""
    return str(sf.__libsndfile_version__)


def audio_format(output: str) -> str:
    """The format soundfile writes for ``output``'s extension (``WAV``, ``FLAC``...).

    Raises
    ------
    ExportError
        The extension names no format soundfile writes, or the folder does not exist.
    """
    kind = os.path.splitext(output)[1].lstrip(".").upper()
    if kind not in sf.available_formats():
        raise ExportError(
            f"Cannot write audio to {output!r}: its extension names no format soundfile "
            f"writes ({', '.join(sorted(sf.available_formats()))})."
        )
    folder = os.path.dirname(output) or "."
    if not os.path.isdir(folder):
        shown = os.path.dirname(output) or "."
        raise ExportError(
            f"Cannot write {output!r}: the folder {shown!r} does not exist. Create it first."
        )
    return kind


def write_audio(output: str, samples: np.ndarray, sample_rate: int) -> None:
    """Write mono float32 ``samples`` to ``output``, in the format of its extension
    (:func:`audio_format`), replacing nothing but a file melpipe may write."""
    kind = audio_format(output)
    with open_to_write(output) as file:
        sf.write(file, samples, sample_rate, format=kind)
