"""Audio from log spectrograms, by Griffin-Lim: the inverse of
:func:`melpipe.analysis.features.spectrogram`, which training code uses to hear a clip
(``melpipe invert``, :meth:`melpipe.read.reader.SpectrogramStore.to_audio`). It calls
librosa directly: it is not on a run's path, so its import time does not matter.
"""

from __future__ import annotations

import librosa
import numpy as np

from melpipe.analysis.features import EPS, WINDOW, Analysis, LibrosaMel, bank, first_pad
from melpipe.errors import ArgumentError


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
    """Audio whose :func:`log_mel` approximates ``logmel``, estimated by Griffin-Lim:
    :func:`to_audio` with librosa's keywords. ``n_mels``, when given, is checked against
    ``logmel``'s shape (..., n_mels, frames)."""
    if n_mels is not None and np.shape(logmel)[-2] != n_mels:
        raise ArgumentError(f"Expected {n_mels} mel bands. Got shape {np.shape(logmel)}.")
    analysis = LibrosaMel(sample_rate=sr, n_fft=n_fft, hop_length=hop_length,
                          n_mels=np.shape(logmel)[-2], fmin=fmin, fmax=fmax, eps=eps)  # fmt: skip
    return to_audio(logmel, analysis, length=length, n_iter=n_iter, seed=seed)


def to_audio(
    values: np.ndarray,
    analysis: Analysis,
    *,
    length: int | None = None,
    n_iter: int = 32,
    seed: int = 0,
) -> np.ndarray:
    """Audio whose :func:`spectrogram` approximates ``values`` (n_bands, frames), by
    Griffin-Lim from a random phase drawn from ``seed``, so the same call gives the same
    audio. For the defaults this is ``librosa.feature.inverse.mel_to_audio`` after undoing
    the log; a frame padding other than centred is undone by dropping the samples it
    added.

    Returns
    -------
    np.ndarray [shape=(length,)], float32
    """
    level = np.exp(np.asarray(values, np.float64))
    if analysis.log == "add":
        level = np.maximum(level - analysis.eps, 0.0)
    level = np.maximum(level ** (2.0 / analysis.power) - analysis.stft_eps, 0.0)  # re^2+im^2
    if analysis.spectrum == "mel":
        mel = bank(analysis)
        magnitude = librosa.feature.inverse.mel_to_stft(
            level.astype(np.float32), sr=analysis.sample_rate, n_fft=analysis.n_fft, power=2.0,
            fmin=mel["fmin"], fmax=mel["fmax"], htk=mel["htk"],
            norm="slaney" if analysis.mel_norm == "slaney" else None,
        )  # fmt: skip
    else:
        magnitude = np.sqrt(level).astype(np.float32)
        if analysis.drop_nyquist:  # the dropped bin is taken as silent
            magnitude = np.concatenate([magnitude, np.zeros_like(magnitude[..., :1, :])], -2)
    center = analysis.padding == "center"
    skip = 0 if center else first_pad(analysis)
    audio = librosa.griffinlim(
        magnitude,
        n_iter=n_iter,
        hop_length=analysis.hop_length,
        win_length=analysis.win_length,
        n_fft=analysis.n_fft,
        window=WINDOW,
        center=center,
        pad_mode=analysis.pad_mode,  # type: ignore[arg-type]
        length=None if length is None else length + skip,
        random_state=seed,
    )
    return audio[..., skip:].astype(np.float32)
