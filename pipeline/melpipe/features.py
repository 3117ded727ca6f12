"""Log-mel spectrograms and their inverse to audio, with librosa's names and conventions.

``log_mel`` is the pure heart of the pipeline: clips in, ``log(mel_power + eps)`` out,
with ``librosa.feature.melspectrogram``'s framing, window, filter bank and power, on a
whole batch at once: each frame transformed in float64 as librosa does, everything after
the power in float32 as librosa does it too, so the values agree with librosa's to about
1e-6 in log units (docs/design.md, "Precision", has the measurements). The filter bank is
librosa's, bit for bit, built once per parameter set (librosa rebuilds it on every call)
and applied block by block, since each FFT bin feeds at most two bands, and the batch is
transformed a few clips at a time. ``log_mel_to_audio`` is the inverse by Griffin-Lim.
Both take librosa's keywords (``sr``, ``n_fft``, ``hop_length``, ``n_mels``, ``fmin``,
``fmax``); a :class:`~melpipe.config.SpectrogramConfig` gives them as
``config.librosa_kwargs``.

The filter bank and the window are librosa's and scipy's steps, written out here
(``mel_filters``, ``_hann``) and tested equal to theirs bit for bit. The reason is
start-up: the modules that hold them import scipy.signal, scipy.ndimage and
numba-compiled audio code, about 2 s in every worker process on 2 cores, which was most
of a run's fixed cost. What is used from librosa here (``mel_frequencies``) and scipy
(``scipy.fft``) imports in a fraction of that. The inverse, which is not on a run's path,
calls librosa directly.
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
# How the values are computed, in the plan of every store: an unfinished run resumes only
# with the same, so that no store mixes values of two ways of computing them.
ANALYSIS: Final = "float64 FFT, float32 power and mel product by blocks (melpipe 0.3)"


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


# Bands per block of the mel product (see _mel_blocks). Measured on the default settings
# (128 bands, 257 bins): blocks of 16 hold 13% of the dense product's multiplications and
# run it 3.5 times faster; smaller blocks save fewer multiplications than their calls cost.
_BANDS_PER_BLOCK = 16


@functools.lru_cache(maxsize=8)
def _mel_blocks(
    *, sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float
) -> tuple[tuple[int, int, int, np.ndarray], ...]:
    """The filter bank cut into dense blocks that hold all its non-zero weights: for each
    run of :data:`_BANDS_PER_BLOCK` bands, (first band, first bin, end bin, weights of
    those bands over those bins). A Slaney or HTK triangle spans only the bins between
    its two neighbours' centres, so each bin feeds at most two bands and the blocks skip
    almost all of the product's zeros."""
    filters = mel_filters(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    nonzero = filters != 0
    first_bin = nonzero.argmax(axis=1)
    end_bin = filters.shape[1] - nonzero[:, ::-1].argmax(axis=1)
    blocks = []
    for band in range(0, n_mels, _BANDS_PER_BLOCK):
        rows = slice(band, band + _BANDS_PER_BLOCK)
        lo, hi = int(first_bin[rows].min()), int(end_bin[rows].max())
        weights = np.ascontiguousarray(filters[rows, lo:hi])
        weights.setflags(write=False)
        blocks.append((band, lo, hi, weights))
    return tuple(blocks)


# Clips whose frames are transformed together: about this many bytes of float32 frames,
# so that the temporaries stay in cache and are reused by the allocator. Measured on 2
# cores with the defaults (178 kB of frames per clip): 5 clips at a time ran the analysis
# 1.5 times faster than a batch of 64 at once, whose 11 MB arrays were page-faulted in on
# each call.
_SPECTRUM_BYTES = 1 << 20


def n_frames_of(n: int, *, n_fft: int, hop_length: int) -> int:
    """Frames of a signal of ``n`` samples, as librosa's centred STFT makes them: one every
    ``hop_length`` samples across the signal padded with ``n_fft // 2`` either side
    (``1 + n // hop_length`` for an even ``n_fft``)."""
    return 1 + (n + 2 * (n_fft // 2) - n_fft) // hop_length


def power_spectrum(y: np.ndarray, *, n_fft: int, hop_length: int) -> np.ndarray:
    """``abs(librosa.stft(y, n_fft, hop_length, window="hann", center=True,
    pad_mode="constant")) ** 2`` for float32 clips (n_clips, n), in float32, laid out
    (n_clips, frames, 1 + n_fft // 2): the frames librosa makes (zeros of ``n_fft // 2``
    samples either side, frames every ``hop_length`` samples from the first), windowed
    and transformed in float64 as librosa does, the power rounded once to float32. Every
    frame is transformed alike, so a clip's powers do not depend on the other clips of the
    batch. (A float32 transform would be 15% faster and moves quiet bins: see
    docs/design.md, "Precision".)"""
    half = n_fft // 2
    padded = np.pad(y, [(0, 0), (half, half)], mode=PAD_MODE)
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[:, ::hop_length]
    spectrum = scipy.fft.rfft(frames * _hann(n_fft), axis=-1)  # complex128
    parts = spectrum.view(np.float64)  # real and imaginary parts, interleaved
    squares = np.square(parts[..., 0::2])
    squares += np.square(parts[..., 1::2])
    return squares.astype(np.float32)


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
    np.ndarray [shape=(..., n_mels, n_frames_of(n, ...))], float32
        ``log(mel_power + eps)`` with power 2, centred Hann frames and the Slaney mel
        scale and norm, as ``librosa.feature.melspectrogram`` gives them, to float32
        rounding of the sums; each clip's values are the same in any batch. Samples far
        outside [-1, 1] can overflow the power to inf; the result is then not finite,
        and callers check for that.
    """
    y = np.asarray(y, dtype=np.float32)
    n_frames = n_frames_of(y.shape[-1], n_fft=n_fft, hop_length=hop_length)
    if y.size == 0:  # a batch whose files all failed; librosa divides by zero on it
        return np.empty((*y.shape[:-1], n_mels, n_frames), dtype=np.float32)
    clips = y.reshape(-1, y.shape[-1])
    blocks = _mel_blocks(
        sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=sr / 2 if fmax is None else fmax
    )
    mel = np.empty((len(clips), n_mels, n_frames), dtype=np.float32)
    step = max(1, _SPECTRUM_BYTES // (n_frames * n_fft * 4))
    with np.errstate(over="ignore", invalid="ignore"):  # reported as non-finite output
        for first in range(0, len(clips), step):
            part = slice(first, first + step)
            power = power_spectrum(clips[part], n_fft=n_fft, hop_length=hop_length)
            power_t = power.transpose(0, 2, 1)  # (clips, bins, frames)
            # One BLAS product per block and clip, of the same shapes whatever the batch,
            # so that a clip's values never depend on the batch it came in.
            for band, lo, hi, weights in blocks:
                out = mel[part, band : band + len(weights)]
                np.matmul(weights, power_t[:, lo:hi], out=out)
        mel += np.float32(eps)
        np.log(mel, out=mel)
    return mel.reshape(*y.shape[:-1], n_mels, mel.shape[-1])


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
