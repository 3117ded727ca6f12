"""The frozen, validated description of everything that shapes a spectrogram image.

One :class:`SpectrogramConfig` travels to every task and is written whole into the store's
attributes, so a store always says how its images were made. Its names are librosa's
(``n_fft``, ``hop_length``, ``n_mels``, ``fmin``, ``fmax``), except ``sample_rate`` for
librosa's ``sr``; ``config.librosa_kwargs`` gives them under librosa's own names.

The defaults are written here once; the command line shows these same values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from melpipe import audio, features, records
from melpipe.errors import ConfigError

SAMPLE_RATE = 22050
HOP_LENGTH = 256
N_MELS = 128
FMIN = 0.0
DURATION = 1.0  # seconds per clip
SEGMENTS = ("first", "all")  # one clip from each file's start, or every window of it
TAILS = ("pad", "drop")  # a last window shorter than a clip: zero-padded, or left out
SELECTS = ("first", "loudest", "spread")  # which --max-clips-per-file windows are kept
# Bounds far past any use, checked before anything is computed from a value: a store's
# recorded config can claim anything, and checking n_mels = 10**8 bands took 2 GB.
MAX_N_FFT = 1 << 16  # 3 s at 22,050 Hz
MAX_N_FRAMES = 1 << 16  # images 65,536 frames wide: 12 minutes at the default hop
# Derived defaults: n_fft is twice hop_length (the post's choice), fmax the Nyquist
# frequency of sample_rate, n_samples DURATION seconds at sample_rate.


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ConfigError(f"Expected `{name}` to be a positive integer. Got {value!r} instead.")
    return int(value)


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"Expected `{name}` to be one of {', '.join(choices)}. Got {value!r}.")
    return str(value)


def _finite_float(name: str, value: Any) -> float:
    try:
        parsed = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"Expected `{name}` to be a number. Got {value!r} instead.") from None
    if not math.isfinite(parsed):
        raise ConfigError(f"Expected `{name}` to be a finite number. Got {value!r} instead.")
    return parsed


@dataclass(frozen=True, init=False)
class SpectrogramConfig:
    """Parameters of the audio fitting, the log-mel analysis and the image shape.

    Parameters
    ----------
    sample_rate : int
        Rate in Hz that every file is resampled to (librosa's ``sr``).
    n_samples : int, optional
        Fixed clip length in samples at ``sample_rate``: longer audio is cropped from its
        start, shorter audio is zero-padded at its end. Default: one second.
    n_fft : int, optional
        FFT size; also the window length. Default: ``2 * hop_length``.
    hop_length : int
        Samples between successive frames.
    n_mels : int
        Number of mel bands (image height).
    fmin, fmax : float
        Frequency range of the mel filter bank in Hz. ``fmax`` defaults to the Nyquist
        frequency, ``sample_rate / 2``, and may not exceed it.
    eps : float
        Added to the mel power before the logarithm, ``log(mel_power + eps)``.
    segments : {"first", "all"}
        ``first``: one clip per file, from its start. ``all``: every window of
        ``n_samples`` samples, starting every ``segment_hop`` samples (see
        :mod:`melpipe.segments`).
    segment_hop : int, optional
        Samples at ``sample_rate`` between window starts; default ``n_samples``.
    tail : {"pad", "drop"}
        A last window shorter than a clip is zero-padded, or dropped. A file shorter than
        one clip gives one padded clip either way.
    max_clips_per_file : int, optional
        Keep at most this many windows of each file, chosen by ``select``.
    select : {"first", "loudest", "spread"}
        The first windows, those of highest RMS level, or windows spread evenly.
    min_level_db : float, optional
        Drop windows whose RMS level is below this many dB (full scale).

    Building a config allocates nothing in proportion to its sizes: whether a setting
    fits the machine is the run plan's check, made before any work.
    """

    sample_rate: int
    n_samples: int
    n_fft: int
    hop_length: int
    n_mels: int
    fmin: float
    fmax: float
    eps: float
    segments: str
    segment_hop: int
    tail: str
    max_clips_per_file: int | None
    select: str
    min_level_db: float | None

    def __init__(
        self,
        *,
        sample_rate: int = SAMPLE_RATE,
        n_samples: int | None = None,
        n_fft: int | None = None,
        hop_length: int = HOP_LENGTH,
        n_mels: int = N_MELS,
        fmin: float = FMIN,
        fmax: float | None = None,
        eps: float = features.EPS,
        segments: str = "first",
        segment_hop: int | None = None,
        tail: str = "pad",
        max_clips_per_file: int | None = None,
        select: str = "first",
        min_level_db: float | None = None,
    ) -> None:
        sample_rate = _positive_int("sample_rate", sample_rate)
        hop_length = _positive_int("hop_length", hop_length)
        n_samples = _positive_int(
            "n_samples", round(DURATION * sample_rate) if n_samples is None else n_samples
        )
        values = {
            "sample_rate": sample_rate,
            "n_samples": n_samples,
            "n_fft": _positive_int("n_fft", 2 * hop_length if n_fft is None else n_fft),
            "hop_length": hop_length,
            "n_mels": _positive_int("n_mels", n_mels),
            "fmin": _finite_float("fmin", fmin),
            "fmax": _finite_float("fmax", sample_rate / 2 if fmax is None else fmax),
            "eps": _finite_float("eps", eps),
            "segments": _choice("segments", segments, SEGMENTS),
            "segment_hop": _positive_int(
                "segment_hop", n_samples if segment_hop is None else segment_hop
            ),
            "tail": _choice("tail", tail, TAILS),
            "max_clips_per_file": None
            if max_clips_per_file is None
            else _positive_int("max_clips_per_file", max_clips_per_file),
            "select": _choice("select", select, SELECTS),
            "min_level_db": None
            if min_level_db is None
            else _finite_float("min_level_db", min_level_db),
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)
        self._check()

    def _check(self) -> None:
        nyquist = self.sample_rate / 2
        if self.fmin < 0:
            raise ConfigError(f"Expected `fmin` >= 0 Hz. Got {self.fmin} instead.")
        if self.fmax > nyquist:
            raise ConfigError(
                f"Expected `fmax` <= {nyquist:g} Hz, the Nyquist frequency of "
                f"`sample_rate={self.sample_rate}`. Got {self.fmax:g} instead."
            )
        if self.fmin >= self.fmax:
            raise ConfigError(f"Expected `fmin` < `fmax`. Got {self.fmin:g} and {self.fmax:g} Hz.")
        if self.eps <= 0:
            raise ConfigError(f"Expected `eps` > 0. Got {self.eps!r} instead.")
        self._check_sizes()
        empty = features.count_empty_mel_filters(
            sr=self.sample_rate,
            n_fft=self.n_fft,
            n_mels=self.n_mels,
            fmin=self.fmin,
            fmax=self.fmax,
        )
        if empty:
            raise ConfigError(
                f"`n_mels={self.n_mels}` is too large for `n_fft={self.n_fft}` at "
                f"`sample_rate={self.sample_rate}` between {self.fmin:g} and {self.fmax:g} Hz: "
                f"{empty} mel filters would be empty. Use a smaller `n_mels` or a larger `n_fft`."
            )
        self._check_segments()

    def _check_sizes(self) -> None:
        if self.n_fft > MAX_N_FFT:
            raise ConfigError(f"Expected `n_fft` <= {MAX_N_FFT}. Got {self.n_fft} instead.")
        bins = 1 + self.n_fft // 2
        if self.n_mels > bins:
            raise ConfigError(
                f"`n_mels={self.n_mels}` is more than the {bins} frequency bins of "
                f"`n_fft={self.n_fft}`: some mel filters would be empty. Use a smaller "
                "`n_mels` or a larger `n_fft`."
            )
        if self.n_frames > MAX_N_FRAMES:
            raise ConfigError(
                f"A clip of {self.n_samples} samples at `hop_length={self.hop_length}` is "
                f"{self.n_frames} frames wide, more than {MAX_N_FRAMES}. Use shorter clips "
                "(`n_samples`) or a larger `hop_length`."
            )

    def _check_segments(self) -> None:
        if self.segments == "first":
            # Options that only shape windows after the first would be silently ignored.
            ignored = [
                name
                for name, given in (
                    ("`segment_hop`", self.segment_hop != self.n_samples),
                    (f"`tail={self.tail!r}`", self.tail != "pad"),
                    ("`max_clips_per_file`", self.max_clips_per_file is not None),
                    (f"`select={self.select!r}`", self.select != "first"),
                )
                if given
            ]
            if ignored:
                raise ConfigError(
                    f"{', '.join(ignored)} only appl{'ies' if len(ignored) == 1 else 'y'} with "
                    "`segments='all'`, which cuts each "
                    "file into many windows; `segments='first'` keeps one clip per file."
                )
        elif self.select != "first" and self.max_clips_per_file is None:
            raise ConfigError(
                f"`select={self.select!r}` chooses among windows only with `max_clips_per_file`."
            )

    @classmethod
    def from_options(
        cls,
        *,
        duration: float | None = None,
        frames: int | None = None,
        segment_hop: float | None = None,
        **kwargs: Any,
    ) -> SpectrogramConfig:
        """A config from the command line's options: the clip length as ``duration`` in
        seconds or as ``frames`` (exactly that many centred frames), ``segment_hop`` in
        seconds, the rest as keywords of the constructor; ``None`` means the default.
        """
        given = {k: v for k, v in kwargs.items() if v is not None}
        if duration is not None and frames is not None:
            raise ConfigError("Give either `duration` or `frames`, not both.")
        sample_rate = _positive_int("sample_rate", given.get("sample_rate", SAMPLE_RATE))
        if frames is not None:
            hop_length = _positive_int("hop_length", given.get("hop_length", HOP_LENGTH))
            if _positive_int("frames", frames) < 2:
                raise ConfigError("Expected `frames` >= 2, since one frame is no clip.")
            # An odd window pads one sample less than it spans: one more sample keeps the
            # last frame (features.n_frames_of).
            odd = given["n_fft"] % 2 if isinstance(given.get("n_fft"), int) else 0
            given["n_samples"] = (frames - 1) * hop_length + odd
        elif duration is not None:
            seconds = _finite_float("duration", duration)
            if seconds <= 0:
                raise ConfigError(f"Expected a positive `duration`. Got {seconds:g} s instead.")
            given["n_samples"] = round(seconds * sample_rate)
            if given["n_samples"] == 0:
                raise ConfigError(
                    f"A `duration` of {seconds:g} s holds no sample at {sample_rate} Hz."
                )
        if segment_hop is not None:
            hop = _finite_float("segment_hop", segment_hop)
            given["segment_hop"] = round(hop * sample_rate)
            if given["segment_hop"] <= 0:
                raise ConfigError(
                    f"Expected a `segment_hop` of at least one sample. Got {hop:g} s instead."
                )
        return cls(**given)

    @property
    def n_frames(self) -> int:
        """Number of frames per clip (centred frames, as librosa counts them)."""
        return features.n_frames_of(self.n_samples, n_fft=self.n_fft, hop_length=self.hop_length)

    @property
    def log_floor(self) -> float:
        """The least log-mel value, ``log(eps)`` as float32 computes it: silence, padding."""
        return float(np.log(np.float32(self.eps)))

    @property
    def image_shape(self) -> tuple[int, int]:
        return (self.n_mels, self.n_frames)

    @property
    def librosa_kwargs(self) -> dict[str, Any]:
        """The analysis parameters under librosa's names, for :func:`features.log_mel`."""
        return {
            "sr": self.sample_rate,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "n_mels": self.n_mels,
            "fmin": self.fmin,
            "fmax": self.fmax,
        }

    @property
    def needs_levels(self) -> bool:
        """Whether choosing a file's clips needs the RMS levels of all its windows."""
        return self.min_level_db is not None or self.select == "loudest"

    def derived(self) -> dict[str, Any]:
        """What the store's ``config`` attribute records beside the parameters: values
        derived from them, and the conventions of this version (checked when read back)."""
        return {
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

    def differences(self, other: SpectrogramConfig) -> str:
        """The parameters in which two configs differ, for messages: ``"n_mels (64, 128)"``."""
        mine, theirs = records.to_dict(self), records.to_dict(other)
        return ", ".join(f"{k} ({mine[k]!r}, {theirs[k]!r})" for k in mine if mine[k] != theirs[k])
