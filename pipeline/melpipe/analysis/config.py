"""The frozen, validated description of everything that shapes a spectrogram image.

One :class:`SpectrogramConfig` travels to every task and is written whole into the store's
attributes, so a store always says how its images were made. Its names are librosa's
(``n_fft``, ``hop_length``, ``n_mels``, ``fmin``, ``fmax``), except ``sample_rate`` for
librosa's ``sr``; ``config.librosa_kwargs`` gives them under librosa's own names.

The defaults are written here once; the command line shows these same values.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from melpipe import records
from melpipe.analysis import features
from melpipe.analysis.parse import FMIN, N_MELS, bank, choice, finite_float, flag, positive_int
from melpipe.analysis.presets import PRESET_NAMES, PRESETS
from melpipe.errors import ConfigError
from melpipe.parameters import Option, parameter

SAMPLE_RATE = 22050
HOP_LENGTH = 256
DURATION = 1.0  # seconds per clip
SEGMENTS = ("first", "all")  # one clip from each file's start, or every window of it
TAILS = ("pad", "drop")  # a last window shorter than a clip: zero-padded, or left out
SELECTS = ("first", "loudest", "spread")  # which --max-clips-per-file windows are kept
# How every file is brought to one shape (melpipe.sources.audio does it), as recorded.
MONO = "mean of channels"
RESAMPLER = "soxr_hq"  # librosa's name; soxr's quality "HQ"
CROP = "start"
PAD = "zeros at end"
# Bounds far past any use, checked before anything is computed from a value: a store's
# recorded config can claim anything, and checking n_mels = 10**8 bands took 2 GB.
MAX_N_FFT = 1 << 16  # 3 s at 22,050 Hz
MAX_N_FRAMES = 1 << 16  # images 65,536 frames wide: 12 minutes at the default hop
# A default worked out from the other parameters in __post_init__: n_fft is twice
# hop_length (the post's choice), fmax the Nyquist frequency of sample_rate, n_samples
# DURATION seconds at sample_rate.
DERIVED: Any = None


@dataclass(frozen=True, kw_only=True)
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
        Number of mel bands (image height); 128 by default, None for a linear spectrum.
    fmin, fmax : float
        Frequency range of the mel filter bank in Hz. ``fmax`` defaults to the Nyquist
        frequency, ``sample_rate / 2``, and may not exceed it. None for a linear spectrum.
    eps : float
        The log's epsilon: ``log(x + eps)`` or ``log(max(x, eps))`` (``log``).
    preset : str
        The name of the preset the defaults came from (:mod:`melpipe.analysis.presets`), recorded;
        :meth:`from_options` applies a preset's values, this constructor does not.
    spectrum, power, stft_eps, win_length, padding, pad_mode, mel_htk, mel_norm,
    drop_nyquist, log
        The analysis's conventions, as :class:`melpipe.analysis.features.Analysis` describes
        them; the defaults are the post's (librosa's melspectrogram, ``log(x + 1e-9)``).
    peak_normalize : float, optional
        Scale each file so that its greatest absolute sample at ``sample_rate`` is this,
        before its clips are cut (HiFi-GAN's and BigVGAN's 0.95).
    segments : {"first", "all"}
        ``first``: one clip per file, from its start. ``all``: every window of
        ``n_samples`` samples, starting every ``segment_hop`` samples (see
        :mod:`melpipe.analysis.segments`).
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

    # Each field is declared once, with the option that sets it (melpipe.parameters). A
    # DERIVED default is worked out from the others in __post_init__.
    sample_rate: int = parameter(
        SAMPLE_RATE, Option(kind=int, help="Hz every file is resampled to.")
    )
    n_samples: int = parameter(
        DERIVED,
        Option(name="duration", kind=float, help="Clip length in seconds.", shown=f"{DURATION:g}"),
        Option(name="frames", kind=int, help="Clip length in frames, instead of --duration."),
    )
    n_fft: int = parameter(DERIVED, Option(kind=int, help="FFT size.", shown="2 x hop length"))
    hop_length: int = parameter(HOP_LENGTH, Option(kind=int, help="Samples between frames."))
    n_mels: int | None = parameter(
        DERIVED, Option(kind=int, help="Mel bands (image height).", shown=str(N_MELS))
    )
    fmin: float | None = parameter(
        DERIVED, Option(kind=float, help="Lowest mel frequency, Hz.", shown=f"{FMIN:g}")
    )
    fmax: float | None = parameter(
        DERIVED, Option(kind=float, help="Highest mel frequency, Hz.", shown="sample rate / 2")
    )
    eps: float = parameter(features.EPS, Option(kind=float, help="The log's epsilon.",
                                                shown="1e-9"))  # fmt: skip
    preset: str = parameter("post", Option(
        kind=PRESET_NAMES, help="Features of a model or vocoder; every option given beside it wins."
    ))  # fmt: skip
    spectrum: str = parameter("mel", Option(
        kind=features.SPECTRA, help="Mel bands, or the FFT's linear frequency bins."
    ))  # fmt: skip
    power: float = parameter(2.0, Option(kind=("1", "2"), help="1: magnitude, 2: power."))
    stft_eps: float = parameter(0.0, Option(
        kind=float, help="Added to re^2 + im^2 before the power (HiFi-GAN's 1e-9)."
    ))  # fmt: skip
    win_length: int = parameter(DERIVED, Option(kind=int, help="Window length.", shown="n_fft"))
    padding: str = parameter("center", Option(
        kind=features.PADDINGS,
        help="center: librosa's centred frames; same: (n_fft - hop) / 2 reflected samples "
        "each side; end: frames from sample 0, zeros appended.",
    ))  # fmt: skip
    pad_mode: str = parameter(features.PAD_MODE, Option(
        kind=features.PAD_MODES, help="What pads centred frames."
    ))  # fmt: skip
    mel_htk: bool | None = parameter(DERIVED, Option(
        off="--no-mel-htk", help="HTK's mel scale instead of Slaney's.", shown="no"
    ))  # fmt: skip
    mel_norm: str | None = parameter(DERIVED, Option(
        kind=features.MEL_NORMS, help="Slaney's area norm of the filters, or none.",
        shown="slaney",
    ))  # fmt: skip
    drop_nyquist: bool = parameter(False, Option(
        off="--keep-nyquist", help="Leave out the last bin of a linear spectrum.", shown="keep"
    ))  # fmt: skip
    log: str = parameter("add", Option(
        kind=features.LOGS, help="add: log(x + eps); clamp: log(max(x, eps))."
    ))  # fmt: skip
    peak_normalize: float | None = parameter(None, Option(
        metavar="PEAK|none", help="Scale each file so that its peak is PEAK first (HiFi-GAN's "
        "0.95).", shown="none",
    ))  # fmt: skip
    segments: str = parameter("first", Option(
        kind=SEGMENTS, help="One clip from each file's start, or every window of it."
    ))  # fmt: skip
    segment_hop: int = parameter(DERIVED, Option(
        kind=float, help="Seconds between window starts with --segments all.",
        shown="clip length",
    ))  # fmt: skip
    tail: str = parameter("pad", Option(
        kind=TAILS, help="A last window shorter than a clip: zero-padded or dropped."
    ))  # fmt: skip
    max_clips_per_file: int | None = parameter(None, Option(
        kind=int, help="Keep at most this many windows of a file."
    ))  # fmt: skip
    select: str = parameter("first", Option(
        kind=SELECTS, help="Which windows --max-clips-per-file keeps."
    ))  # fmt: skip
    min_level_db: float | None = parameter(None, Option(
        kind=float, help="Drop windows whose RMS level is below this many dB full scale."
    ))  # fmt: skip

    def __post_init__(self) -> None:
        """Check every parameter as it is read, and work out the DERIVED ones."""
        # long because: one line per parameter, each checked as it is read
        sample_rate = positive_int("sample_rate", self.sample_rate)
        hop_length = positive_int("hop_length", self.hop_length)
        n_samples = positive_int(
            "n_samples", round(DURATION * sample_rate) if self.n_samples is None else self.n_samples
        )
        n_fft = positive_int("n_fft", 2 * hop_length if self.n_fft is None else self.n_fft)
        spectrum = choice("spectrum", self.spectrum, features.SPECTRA)
        values: dict[str, Any] = {
            "sample_rate": sample_rate,
            "n_samples": n_samples,
            "n_fft": n_fft,
            "hop_length": hop_length,
            **bank(
                spectrum,
                sample_rate,
                self.n_mels,
                self.fmin,
                self.fmax,
                self.mel_htk,
                self.mel_norm,
            ),
            "eps": finite_float("eps", self.eps),
            "preset": choice("preset", self.preset, PRESET_NAMES),
            "spectrum": spectrum,
            "power": finite_float("power", self.power),
            "stft_eps": finite_float("stft_eps", self.stft_eps),
            "win_length": positive_int(
                "win_length", n_fft if self.win_length is None else self.win_length
            ),
            "padding": choice("padding", self.padding, features.PADDINGS),
            "pad_mode": choice("pad_mode", self.pad_mode, features.PAD_MODES),
            "drop_nyquist": flag("drop_nyquist", self.drop_nyquist),
            "log": choice("log", self.log, features.LOGS),
            "peak_normalize": None
            if self.peak_normalize is None
            else finite_float("peak_normalize", self.peak_normalize),
            "segments": choice("segments", self.segments, SEGMENTS),
            "segment_hop": positive_int(
                "segment_hop", n_samples if self.segment_hop is None else self.segment_hop
            ),
            "tail": choice("tail", self.tail, TAILS),
            "max_clips_per_file": None
            if self.max_clips_per_file is None
            else positive_int("max_clips_per_file", self.max_clips_per_file),
            "select": choice("select", self.select, SELECTS),
            "min_level_db": None
            if self.min_level_db is None
            else finite_float("min_level_db", self.min_level_db),
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)
        self._check()

    def _check(self) -> None:
        if self.eps <= 0:
            raise ConfigError(f"Expected `eps` > 0. Got {self.eps!r} instead.")
        self._check_analysis()
        self._check_sizes()
        self._check_segments()
        if self.n_mels is None or self.fmin is None or self.fmax is None:
            return  # a linear spectrum: no filter bank
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
        bins = 1 + self.n_fft // 2
        if self.n_mels > bins:
            raise ConfigError(
                f"`n_mels={self.n_mels}` is more than the {bins} frequency bins of "
                f"`n_fft={self.n_fft}`: some mel filters would be empty. Use a smaller "
                "`n_mels` or a larger `n_fft`."
            )
        empty = features.count_empty_mel_filters(
            sr=self.sample_rate,
            n_fft=self.n_fft,
            n_mels=self.n_mels,
            fmin=self.fmin,
            fmax=self.fmax,
            htk=bool(self.mel_htk),
        )
        if empty:
            raise ConfigError(
                f"`n_mels={self.n_mels}` is too large for `n_fft={self.n_fft}` at "
                f"`sample_rate={self.sample_rate}` between {self.fmin:g} and {self.fmax:g} Hz: "
                f"{empty} mel filters would be empty. Use a smaller `n_mels` or a larger `n_fft`."
            )

    def _check_analysis(self) -> None:
        if self.power not in (1.0, 2.0):
            raise ConfigError(
                f"Expected `power` 1 (magnitude) or 2 (power). Got {self.power:g} instead."
            )
        if self.stft_eps < 0:
            raise ConfigError(f"Expected `stft_eps` >= 0. Got {self.stft_eps!r} instead.")
        if self.win_length > self.n_fft:
            raise ConfigError(
                f"Expected `win_length` <= `n_fft={self.n_fft}`. Got {self.win_length} instead."
            )
        if self.padding != "center" and self.pad_mode != features.PAD_MODE:
            raise ConfigError(
                f"`pad_mode` only applies with `padding='center'`; `padding={self.padding!r}` "
                "pads as its recipe does (see docs/cli.md)."
            )
        if self.padding == "same" and self.hop_length > self.n_fft:
            raise ConfigError(
                f"`padding='same'` needs `hop_length` <= `n_fft`. Got {self.hop_length} and "
                f"{self.n_fft}."
            )
        if self.drop_nyquist and self.spectrum != "linear":
            raise ConfigError("`drop_nyquist` only applies with `spectrum='linear'`.")
        if self.peak_normalize is not None and not 0 < self.peak_normalize <= 1:
            raise ConfigError(
                "Expected `peak_normalize` in (0, 1], the peak each file is scaled to. Got "
                f"{self.peak_normalize:g} instead."
            )

    def _check_sizes(self) -> None:
        if self.n_fft > MAX_N_FFT:
            raise ConfigError(f"Expected `n_fft` <= {MAX_N_FFT}. Got {self.n_fft} instead.")
        if self.n_frames < 1:
            raise ConfigError(
                f"A clip of {self.n_samples} samples holds no frame of `n_fft={self.n_fft}` "
                "with this padding. Use longer clips (`n_samples`) or a smaller `n_fft`."
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
        preset = kwargs.pop("preset", None) or "post"
        if preset not in PRESETS:
            raise ConfigError(f"Expected `preset` to be one of {', '.join(PRESET_NAMES)}. "
                              f"Got {preset!r}.")  # fmt: skip
        if duration is not None and frames is not None:
            raise ConfigError("Give either `duration` or `frames`, not both.")
        base = dict(PRESETS[preset].config)
        if duration is not None or frames is not None:
            base.pop("n_samples", None)  # the clip length given replaces the preset's
        given = {**base, **{k: v for k, v in kwargs.items() if v is not None}, "preset": preset}
        if given.get("peak_normalize") == "none":  # the command line's way to turn it off
            given["peak_normalize"] = None
        sample_rate = positive_int("sample_rate", given.get("sample_rate", SAMPLE_RATE))
        if frames is not None:
            hop_length = positive_int("hop_length", given.get("hop_length", HOP_LENGTH))
            if positive_int("frames", frames) < 2:
                raise ConfigError("Expected `frames` >= 2, since one frame is no clip.")
            # Values the constructor refuses are left for it to name.
            n_fft = given.get("n_fft", 2 * hop_length)
            padding = given.get("padding", "center")
            given["n_samples"] = features.n_samples_for(
                frames,
                n_fft=n_fft if isinstance(n_fft, int) else 0,
                hop_length=hop_length,
                padding=padding if padding in features.PADDINGS else "center",
            )
        elif duration is not None:
            seconds = finite_float("duration", duration)
            if seconds <= 0:
                raise ConfigError(f"Expected a positive `duration`. Got {seconds:g} s instead.")
            given["n_samples"] = round(seconds * sample_rate)
            if given["n_samples"] == 0:
                raise ConfigError(
                    f"A `duration` of {seconds:g} s holds no sample at {sample_rate} Hz."
                )
        if segment_hop is not None:
            hop = finite_float("segment_hop", segment_hop)
            given["segment_hop"] = round(hop * sample_rate)
            if given["segment_hop"] <= 0:
                raise ConfigError(
                    f"Expected a `segment_hop` of at least one sample. Got {hop:g} s instead."
                )
        return cls(**given)

    def with_options(self, **options: Any) -> SpectrogramConfig:
        """This config with the command line's ``options`` set on top of it, as
        :meth:`from_options` takes them (``None`` keeps this config's value): what an
        append compares with its store's config."""
        given = {k: v for k, v in options.items() if v is not None}
        if not given:
            return self
        base: dict[str, Any] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                                if f.init}  # fmt: skip
        base["segment_hop"] = base["segment_hop"] / self.sample_rate
        if "duration" in given or "frames" in given:
            base.pop("n_samples")
        return SpectrogramConfig.from_options(**{**base, **given})

    @property
    def n_bands(self) -> int:
        """Rows of an image: mel bands, or frequency bins of a linear spectrum."""
        return features.bands_of(self)

    @property
    def n_frames(self) -> int:
        """Number of frames per clip (see :func:`features.n_frames_of`)."""
        return features.n_frames_of(self.n_samples, n_fft=self.n_fft,
                                    hop_length=self.hop_length, padding=self.padding)  # fmt: skip

    @property
    def log_floor(self) -> float:
        """The least value of the features, ``log(eps)`` as float32 computes it: silence,
        padding."""
        return float(np.log(np.float32(self.eps)))

    @property
    def db_per_unit(self) -> float:
        """Decibels per unit of the features' natural log: 10 / ln 10 of power, twice that
        of magnitude."""
        return 20.0 / self.power / math.log(10.0)

    @property
    def image_shape(self) -> tuple[int, int]:
        return (self.n_bands, self.n_frames)

    @property
    def librosa_kwargs(self) -> dict[str, Any]:
        """The analysis parameters under librosa's names (``features.log_mel``'s), for a
        mel spectrum."""
        return {"sr": self.sample_rate, "n_fft": self.n_fft, "hop_length": self.hop_length,
                "n_mels": self.n_mels, "fmin": self.fmin, "fmax": self.fmax}  # fmt: skip

    @property
    def needs_levels(self) -> bool:
        """Whether choosing a file's clips needs the RMS levels of all its windows."""
        return self.min_level_db is not None or self.select == "loudest"

    def derived(self) -> dict[str, Any]:
        """What the store's ``config`` attribute records beside the parameters: values
        derived from them, and the conventions of this version (checked when read back)."""
        return {
            "n_frames": self.n_frames,
            "n_bands": self.n_bands,
            "duration": self.n_samples / self.sample_rate,
            "window": features.WINDOW,
            "center": self.padding == "center",
            "mono": MONO,
            "resampler": RESAMPLER,
            "crop": CROP,
            "pad": PAD,
        }

    def differences(self, other: SpectrogramConfig) -> str:
        """The parameters in which two configs differ, for messages: ``"n_mels (64, 128)"``."""
        mine, theirs = records.to_dict(self), records.to_dict(other)
        return ", ".join(f"{k} ({mine[k]!r}, {theirs[k]!r})" for k in mine if mine[k] != theirs[k])
