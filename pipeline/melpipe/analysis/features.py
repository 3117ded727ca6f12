"""Log spectrograms and their inverse to audio, with librosa's names and conventions.

``spectrogram`` is the pure heart of the pipeline: clips in, log features out, by the
parameters of one :class:`Analysis` (a config is one), on a whole
batch at once. By default it is the post's ``log(mel_power + eps)`` with
``librosa.feature.melspectrogram``'s framing, window, filter bank and power; the presets
(:mod:`melpipe.analysis.presets`) choose other framings, magnitude, HTK filters without norm,
linear bins and ``log(max(x, eps))``. Each frame is transformed in float64 as librosa
does, everything after the power in float32 as librosa does it too, so the values agree
with librosa's to about 1e-6 in log units (docs/design.md, "Precision", has the
measurements). The filter bank is librosa's, bit for bit, built once per parameter set
(librosa rebuilds it on every call) and applied block by block, since each FFT bin feeds
at most two bands, and the batch is transformed a few clips at a time. The inverse, by
Griffin-Lim, is :mod:`melpipe.analysis.inverse`'s. ``log_mel`` takes librosa's keywords
(``sr``, ``n_fft``, ``hop_length``, ``n_mels``, ``fmin``, ``fmax``) for the post's
analysis; ``config.librosa_kwargs`` gives them.

The filter bank and the window are librosa's and scipy's steps, written out here
(``mel_filters``, ``_window``) and tested equal to theirs bit for bit. The reason is
start-up: the modules that hold them import scipy.signal, scipy.ndimage and
numba-compiled audio code, about 2 s in every worker process on 2 cores, which was most
of a run's fixed cost. What is used from librosa here (``mel_frequencies``) and scipy
(``scipy.fft``) imports in a fraction of that. The inverse, which is not on a run's path,
calls librosa directly.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Final, Protocol

import librosa
import numpy as np
import scipy.fft

# Conventions that every analysis shares, recorded in every store's config.
WINDOW: Final = "hann"
PAD_MODE: Final = "constant"  # librosa's default for centred frames
EPS: Final = 1e-9
# How the values are computed, in the plan of every store: an unfinished run resumes only
# with the same, so that no store mixes values of two ways of computing them.
ANALYSIS: Final = "float64 FFT, float32 power and band product by blocks (melpipe 0.4)"

SPECTRA: Final = ("mel", "linear")
PADDINGS: Final = ("center", "same", "end")
PAD_MODES: Final = ("constant", "reflect")
LOGS: Final = ("add", "clamp")
MEL_NORMS: Final = ("slaney", "none")


class Analysis(Protocol):
    """What an analysis must say, from a clip's samples to its log spectrogram: what
    :func:`spectrogram` reads. A :class:`~melpipe.analysis.config.SpectrogramConfig` is
    one; :func:`log_mel` makes one of librosa's keywords.

    ``spectrum``
        ``mel`` (a triangular filter bank, ``mel_htk`` choosing HTK's mel scale over
        Slaney's, ``mel_norm`` the Slaney area norm or none) or ``linear`` (the FFT's bins,
        ``drop_nyquist`` leaving out the last; the filter bank's parameters are None).
    ``padding``
        ``center``: librosa's (and torch's) centred frames, ``n_fft // 2`` samples of
        ``pad_mode`` either side; ``same``: ``(n_fft - hop_length) // 2`` reflected samples
        either side, frames from there (HiFi-GAN's and BigVGAN's manual padding with
        ``center=False``); ``end``: frames from sample 0, zeros appended so that the last
        frame starts inside the clip (``tf.signal.stft(..., pad_end=True)``).
    ``power``, ``stft_eps``
        ``(re**2 + im**2 + stft_eps) ** (power / 2)``: 1 for magnitude, 2 for power.
    ``log``, ``eps``
        ``add``: ``log(x + eps)``; ``clamp``: ``log(max(x, eps))``. Natural logarithms.
    """

    @property
    def sample_rate(self) -> int: ...
    @property
    def n_fft(self) -> int: ...
    @property
    def hop_length(self) -> int: ...
    @property
    def win_length(self) -> int: ...
    @property
    def padding(self) -> str: ...
    @property
    def pad_mode(self) -> str: ...
    @property
    def power(self) -> float: ...
    @property
    def stft_eps(self) -> float: ...
    @property
    def spectrum(self) -> str: ...
    @property
    def n_mels(self) -> int | None: ...
    @property
    def fmin(self) -> float | None: ...
    @property
    def fmax(self) -> float | None: ...
    @property
    def mel_htk(self) -> bool | None: ...
    @property
    def mel_norm(self) -> str | None: ...
    @property
    def drop_nyquist(self) -> bool: ...
    @property
    def log(self) -> str: ...
    @property
    def eps(self) -> float: ...


@dataclass(frozen=True, kw_only=True)
class LibrosaMel:
    """The analysis of ``librosa.feature.melspectrogram``'s keywords, with its conventions
    (power 2, centred Hann frames padded with zeros, the Slaney mel scale and norm) and
    ``log(x + eps)``: what :func:`log_mel` and
    :func:`melpipe.analysis.inverse.log_mel_to_audio` compute."""

    sample_rate: int
    n_fft: int
    hop_length: int
    n_mels: int
    fmin: float = 0.0
    fmax: float | None = None
    eps: float = EPS
    padding: str = "center"
    pad_mode: str = PAD_MODE
    power: float = 2.0
    stft_eps: float = 0.0
    spectrum: str = "mel"
    mel_htk: bool = False
    mel_norm: str = "slaney"
    drop_nyquist: bool = False
    log: str = "add"

    @property
    def win_length(self) -> int:
        return self.n_fft


def bands_of(analysis: Analysis) -> int:
    """Rows of a spectrogram: mel bands, or frequency bins."""
    if analysis.spectrum == "mel":
        assert analysis.n_mels is not None
        return analysis.n_mels
    return analysis.n_fft // 2 + 1 - int(analysis.drop_nyquist)


def bank(analysis: Analysis) -> dict[str, Any]:
    """The filter bank's parameters, as :func:`mel_filters` takes them."""
    sr = analysis.sample_rate
    fmax = sr / 2 if analysis.fmax is None else analysis.fmax
    return {"sr": sr, "n_fft": analysis.n_fft, "n_mels": analysis.n_mels,
            "fmin": analysis.fmin or 0.0, "fmax": fmax, "htk": bool(analysis.mel_htk),
            "norm": analysis.mel_norm or "slaney"}  # fmt: skip


def frames_of(analysis: Analysis, n: int) -> int:
    """Frames of a clip of ``n`` samples (see :func:`n_frames_of`)."""
    return n_frames_of(n, n_fft=analysis.n_fft, hop_length=analysis.hop_length,
                       padding=analysis.padding)  # fmt: skip


def first_pad(analysis: Analysis) -> int:
    """Samples put before a clip's first: the first frame starts this far before it."""
    return left_pad(n_fft=analysis.n_fft, hop_length=analysis.hop_length,
                    padding=analysis.padding)  # fmt: skip


def centre_offset(analysis: Analysis) -> float:
    """Samples from a clip's first to the centre of its first frame."""
    return analysis.n_fft / 2 - first_pad(analysis) if analysis.padding != "center" else 0.0


@functools.lru_cache(maxsize=8)
def mel_filters(
    *,
    sr: int,
    n_fft: int,
    n_mels: int,
    fmin: float,
    fmax: float,
    htk: bool = False,
    norm: str = "slaney",
) -> np.ndarray:
    """The mel filter bank, float32 of shape (n_mels, 1 + n_fft // 2), read-only:
    ``librosa.filters.mel(..., htk=htk, norm=norm or None, dtype=np.float32)``, step for
    step (``norm="none"`` for none).

    Cached: a worker process builds it once per parameter set, not once per file.
    """
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)  # librosa.fft_frequencies
    mel_f = librosa.mel_frequencies(n_mels + 2, fmin=fmin, fmax=fmax, htk=htk)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    if norm == "slaney":
        enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])
        weights *= enorm[:, np.newaxis]
    # Empty filters are refused by SpectrogramConfig, with a clearer message than librosa's.
    weights.setflags(write=False)
    return weights


@functools.lru_cache(maxsize=8)
def _window(n_fft: int, win_length: int) -> np.ndarray:
    """``scipy.signal.get_window("hann", win_length, fftbins=True)``, as scipy computes it
    (a symmetric window of ``win_length + 1`` points, general_cosine's sum, the last point
    dropped), centred in ``n_fft`` samples of zeros as ``librosa.util.pad_center`` and
    ``torch.stft`` place a shorter window: ``(n_fft - win_length) // 2`` before it."""
    fac = np.linspace(-np.pi, np.pi, win_length + 1, dtype=np.float64)
    w = np.zeros(win_length + 1, dtype=np.float64)
    for k, a in enumerate((0.5, 0.5)):
        w += a * np.cos(k * fac)
    window = np.zeros(n_fft, dtype=np.float64)
    left = (n_fft - win_length) // 2
    window[left : left + win_length] = w[:-1]
    window.setflags(write=False)
    return window


# Bands per block of the mel product (see _mel_blocks). Measured on the default settings
# (128 bands, 257 bins): blocks of 16 hold 13% of the dense product's multiplications and
# run it 3.5 times faster; smaller blocks save fewer multiplications than their calls cost.
_BANDS_PER_BLOCK = 16


@functools.lru_cache(maxsize=8)
def _mel_blocks(**bank: Any) -> tuple[tuple[int, int, int, np.ndarray], ...]:
    """The filter bank cut into dense blocks that hold all its non-zero weights: for each
    run of :data:`_BANDS_PER_BLOCK` bands, (first band, first bin, end bin, weights of
    those bands over those bins). A Slaney or HTK triangle spans only the bins between
    its two neighbours' centres, so each bin feeds at most two bands and the blocks skip
    almost all of the product's zeros."""
    filters = mel_filters(**bank)
    nonzero = filters != 0
    first_bin = nonzero.argmax(axis=1)
    end_bin = filters.shape[1] - nonzero[:, ::-1].argmax(axis=1)
    blocks = []
    for band in range(0, len(filters), _BANDS_PER_BLOCK):
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


def left_pad(*, n_fft: int, hop_length: int, padding: str) -> int:
    """Samples a padding puts before a signal's first (see :class:`Analysis`); ``center``
    and ``same`` put as many after its last."""
    return {"center": n_fft // 2, "same": (n_fft - hop_length) // 2, "end": 0}[padding]


def n_frames_of(n: int, *, n_fft: int, hop_length: int, padding: str = "center") -> int:
    """Frames of a signal of ``n`` samples (see :class:`Analysis` for the paddings):
    librosa's centred count, ``1 + (n + 2 * (n_fft // 2) - n_fft) // hop_length``
    (``1 + n // hop_length`` for an even ``n_fft``); with ``same`` padding, as many as fit
    in the padded signal; with ``end``, ``ceil(n / hop_length)``, as ``tf.signal.frame``
    counts them."""
    if padding == "end":
        return -(-n // hop_length)
    pad = left_pad(n_fft=n_fft, hop_length=hop_length, padding=padding)
    return 1 + (n + 2 * pad - n_fft) // hop_length


def n_samples_for(frames: int, *, n_fft: int, hop_length: int, padding: str = "center") -> int:
    """The clip length that gives exactly ``frames`` frames (:func:`n_frames_of`): the
    least for ``center`` and ``same`` (an odd window pads one sample less than it spans,
    so one more sample keeps the last frame), whole hops for ``end``."""
    if padding == "end":
        return frames * hop_length
    pad = left_pad(n_fft=n_fft, hop_length=hop_length, padding=padding)
    return (frames - 1) * hop_length + n_fft - 2 * pad


def _frames(y: np.ndarray, analysis: Analysis) -> np.ndarray:
    """The frames of clips (n_clips, n), (n_clips, frames, n_fft), a view of their padded
    copy."""
    n_fft, hop = analysis.n_fft, analysis.hop_length
    n_frames = frames_of(analysis, y.shape[-1])
    if analysis.padding == "end":
        total = (n_frames - 1) * hop + n_fft
        padded = np.pad(y, [(0, 0), (0, max(0, total - y.shape[-1]))])
    else:
        mode = analysis.pad_mode if analysis.padding == "center" else "reflect"
        pad = first_pad(analysis)
        padded = np.pad(y, [(0, 0), (pad, pad)], mode=mode)  # type: ignore[call-overload]
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[:, ::hop]
    return frames[:, :n_frames]


def power_spectrum(y: np.ndarray, analysis: Analysis) -> np.ndarray:
    """``(re**2 + im**2 + stft_eps) ** (power / 2)`` of the STFT of float32 clips
    (n_clips, n), in float32, laid out (n_clips, frames, 1 + n_fft // 2): the frames of
    ``analysis.padding``, Hann-windowed and transformed in float64 as librosa does, the
    result rounded once to float32. Every frame is transformed alike, so a clip's values
    do not depend on the other clips of the batch. (A float32 transform would be 15%
    faster and moves quiet bins: see docs/design.md, "Precision".)"""
    frames = _frames(y, analysis)
    spectrum = scipy.fft.rfft(frames * _window(analysis.n_fft, analysis.win_length), axis=-1)
    parts = spectrum.view(np.float64)  # real and imaginary parts, interleaved
    squares = np.square(parts[..., 0::2])
    squares += np.square(parts[..., 1::2])
    if analysis.stft_eps:
        squares += analysis.stft_eps
    if analysis.power == 1.0:
        np.sqrt(squares, out=squares)
    elif analysis.power != 2.0:
        np.power(squares, analysis.power / 2, out=squares)
    return squares.astype(np.float32)


def count_empty_mel_filters(
    *, sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float, htk: bool = False
) -> int:
    """How many rows of :func:`mel_filters` would be all zero, without building it.

    Filter ``i`` is positive exactly at the FFT bins strictly between mel edges ``i`` and
    ``i + 2`` (whatever the norm). This evaluates librosa's own expressions for the few
    bins next to each lower edge, so a setting with a filter bank of gigabytes is checked
    in microseconds. A property test compares the count with the real filter bank.
    """
    mel_f = librosa.mel_frequencies(n_mels + 2, fmin=fmin, fmax=fmax, htk=htk)
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


def spectrogram(y: np.ndarray, analysis: Analysis) -> np.ndarray:
    """Log spectrograms of one clip or a stack of clips, by every parameter of ``analysis``.

    Parameters
    ----------
    y : np.ndarray [shape=(..., n)], float32
        Mono audio at ``analysis.sample_rate``.

    Returns
    -------
    np.ndarray [shape=(..., n_bands, frames_of(analysis, n))], float32
        Bands lowest first. For the defaults, ``log(mel_power + eps)`` with centred Hann
        frames and the Slaney mel scale and norm, as ``librosa.feature.melspectrogram``
        gives them, to float32 rounding of the sums; each clip's values are the same in
        any batch. Samples far outside [-1, 1] can overflow the power to inf; the result
        is then not finite, and callers check for that.
    """
    y = np.asarray(y, dtype=np.float32)
    n_frames, n_bands = frames_of(analysis, y.shape[-1]), bands_of(analysis)
    if y.size == 0:  # a batch whose files all failed; librosa divides by zero on it
        return np.empty((*y.shape[:-1], n_bands, n_frames), dtype=np.float32)
    clips = y.reshape(-1, y.shape[-1])
    out = np.empty((len(clips), n_bands, n_frames), dtype=np.float32)
    step = max(1, _SPECTRUM_BYTES // (n_frames * analysis.n_fft * 4))
    with np.errstate(over="ignore", invalid="ignore"):  # reported as non-finite output
        for first in range(0, len(clips), step):
            part = slice(first, first + step)
            power_t = power_spectrum(clips[part], analysis).transpose(0, 2, 1)  # bins, frames
            if analysis.spectrum == "linear":
                out[part] = power_t[:, :n_bands]
                continue
            # One BLAS product per block and clip, of the same shapes whatever the batch,
            # so that a clip's values never depend on the batch it came in.
            for band, lo, hi, weights in _mel_blocks(**bank(analysis)):
                np.matmul(weights, power_t[:, lo:hi], out=out[part, band : band + len(weights)])
        if analysis.log == "add":
            out += np.float32(analysis.eps)
        else:
            np.maximum(out, np.float32(analysis.eps), out=out)
        np.log(out, out=out)
    return out.reshape(*y.shape[:-1], n_bands, n_frames)


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
    """``log(mel_power + eps)`` of one clip or a stack of clips, with
    ``librosa.feature.melspectrogram``'s keywords and conventions (power 2, centred Hann
    frames padded with zeros, the Slaney mel scale and norm): :func:`spectrogram` of
    those. ``fmax`` defaults to ``sr / 2``. Returns float32 of shape
    (..., n_mels, n_frames)."""
    analysis = LibrosaMel(sample_rate=sr, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
                          fmin=fmin, fmax=fmax, eps=eps)  # fmt: skip
    return spectrogram(y, analysis)


def band_centres(analysis: Analysis) -> np.ndarray:
    """Centre frequency in Hz of each band, lowest first: the peaks of the mel filter bank,
    or the frequencies of the FFT's bins."""
    if analysis.spectrum == "linear":
        return np.fft.rfftfreq(analysis.n_fft, 1.0 / analysis.sample_rate)[: bands_of(analysis)]
    mel = bank(analysis)
    edges = librosa.mel_frequencies(mel["n_mels"] + 2, fmin=mel["fmin"], fmax=mel["fmax"],
                                    htk=mel["htk"])  # fmt: skip
    return edges[1:-1]


def frame_times(analysis: Analysis, n_frames: int) -> np.ndarray:
    """Time in seconds of the centre of each frame, from the start of the clip."""
    offset = centre_offset(analysis)
    return (np.arange(n_frames) * analysis.hop_length + offset) / analysis.sample_rate
