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
import errno
import hashlib
import math
import os
import re
import stat
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from melpipe.errors import (
    EmptyAudioError,
    NonFiniteAudioError,
    NotRegularFileError,
    TruncatedAudioError,
)
from melpipe.sources.discover import is_url
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


# Bits per sample of libsndfile's subtypes; compressed subtypes have none.
BIT_DEPTHS = {
    "PCM_S8": 8, "PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32, "FLOAT": 32,
    "DOUBLE": 64, "ULAW": 8, "ALAW": 8, "DWVW_12": 12, "DWVW_16": 16, "DWVW_24": 24,
}  # fmt: skip


# The PCM sample formats whose samples can be hashed as FLAC's STREAMINFO hashes them
# (xiph/flac, src/libFLAC/md5.c, format_input_): interleaved, signed, little-endian, in as
# few whole bytes as the bit depth needs; floats little-endian. By libsndfile's subtype.
PCM_FORMATS = {
    "PCM_S8": "s8", "PCM_U8": "s8", "PCM_16": "s16le", "PCM_24": "s24le", "PCM_32": "s32le",
    "FLOAT": "f32le", "DOUBLE": "f64le",
}  # fmt: skip
_PCM_BITS = {"s8": 8, "s16le": 16, "s24le": 24, "s32le": 32}
# What libsndfile reads each format's samples as, exactly: 8 and 24 bits come shifted left
# into 16 and 32, unsigned 8-bit samples less 128 (so as signed ones).
_READ_AS = {"s8": "int16", "s16le": "int16", "s24le": "int32", "s32le": "int32",
            "f32le": "float32", "f64le": "float64"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What is known of one file: what its header says (its length in frames, sample
    rate, channels, container and encoding; zeros and "" where it could not be read), and
    why it gives no clip, or "". The one record of a file, from ``scan``'s headers to pass
    1's results; slotted, as pass 1 keeps one per file (100,000 of them in a large run)."""

    frames: int = 0
    sample_rate: int = 0
    channels: int = 0
    format: str = ""
    subtype: str = ""
    error: str = ""
    size: int = 0  # bytes, and when last modified (seconds since 1970), where known:
    modified: float = 0.0  # pass 2 checks that a file it decodes again is the same
    peak: float = math.nan  # the greatest |sample| at the store's rate, where measured
    # What tells duplicates (docs/cli.md, "Duplicates"): the PCM sample format of lossless
    # audio (:data:`PCM_FORMATS`, "" for any other encoding), and the MD5 of its samples
    # in that format where its header holds it (a FLAC's).
    pcm_format: str = ""
    pcm_md5: str = ""

    @classmethod
    def of(
        cls, f: sf.SoundFile, stamp: Stamp = (0, 0.0), flac: tuple[int, str] | None = None
    ) -> FileInfo:
        """The header of an open file, with its :data:`Stamp` and, for a FLAC, the bit
        depth and samples' MD5 of its STREAMINFO (:func:`flac_stream_info`). Its names are
        interned: a run holds one per file."""
        pcm, md5 = PCM_FORMATS.get(f.subtype, ""), ""
        if flac is not None:
            bits, md5 = flac
            if _PCM_BITS.get(pcm) != bits:  # 20 bits, say: libsndfile gives them as 24
                pcm, md5 = "", ""
        return cls(f.frames, f.samplerate, f.channels, sys.intern(f.format),
                   sys.intern(f.subtype), size=stamp[0], modified=stamp[1],
                   pcm_format=sys.intern(pcm), pcm_md5=md5)  # fmt: skip

    @property
    def readable(self) -> bool:
        """Whether the header could be read (the file may still fail to decode)."""
        return self.sample_rate > 0

    @property
    def duration(self) -> float:
        """Seconds, as the header gives them; 0 where it could not be read."""
        return self.frames / self.sample_rate if self.sample_rate else 0.0

    @property
    def bit_depth(self) -> str:
        bits = BIT_DEPTHS.get(self.subtype)
        return f"{bits}-bit" if bits else "compressed"


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


def flac_stream_info(read_at: Callable[[int, int], bytes]) -> tuple[int, str] | None:
    """The bit depth of a FLAC stream and the MD5 of its samples, hex ("" where the
    encoder left it unset, all zeros), from its STREAMINFO block, read with
    ``read_at(offset, n)``; None where the bytes are not a FLAC stream's start.

    An ID3v2 tag before the stream is skipped. The block's layout (RFC 9639, 8.2): after
    "fLaC" and a 4-byte block header, 10 bytes of block and frame sizes, then 20 bits of
    sample rate, 3 of channels - 1, 5 of bits per sample - 1, 36 of total samples, and
    the 16-byte MD5.
    """
    head = read_at(0, 10)
    offset = 0
    if len(head) == 10 and head[:3] == b"ID3":
        # The tag's size: four bytes of seven bits each ("synchsafe"), after its flags.
        size = (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7
        size |= head[9] & 0x7F
        offset = 10 + size + (10 if head[5] & 0x10 else 0)  # a footer follows the tag
    block = read_at(offset, 42)
    if len(block) < 42 or block[:4] != b"fLaC" or block[4] & 0x7F != 0:  # 0: STREAMINFO
        return None
    info = block[8:]
    bits = ((info[12] & 0x01) << 4 | info[13] >> 4) + 1
    md5 = info[18:34]
    return bits, (md5.hex() if any(md5) else "")


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
            _truncated(f, read)
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
Stamp = tuple[int, float]


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
            _truncated(f, position)
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
        _truncated(f, first + len(samples))
    out[:] = _finite(samples)


def _truncated(f: sf.SoundFile, position: int) -> None:
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
