"""Bringing one audio file to the common clip shape: mono, resampled, fixed length.

Decoding is soundfile's (libsndfile), resampling soxr's through ``librosa.resample`` at
librosa's default quality, and the mono mix librosa's (the mean of channels), so a clip
equals what ``librosa.load(path, sr=sample_rate)`` gives, cropped from its start and
zero-padded at its end. Only the samples the clip needs are decoded, plus a margin that
lets the resampler's filter see the same future samples it would see in the whole file.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import stat
from collections.abc import Iterator

import librosa
import numpy as np
import soundfile as sf

from pipeline.discover import is_url
from pipeline.errors import (
    EmptyAudioError,
    NonFiniteAudioError,
    NotRegularFileError,
    TruncatedAudioError,
)

MONO = "mean of channels"
RESAMPLER = "soxr_hq"
CROP = "start"
PAD = "zeros at end"

# libsndfile shrinks the frame count of a WAV/AIFF file whose data chunk runs past the end
# of the file, and only says so in its log: "data : 44100 (should be 14670)".
_SHORT_DATA_CHUNK = re.compile(r"^\s*(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
STREAMING_SIZE = 0xFFFFFFFF  # the data size a writer to a pipe leaves in the header

# Input samples decoded past the clip's end. Measured: with 256 the first n resampled
# samples equal a whole-file resample to float32 rounding for ratios down to 48 kHz ->
# 22.05 kHz; four times that, scaled with the downsampling ratio, leaves room.
RESAMPLE_MARGIN = 1024


def source_frames_needed(n_samples: int, source_rate: int, sample_rate: int) -> int:
    """Input frames to decode so that resampling gives ``n_samples`` exact output samples."""
    if source_rate == sample_rate:
        return n_samples
    ratio = max(1, math.ceil(source_rate / sample_rate))
    return math.ceil(n_samples * source_rate / sample_rate) + RESAMPLE_MARGIN * ratio


def fit_clip(
    samples: np.ndarray, *, source_rate: int, sample_rate: int, n_samples: int
) -> np.ndarray:
    """Mix decoded samples to mono, resample them and crop or pad them to ``n_samples``.

    Parameters
    ----------
    samples : np.ndarray [shape=(frames, channels)], float32
        Decoded audio as soundfile returns it with ``always_2d=True``.
    source_rate, sample_rate : int
        Rates in Hz of ``samples`` and of the clip.
    n_samples : int
        Length of the clip.

    Returns
    -------
    np.ndarray [shape=(n_samples,)], float32
    """
    mono = librosa.to_mono(np.ascontiguousarray(samples.T))
    resampled = librosa.resample(
        mono, orig_sr=source_rate, target_sr=sample_rate, res_type=RESAMPLER
    )
    return librosa.util.fix_length(resampled, size=n_samples).astype(np.float32, copy=False)


@contextlib.contextmanager
def open_audio(path: str | os.PathLike[str]) -> Iterator[sf.SoundFile]:
    """Open a file whose header shows it can give a clip, as a context manager.

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

        with fsspec.open(location, "rb") as raw, sf.SoundFile(raw) as f:
            check_header(f)
            yield f
        return
    # As bytes: a str would be encoded strictly and fail on a non-UTF-8 file name.
    fd = os.open(os.fsencode(location), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(f"it is {_file_kind(mode)}, not a regular file")
        with sf.SoundFile(fd, closefd=False) as f:
            check_header(f)
            yield f
    finally:
        os.close(fd)


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


def read_clip(path: str | os.PathLike[str], *, sample_rate: int, n_samples: int) -> np.ndarray:
    """Decode one file into a mono float32 clip of ``n_samples`` samples at ``sample_rate``.

    Raises
    ------
    soundfile.LibsndfileError
        libsndfile cannot open or decode the file.
    EmptyAudioError, TruncatedAudioError, NonFiniteAudioError
        The file decodes but cannot give a meaningful clip.
    """
    with open_audio(path) as f:
        wanted = min(f.frames, source_frames_needed(n_samples, f.samplerate, sample_rate))
        samples = f.read(wanted, dtype="float32", always_2d=True)
        source_rate = f.samplerate
    if len(samples) < wanted:
        raise TruncatedAudioError(
            f"the header declares {wanted} frames or more but only {len(samples)} could be read"
        )
    if not np.isfinite(samples).all():
        raise NonFiniteAudioError("the file holds NaN or infinite samples")
    return fit_clip(samples, source_rate=source_rate, sample_rate=sample_rate, n_samples=n_samples)


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
