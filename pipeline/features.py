"""Log-mel spectrograms and their inverse to audio, with librosa's names and conventions.

``log_mel`` is the pure heart of the pipeline: clips in, ``log(mel_power + eps)`` out. It
calls librosa's STFT and filter bank, so the result matches
``librosa.feature.melspectrogram`` for the same signal, but builds the filter bank once per
parameter set (librosa rebuilds it on every call) and runs the STFT and the mel product on
a whole batch at once. ``log_mel_to_audio`` is its inverse by Griffin-Lim. Both take
librosa's keywords (``sr``, ``n_fft``, ``hop_length``, ``n_mels``, ``fmin``, ``fmax``);
a :class:`~pipeline.config.SpectrogramConfig` gives them as ``config.librosa_kwargs``.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Final

import librosa
import numpy as np

from pipeline.errors import ArgumentError

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
    """The Slaney mel filter bank, float32 of shape (n_mels, 1 + n_fft // 2), read-only.

    Cached: a worker process builds it once per parameter set, not once per file.
    """
    with warnings.catch_warnings():
        # Empty filters are refused by SpectrogramConfig with a clearer message.
        warnings.simplefilter("ignore", UserWarning)
        filters = librosa.filters.mel(
            sr=sr,
            n_fft=n_fft,
            n_mels=n_mels,
            fmin=fmin,
            fmax=fmax,
            htk=MEL_HTK,
            norm=MEL_NORM,
            dtype=np.float32,
        )
    filters.setflags(write=False)
    return filters


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
    spectrum = librosa.stft(
        y, n_fft=n_fft, hop_length=hop_length, window=WINDOW, center=CENTER, pad_mode=PAD_MODE
    )
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
