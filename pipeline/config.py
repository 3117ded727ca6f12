"""The frozen, validated description of everything that shapes a spectrogram image.

One :class:`SpectrogramConfig` travels to every task and is written whole into the store's
attributes, so a store always says how its images were made. Parameter names follow
librosa (``sr``-style names are spelled out as ``sample_rate`` only where the CLI needs a
word; the rest are librosa's own).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline import audio, features
from pipeline.errors import ConfigError


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ConfigError(f"Expected {name} to be a positive integer. Got {value!r} instead.")
    return int(value)


def _finite_float(name: str, value: Any) -> float:
    try:
        parsed = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"Expected {name} to be a number. Got {value!r} instead.") from None
    if not math.isfinite(parsed):
        raise ConfigError(f"Expected {name} to be a finite number. Got {value!r} instead.")
    return parsed


@dataclass(frozen=True)
class SpectrogramConfig:
    """Parameters of the audio fitting, the log-mel analysis and the image shape.

    Parameters
    ----------
    sample_rate : int
        Rate in Hz that every file is resampled to (librosa's ``sr``).
    n_samples : int
        Fixed clip length in samples at ``sample_rate``: longer audio is cropped from its
        start, shorter audio is zero-padded at its end.
    n_fft : int
        FFT size; also the window length.
    hop_length : int
        Samples between successive frames.
    n_mels : int
        Number of mel bands (image height).
    fmin, fmax : float
        Frequency range of the mel filter bank in Hz; ``fmax`` at most ``sample_rate / 2``.
    eps : float
        Added to the mel power before the logarithm, ``log(mel_power + eps)``.
    """

    sample_rate: int = 22050
    n_samples: int = 22050
    n_fft: int = 512
    hop_length: int = 256
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float = 11025.0
    eps: float = 1e-9

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_samples", "n_fft", "hop_length", "n_mels"):
            object.__setattr__(self, name, _positive_int(name, getattr(self, name)))
        for name in ("fmin", "fmax", "eps"):
            object.__setattr__(self, name, _finite_float(name, getattr(self, name)))
        nyquist = self.sample_rate / 2
        if self.fmin < 0:
            raise ConfigError(f"Expected fmin >= 0 Hz. Got {self.fmin} instead.")
        if self.fmax > nyquist:
            raise ConfigError(
                f"Expected fmax <= {nyquist:g} Hz (the Nyquist frequency of sample_rate "
                f"{self.sample_rate}). Got {self.fmax:g} instead."
            )
        if self.fmin >= self.fmax:
            raise ConfigError(f"Expected fmin < fmax. Got fmin={self.fmin:g}, fmax={self.fmax:g}.")
        if self.eps <= 0:
            raise ConfigError(f"Expected eps > 0. Got {self.eps!r} instead.")
        filters = features.mel_filters(
            sr=self.sample_rate,
            n_fft=self.n_fft,
            n_mels=self.n_mels,
            fmin=self.fmin,
            fmax=self.fmax,
        )
        empty = int((filters.max(axis=1) == 0).sum())
        if empty:
            raise ConfigError(
                f"n_mels={self.n_mels} is too large for n_fft={self.n_fft} at sample_rate "
                f"{self.sample_rate} between {self.fmin:g} and {self.fmax:g} Hz: {empty} mel "
                "filters would be empty. Use fewer mels or a larger n_fft."
            )

    @classmethod
    def from_options(
        cls,
        *,
        sample_rate: int = 22050,
        n_mels: int = 128,
        hop_length: int = 256,
        n_fft: int | None = None,
        fmin: float = 0.0,
        fmax: float | None = None,
        duration: float | None = None,
        frames: int | None = None,
    ) -> SpectrogramConfig:
        """Build a config from the CLI's options, resolving the defaults that depend on others.

        ``n_fft`` defaults to twice ``hop_length`` (the post's choice), ``fmax`` to the
        Nyquist frequency, and the clip length to one second. ``frames`` asks for a clip
        that gives exactly that many centred frames.
        """
        sample_rate = _positive_int("sample_rate", sample_rate)
        hop_length = _positive_int("hop_length", hop_length)
        if duration is not None and frames is not None:
            raise ConfigError("Give either duration or frames, not both.")
        if frames is not None:
            n_samples = (_positive_int("frames", frames) - 1) * hop_length
            if n_samples == 0:
                raise ConfigError("Expected frames >= 2, since one frame is no clip.")
        else:
            seconds = 1.0 if duration is None else _finite_float("duration", duration)
            if seconds <= 0:
                raise ConfigError(f"Expected a positive duration. Got {seconds:g} s instead.")
            n_samples = round(seconds * sample_rate)
            if n_samples == 0:
                raise ConfigError(
                    f"A duration of {seconds:g} s holds no sample at {sample_rate} Hz."
                )
        return cls(
            sample_rate=sample_rate,
            n_samples=n_samples,
            n_fft=2 * hop_length if n_fft is None else n_fft,
            hop_length=hop_length,
            n_mels=n_mels,
            fmin=fmin,
            fmax=sample_rate / 2 if fmax is None else fmax,
        )

    @property
    def n_frames(self) -> int:
        """Number of frames per clip (centred frames, as librosa counts them)."""
        return 1 + self.n_samples // self.hop_length

    @property
    def image_shape(self) -> tuple[int, int]:
        return (self.n_mels, self.n_frames)

    def to_dict(self) -> dict[str, Any]:
        """Every parameter that shaped the images, for the store's ``config`` attribute."""
        return {
            **dataclasses.asdict(self),
            "n_frames": self.n_frames,
            "duration": self.n_samples / self.sample_rate,
            "window": features.WINDOW,
            "center": features.CENTER,
            "pad_mode": features.PAD_MODE,
            "power": features.POWER,
            "mel_htk": features.MEL_HTK,
            "mel_norm": features.MEL_NORM,
            "mono": audio.MONO,
            "resampler": audio.RESAMPLER,
            "crop": audio.CROP,
            "pad": audio.PAD,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpectrogramConfig:
        """Rebuild a config from :meth:`to_dict` output; derived and fixed keys are checked."""
        fields = {f.name for f in dataclasses.fields(cls)}
        config = cls(**{k: v for k, v in data.items() if k in fields})
        expected = config.to_dict()
        differing = sorted(k for k in expected if k in data and data[k] != expected[k])
        if differing:
            raise ConfigError(
                "The recorded config does not match this version of specpipe in "
                f"{', '.join(differing)}."
            )
        return config
