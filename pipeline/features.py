"""Log-mel spectrograms of stacked clips, computed the way librosa computes one.

``log_mel`` is the pure heart of the pipeline: an array of clips in, an array of
``log(mel_power + eps)`` images out. It calls librosa's STFT and filter bank so the result
matches ``librosa.feature.melspectrogram`` for the same signal, but builds the filter bank
once per parameter set (librosa rebuilds it on every call) and runs the STFT and the mel
product on the whole batch at once.
"""

from __future__ import annotations

import functools
import warnings
from typing import TYPE_CHECKING, Final

import librosa
import numpy as np

if TYPE_CHECKING:
    from pipeline.config import SpectrogramConfig

# Analysis conventions, recorded in every store's config.
WINDOW: Final = "hann"
CENTER: Final = True
PAD_MODE: Final = "constant"
POWER: Final = 2.0
MEL_HTK: Final = False
MEL_NORM: Final = "slaney"


@functools.lru_cache(maxsize=8)
def mel_filters(*, sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """The Slaney mel filter bank, float32 of shape (n_mels, 1 + n_fft // 2), read-only.

    Cached: a worker process builds it once per parameter set, not once per file.
    """
    with warnings.catch_warnings():
        # Empty filters are reported by SpectrogramConfig with a clearer message.
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


def log_mel(clips: np.ndarray, config: SpectrogramConfig) -> np.ndarray:
    """Log-mel spectrograms of one clip or a stack of clips.

    Parameters
    ----------
    clips : np.ndarray [shape=(..., n_samples)], float32
        Mono clips at ``config.sample_rate``.
    config : SpectrogramConfig

    Returns
    -------
    np.ndarray [shape=(..., n_mels, n_frames)], float32
        ``log(mel_power + eps)`` with power 2, centred Hann frames and the Slaney mel
        scale and norm, as ``librosa.feature.melspectrogram`` gives them.
    """
    clips = np.asarray(clips, dtype=np.float32)
    if clips.size == 0:  # a batch whose files all failed; librosa divides by zero on it
        return np.empty((*clips.shape[:-1], config.n_mels, config.n_frames), dtype=np.float32)
    spectrum = librosa.stft(
        clips,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        window=WINDOW,
        center=CENTER,
        pad_mode=PAD_MODE,
    )
    power = np.abs(spectrum) ** POWER
    filters = mel_filters(
        sr=config.sample_rate,
        n_fft=config.n_fft,
        n_mels=config.n_mels,
        fmin=config.fmin,
        fmax=config.fmax,
    )
    # One BLAS product over the whole batch: (n_mels, bins) @ (..., bins, frames).
    mel = np.matmul(filters, power)
    return np.log(mel + np.float32(config.eps))


def mel_band_centres(config: SpectrogramConfig) -> np.ndarray:
    """Centre frequency in Hz of each mel band, lowest first: the peaks of the filter bank."""
    edges = librosa.mel_frequencies(
        n_mels=config.n_mels + 2, fmin=config.fmin, fmax=config.fmax, htk=MEL_HTK
    )
    return edges[1:-1]


def frame_times(config: SpectrogramConfig) -> np.ndarray:
    """Time in seconds of each frame's centre, from the start of the clip."""
    return librosa.frames_to_time(
        np.arange(config.n_frames), sr=config.sample_rate, hop_length=config.hop_length
    )
