"""Log-mel spectrograms and their inverse to audio, with librosa's names and conventions.

``log_mel`` is the pure heart of the pipeline: clips in, ``log(mel_power + eps)`` out,
equal bit for bit to ``librosa.feature.melspectrogram`` for the same signal, but with the
filter bank built once per parameter set (librosa rebuilds it on every call) and the STFT
and the mel product run on a whole batch at once. ``log_mel_to_audio`` is its inverse by
Griffin-Lim. Both take librosa's keywords (``sr``, ``n_fft``, ``hop_length``, ``n_mels``,
``fmin``, ``fmax``); a :class:`~melpipe.config.SpectrogramConfig` gives them as
``config.librosa_kwargs``.

The STFT and the filter bank are librosa's own steps, written out here (``_stft``,
``mel_filters``) with the same operations in the same order, and tested equal to
``librosa.stft`` and ``librosa.filters.mel`` bit for bit. The reason is start-up: the
modules that hold them import scipy.signal, scipy.ndimage and numba-compiled audio code,
about 2 s in every worker process on 2 cores, which was most of a run's fixed cost. What
is used from librosa here (``mel_frequencies``) and scipy (``scipy.fft``) imports in a
fraction of that. The inverse, which is not on a run's path, calls librosa directly.
"""

from __future__ import annotations

import functools
import math
from typing import Final

import librosa
import numpy as np
import scipy.fft

from melpipe.errors import ArgumentError

# Analysis conventions, recorded in every store's config.
WINDOW: Final = "hann"
CENTER: Final = True
PAD_MODE: Final = "constant"
POWER: Final = 2.0
MEL_HTK: Final = False
MEL_NORM: Final = "slaney"
EPS: Final = 1e-9


@functools.lru_cache(maxsize=8)
def mel_filters(*, sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """The Slaney mel filter bank, float32 of shape (n_mels, 1 + n_fft // 2), read-only:
    ``librosa.filters.mel(..., htk=False, norm="slaney", dtype=np.float32)``, step for step.

    Cached: a worker process builds it once per parameter set, not once per file.
    """
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)  # librosa.fft_frequencies
    mel_f = librosa.mel_frequencies(n_mels + 2, fmin=fmin, fmax=fmax, htk=MEL_HTK)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])  # MEL_NORM: "slaney"
    weights *= enorm[:, np.newaxis]
    # Empty filters are refused by SpectrogramConfig, with a clearer message than librosa's.
    weights.setflags(write=False)
    return weights


@functools.lru_cache(maxsize=8)
def _hann(n: int) -> np.ndarray:
    """``scipy.signal.get_window("hann", n, fftbins=True)``, as scipy computes it: a
    symmetric window of n + 1 points, general_cosine's sum, the last point dropped."""
    fac = np.linspace(-np.pi, np.pi, n + 1, dtype=np.float64)
    w = np.zeros(n + 1, dtype=np.float64)
    for k, a in enumerate((0.5, 0.5)):
        w += a * np.cos(k * fac)
    window = w[:-1]
    window.setflags(write=False)
    return window


# librosa.util.MAX_MEM_BLOCK: the STFT's frames are transformed in blocks of this many bytes.
_MAX_MEM_BLOCK = 2**8 * 2**10


def _frame(x: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """``librosa.util.frame`` along the last axis: a strided view (..., frame_length, n)."""
    xw = np.lib.stride_tricks.as_strided(
        x,
        strides=(*x.strides, x.strides[-1]),
        shape=(*x.shape[:-1], x.shape[-1] - frame_length + 1, frame_length),
        writeable=False,
    )
    return np.moveaxis(xw, -1, -2)[..., ::hop_length]


def _stft(y: np.ndarray, *, n_fft: int, hop_length: int) -> np.ndarray:
    """``librosa.stft(y, n_fft=n_fft, hop_length=hop_length, window="hann", center=True,
    pad_mode="constant")`` for float32 ``y`` (..., n), complex64 (..., 1 + n_fft // 2,
    frames): the same padding, framing, blocks and ``scipy.fft.rfft`` calls, so the same
    bits. Each frame is windowed and transformed in float64, then stored as complex64."""
    fft_window = _hann(n_fft).reshape((1,) * (y.ndim - 1) + (n_fft, 1))
    half = n_fft // 2
    padding = [(0, 0)] * (y.ndim - 1)
    start_k = int(np.ceil(half / hop_length))
    tail_k = (y.shape[-1] + half - n_fft) // hop_length + 1
    frames_post: np.ndarray | None = None
    if tail_k <= start_k:  # a short signal: padded whole
        start, frames_pre = 0, None
        y = np.pad(y, [*padding, (half, half)], mode=PAD_MODE)
    else:  # only the frames that reach past either end are padded
        start = start_k * hop_length - half
        y_pre = np.pad(y[..., : (start_k - 1) * hop_length - half + n_fft + 1],
                       [*padding, (half, 0)], mode=PAD_MODE)  # fmt: skip
        frames_pre = _frame(y_pre, n_fft, hop_length)[..., :start_k]
        if tail_k * hop_length - half + n_fft <= y.shape[-1] + half:
            y_post = np.pad(y[..., tail_k * hop_length - half :], [*padding, (0, half)],
                            mode=PAD_MODE)  # fmt: skip
            frames_post = _frame(y_post, n_fft, hop_length)
    y_frames = _frame(y[..., start:], n_fft, hop_length)
    n_pre = 0 if frames_pre is None else frames_pre.shape[-1]
    n_post = 0 if frames_post is None else frames_post.shape[-1]
    shape = (*y_frames.shape[:-2], 1 + half, y_frames.shape[-1] + n_pre + n_post)
    stft_matrix = np.zeros(shape, dtype=np.complex64, order="F")
    if frames_pre is not None:
        stft_matrix[..., :n_pre] = scipy.fft.rfft(fft_window * frames_pre, axis=-2)
    if frames_post is not None and n_post:
        stft_matrix[..., -n_post:] = scipy.fft.rfft(fft_window * frames_post, axis=-2)
    n_columns = max(int(_MAX_MEM_BLOCK // (math.prod(y_frames.shape[:-1]) * y_frames.itemsize)), 1)
    for bl_s in range(0, y_frames.shape[-1], n_columns):
        bl_t = min(bl_s + n_columns, y_frames.shape[-1])
        stft_matrix[..., bl_s + n_pre : bl_t + n_pre] = scipy.fft.rfft(
            fft_window * y_frames[..., bl_s:bl_t], axis=-2
        )
    return stft_matrix


def count_empty_mel_filters(*, sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> int:
    """How many rows of :func:`mel_filters` would be all zero, without building it.

    Filter ``i`` is positive exactly at the FFT bins strictly between mel edges ``i`` and
    ``i + 2``. This evaluates librosa's own expressions for the few bins next to each
    lower edge, so a setting with a filter bank of gigabytes is checked in microseconds.
    A property test compares the count with the real filter bank.
    """
    mel_f = librosa.mel_frequencies(n_mels + 2, fmin=fmin, fmax=fmax, htk=MEL_HTK)
    fdiff = np.diff(mel_f)
    bin_hz = 1.0 / (n_fft * (1.0 / sr))  # numpy.fft.rfftfreq's spacing, as librosa gets it
    last_bin = n_fft // 2
    empty = 0
    for i in range(n_mels):
        k = max(0, math.floor(mel_f[i] / bin_hz) - 2)
        # The first bin above the lower edge; librosa's rising slope, term for term.
        while k <= last_bin and not -(mel_f[i] - k * bin_hz) / fdiff[i] > 0:
            k += 1
        if k > last_bin or not (mel_f[i + 2] - k * bin_hz) / fdiff[i + 1] > 0:
            empty += 1
    return empty


def log_mel(
    y: np.ndarray,
    *,
    sr: int,
    n_fft: int,
    hop_length: int,
    n_mels: int,
    fmin: float = 0.0,
    fmax: float | None = None,
    eps: float = EPS,
) -> np.ndarray:
    """Log-mel spectrograms of one clip or a stack of clips.

    Parameters
    ----------
    y : np.ndarray [shape=(..., n)], float32
        Mono audio at ``sr``.
    sr, n_fft, hop_length, n_mels, fmin, fmax
        As in ``librosa.feature.melspectrogram``; ``fmax`` defaults to ``sr / 2``.
    eps : float
        Added to the mel power before the logarithm.

    Returns
    -------
    np.ndarray [shape=(..., n_mels, 1 + n // hop_length)], float32
        ``log(mel_power + eps)`` with power 2, centred Hann frames and the Slaney mel
        scale and norm, as ``librosa.feature.melspectrogram`` gives them. Samples far
        outside [-1, 1] can overflow the power to inf; the result is then not finite,
        and callers check for that.
    """
    y = np.asarray(y, dtype=np.float32)
    n_frames = 1 + y.shape[-1] // hop_length
    if y.size == 0:  # a batch whose files all failed; librosa divides by zero on it
        return np.empty((*y.shape[:-1], n_mels, n_frames), dtype=np.float32)
    spectrum = _stft(y, n_fft=n_fft, hop_length=hop_length)
    filters = mel_filters(
        sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=sr / 2 if fmax is None else fmax
    )
    with np.errstate(over="ignore", invalid="ignore"):  # reported as non-finite output
        power = np.abs(spectrum) ** POWER
        # One BLAS product over the whole batch: (n_mels, bins) @ (..., bins, frames).
        mel = np.matmul(filters, power)
        return np.log(mel + np.float32(eps))


def log_mel_to_audio(
    logmel: np.ndarray,
    *,
    sr: int,
    n_fft: int,
    hop_length: int,
    n_mels: int | None = None,
    fmin: float = 0.0,
    fmax: float | None = None,
    eps: float = EPS,
    length: int | None = None,
    n_iter: int = 32,
    seed: int = 0,
) -> np.ndarray:
    """Audio whose :func:`log_mel` approximates ``logmel``, estimated by Griffin-Lim.

    This is ``librosa.feature.inverse.mel_to_audio`` after undoing the log, except that the
    random initial phase is drawn from ``seed``, so the same call gives the same audio.
    ``n_mels``, when given, is checked against ``logmel``'s shape (..., n_mels, frames).

    Returns
    -------
    np.ndarray [shape=(length,)], float32
    """
    if n_mels is not None and np.shape(logmel)[-2] != n_mels:
        raise ArgumentError(f"Expected {n_mels} mel bands. Got shape {np.shape(logmel)}.")
    mel_power = np.maximum(np.exp(np.asarray(logmel, np.float64)) - eps, 0.0)
    stft_magnitude = librosa.feature.inverse.mel_to_stft(
        mel_power.astype(np.float32),
        sr=sr,
        n_fft=n_fft,
        power=POWER,
        fmin=fmin,
        fmax=sr / 2 if fmax is None else fmax,
        htk=MEL_HTK,
        norm=MEL_NORM,
    )
    return librosa.griffinlim(
        stft_magnitude,
        n_iter=n_iter,
        hop_length=hop_length,
        n_fft=n_fft,
        window=WINDOW,
        center=CENTER,
        pad_mode=PAD_MODE,
        length=length,
        random_state=seed,
    ).astype(np.float32)


def mel_band_centres(*, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Centre frequency in Hz of each mel band, lowest first: the peaks of the filter bank."""
    edges = librosa.mel_frequencies(n_mels=n_mels + 2, fmin=fmin, fmax=fmax, htk=MEL_HTK)
    return edges[1:-1]


def frame_times(*, sr: int, hop_length: int, n_frames: int) -> np.ndarray:
    """Time in seconds of each centred frame, from the start of the clip."""
    return librosa.frames_to_time(np.arange(n_frames), sr=sr, hop_length=hop_length)
