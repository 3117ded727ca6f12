"""Dataset-wide normalization statistics as mergeable accumulators.

Any group of clips gives partial statistics; any tree of ``merge`` calls gives the same
final statistics, bit for bit, because every sum is exact: the sums behind the means are
integers or exact fractions (float addition is not associative, integer addition is),
histograms are integer counts, and minimum and maximum are associative already.

Five statistics come out, all computed in every run; one of them scales the images:

``mean``
    the mean of the per-clip minima and of the per-clip maxima (the reference post's
    ``calc_global_norm_stats``, per file there; with ``--segments first`` a clip is a
    file);
``extrema``
    the true minimum and maximum over the dataset;
``percentile``
    two percentiles (default 0.1 and 99.9) of the log-mel values of every pixel that
    holds audio, from a histogram of :data:`BINS_PER_UNIT` bins per log unit;
``top-db``
    the maximum over pixels that hold audio, and a floor ``top_db`` decibels below it,
    as ``librosa.power_to_db(..., top_db=...)`` would clip;
``band-moments``
    per mel band, the mean and standard deviation over pixels that hold audio; each band
    maps ``mean - clip_std * std .. mean + clip_std * std`` to the scale (SpecGAN's
    normalization).

The first two keep the post's definition: every pixel counts, zero-padding included. The
other three leave out the frames that hold no audio (see :mod:`melpipe.run.tasks`), whose
values are the ``log(eps)`` floor of the padding, not sound.

Beside them, ``image-top-db`` is audio-diffusion's scale rather than a statistic: each
image maps its own maximum to the top of the scale and ``top_db`` decibels below it to
the bottom (``librosa.power_to_db(S, ref=np.max, top_db=...)``); the store's ``clip_max``
undoes it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal, Protocol, Self, TypeVar

import numpy as np

from melpipe.analysis.pixels import Histogram, PixelStats, exact_sum
from melpipe.errors import ConfigError, StatisticsError
from melpipe.parameters import Option, parameter
from melpipe.records import key, not_recorded

StatsName = Literal["mean", "extrema", "percentile", "top-db", "band-moments", "image-top-db"]
# The five statistics of a dataset, and every scale that can make the images.
STATS_NAMES: tuple[StatsName, ...] = ("mean", "extrema", "percentile", "top-db", "band-moments")
SCALES: tuple[StatsName, ...] = (*STATS_NAMES, "image-top-db")
DB_PER_UNIT = 10.0 / math.log(10.0)  # decibels per natural-log unit of a power spectrum


@dataclass(frozen=True)
class StatsOptions:
    """The parameters of the statistics that have some: ``--percentiles LO HI``,
    ``--top-db DB`` and ``--clip-std K``."""

    percentiles: tuple[float, float] = parameter((0.1, 99.9), Option(
        kind=float, nargs=2, metavar="LO HI",
        help="Percentiles of the pixels that hold audio, for --stats percentile.",
        shown="0.1 99.9, or --stats-from's",
    ))  # fmt: skip
    top_db: float = parameter(80.0, Option(
        kind=float, help="Decibels below the maximum, for --stats top-db.",
        shown="80, or --stats-from's",
    ))  # fmt: skip
    clip_std: float = parameter(3.0, Option(
        kind=float, help="Standard deviations each side of a band's mean, for --stats "
        "band-moments.", shown="3, or --stats-from's",
    ))  # fmt: skip

    def __post_init__(self) -> None:
        lo, hi = (float(p) for p in self.percentiles)
        if not 0.0 <= lo < hi <= 100.0:
            raise ConfigError(
                f"Expected `percentiles` LO and HI with 0 <= LO < HI <= 100. Got {lo:g} and {hi:g}."
            )
        if not (math.isfinite(self.top_db) and self.top_db > 0):
            raise ConfigError(f"Expected `top_db` to be a positive number. Got {self.top_db:g}.")
        if not (math.isfinite(self.clip_std) and self.clip_std > 0):
            raise ConfigError(
                f"Expected `clip_std` to be a positive number. Got {self.clip_std:g}."
            )
        object.__setattr__(self, "percentiles", (lo, hi))
        object.__setattr__(self, "top_db", float(self.top_db))
        object.__setattr__(self, "clip_std", float(self.clip_std))


class Mergeable(Protocol):
    """A partial result of a reduction, as every pass of a run returns one per task:
    ``merge`` joins two in order, ``empty()`` is the result of nothing, and any grouping
    of merges gives the same value (pangeo-forge-recipes' combiners work the same way)."""

    @classmethod
    def empty(cls) -> Self: ...

    def merge(self, other: Self) -> Self: ...


M = TypeVar("M", bound=Mergeable)


def merge_all(kind: type[M], *parts: M) -> M:
    """``parts`` merged in order, or ``kind``'s empty value when there are none."""
    return functools.reduce(kind.merge, parts, kind.empty())


# --- The post's statistics: extrema of clips ----------------------------------------------


@dataclass(frozen=True)
class Extrema:
    """Partial statistics over some clips: count, exact sums and bounds of their extrema."""

    count: int = 0
    sum_min: Fraction = Fraction(0)
    sum_max: Fraction = Fraction(0)
    min: float = math.inf
    max: float = -math.inf

    @classmethod
    def from_clips(cls, clip_min: np.ndarray, clip_max: np.ndarray) -> Extrema:
        """Statistics of clips given their log-mel extrema (float32); NaN entries are
        skipped."""
        lows, highs = np.asarray(clip_min), np.asarray(clip_max)
        ok = ~(np.isnan(lows) | np.isnan(highs))
        lows, highs = lows[ok], highs[ok]
        if lows.size == 0:
            return cls()
        return cls(
            count=int(lows.size),
            sum_min=exact_sum(lows),
            sum_max=exact_sum(highs),
            min=float(lows.min()),
            max=float(highs.max()),
        )

    def merge(self, other: Extrema) -> Extrema:
        return Extrema(
            count=self.count + other.count,
            sum_min=self.sum_min + other.sum_min,
            sum_max=self.sum_max + other.sum_max,
            min=min(self.min, other.min),
            max=max(self.max, other.max),
        )

    @classmethod
    def empty(cls) -> Extrema:
        return cls()

    def mean_and_extrema(self) -> tuple[Range, Range]:
        """The ``mean`` and ``extrema`` ranges; an error when no clip contributed."""
        if self.count == 0:
            raise StatisticsError("No clip could be analysed, so there are no statistics.")
        mean = Range(float(self.sum_min / self.count), float(self.sum_max / self.count))
        return mean, Range(self.min, self.max)


@dataclass(frozen=True)
class Range:
    """The log-mel values that map to the ends of the uint8 scale: one pair for every
    pixel or, for ``band-moments``, one pair per mel band (tuples, lowest band first);
    ``relative``, for ``image-top-db``: values relative to each image's own maximum."""

    min: float | tuple[float, ...]
    max: float | tuple[float, ...]
    relative: bool = field(default=False, metadata=not_recorded())

    @property
    def per_band(self) -> bool:
        return isinstance(self.min, tuple)

    def bounds(self, clip_max: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """``min`` and ``max`` as float64 arrays that broadcast against log-mels of shape
        (..., n_mels, n_frames), bands in log-mel order (lowest first); for a relative
        range, added to ``clip_max``, each image's maximum, of shape (...), when given."""
        lo, hi = np.asarray(self.min, np.float64), np.asarray(self.max, np.float64)
        if self.per_band:
            return lo[:, None], hi[:, None]
        if not self.relative or clip_max is None:
            return lo, hi
        top = np.asarray(clip_max, np.float64)[..., None, None]
        return top + lo, top + hi

    @property
    def span(self) -> Any:
        lo, hi = self.bounds()
        return hi - lo

    def db_per_level(self, db_per_unit: float = DB_PER_UNIT) -> float:
        """Decibels per level of the scale (the median over bands, per band), for features
        of ``db_per_unit`` decibels per log unit."""
        return float(np.median(self.span)) * db_per_unit / 255.0

    @property
    def usable(self) -> bool:
        """Whether it maps values to levels: finite, and each min below its max."""
        lo, hi = self.bounds()
        return bool(np.isfinite(lo).all() and np.isfinite(hi).all() and (lo < hi).all())

    def describe(self) -> str:
        below = " below each image's maximum" if self.relative else ""
        return f"min={_brief(self.min)}, max={_brief(self.max)}{below}"

    def check(self, name: str) -> Range:
        if not self.usable:
            raise StatisticsError(
                f"The {name!r} statistics give no usable range ({self.describe()}): are all "
                "clips silent or constant?"
            )
        return self


def _brief(value: float | tuple[float, ...]) -> str:
    return f"{min(value):g}..{max(value):g} over bands" if isinstance(value, tuple) else f"{value}"


@dataclass(frozen=True)
class PixelSummary:
    """What the three padding-aware statistics are computed from: the pixels that hold
    audio, their maximum, their per-band moments (lowest band first) and, where the
    store holds it, their histogram."""

    count: int  # pixels, all bands
    max: float
    band_mean: tuple[float, ...]
    band_std: tuple[float, ...]
    db_per_unit: float = DB_PER_UNIT  # per log unit: of power (4.34 dB), magnitude (8.69)
    histogram: Histogram | None = field(default=None, compare=False, metadata=not_recorded())


def joined_summary(parts: Sequence[PixelSummary], histogram: Histogram) -> PixelSummary:
    """The summary of the pixels of disjoint groups of clips (a store's sources), from
    each group's, with ``histogram`` the histogram of them all: counts added, the greatest
    maximum, and per band the mean and standard deviation of the whole, computed exactly
    from each group's recorded float64 values, so within their rounding of the exact ones
    (docs/statistics.md, "A dataset that grows")."""
    parts = [p for p in parts if p.count]
    if not parts:
        raise StatisticsError("No pixel holds audio, so there are no statistics.")
    n_bands = len(parts[0].band_mean)
    weights = [Fraction(p.count // n_bands) for p in parts]  # pixels per band
    total = sum(weights)
    band_mean, band_std = [], []
    for b in range(n_bands):
        means = [Fraction(p.band_mean[b]) for p in parts]
        squares = [Fraction(p.band_std[b]) ** 2 + m * m for p, m in zip(parts, means, strict=True)]
        mean = sum(w * m for w, m in zip(weights, means, strict=True)) / total
        square = sum(w * q for w, q in zip(weights, squares, strict=True)) / total
        band_mean.append(float(mean))
        band_std.append(math.sqrt(float(max(square - mean * mean, Fraction(0)))))
    return PixelSummary(
        count=sum(p.count for p in parts),
        max=max(p.max for p in parts),
        band_mean=tuple(band_mean),
        band_std=tuple(band_std),
        db_per_unit=parts[0].db_per_unit,
        histogram=histogram,
    )


# A band whose pixels all have one value (std 0) maps mean .. mean + FLAT_BAND_WIDTH: its
# value sits at level 0, white like silence, and inverts exactly.
FLAT_BAND_WIDTH = 1.0


@dataclass(frozen=True)
class GlobalStats:
    """Every statistic of a dataset: the five ranges, for ``options``, and what the
    padding-aware ones were computed from (so other options can be applied later)."""

    mean: Range
    extrema: Range
    percentile: Range
    top_db: Range = field(metadata=key("top-db"))
    band_moments: Range = field(metadata=key("band-moments"))
    options: StatsOptions = field()
    pixels: PixelSummary = field()

    @classmethod
    def compute(
        cls,
        extrema: Extrema,
        pixels: PixelStats,
        pixel_max: float,
        options: StatsOptions,
        db_per_unit: float = DB_PER_UNIT,
    ) -> GlobalStats:
        """The statistics of clips with these extrema and pixels, of features of
        ``db_per_unit`` decibels per log unit; an error when there are none."""
        if pixels.frames == 0:
            raise StatisticsError("No pixel holds audio, so there are no statistics.")
        band_mean, band_std = pixels.band_moments()
        summary = PixelSummary(
            count=pixels.frames * len(pixels.sums),
            max=float(pixel_max),
            band_mean=tuple(band_mean.tolist()),
            band_std=tuple(band_std.tolist()),
            db_per_unit=float(db_per_unit),
            histogram=pixels.histogram,
        )
        return cls.of(extrema, summary, options)

    @classmethod
    def of(cls, extrema: Extrema, summary: PixelSummary, options: StatsOptions) -> GlobalStats:
        """The statistics of clips with these extrema and this summary of their pixels."""
        mean, bounds = extrema.mean_and_extrema()
        placeholder = Range(math.nan, math.nan)
        return cls(mean, bounds, placeholder, placeholder, placeholder, options, summary)._derive(
            options
        )

    def with_options(self, options: StatsOptions) -> GlobalStats:
        """The same statistics with other parameters.

        Raises
        ------
        StatisticsError
            Other percentiles are asked for, but the histogram is not at hand.
        """
        if options == self.options:
            return self
        if options.percentiles != self.options.percentiles and self.pixels.histogram is None:
            raise StatisticsError(
                "These statistics were taken from another store, without its histogram, so "
                "other `percentiles` cannot be computed from them: use `stats_from` with "
                "the store they came from."
            )
        return self._derive(options)

    def _derive(self, options: StatsOptions) -> GlobalStats:
        pixels = self.pixels
        percentile = self.percentile
        if pixels.histogram is not None:
            lo, hi = (pixels.histogram.percentile(q) for q in options.percentiles)
            percentile = Range(lo, hi)
        floor = pixels.max - options.top_db / pixels.db_per_unit
        mean, std = np.array(pixels.band_mean), np.array(pixels.band_std)
        flat = std == 0  # e.g. empty above the Nyquist frequency of resampled audio
        low = np.where(flat, mean, mean - options.clip_std * std)
        high = np.where(flat, mean + FLAT_BAND_WIDTH, mean + options.clip_std * std)
        bands = Range(tuple(low.tolist()), tuple(high.tolist()))
        return GlobalStats(
            self.mean,
            self.extrema,
            percentile,
            Range(floor, pixels.max),
            bands,
            options,
            pixels,
        )

    def range(self, name: StatsName) -> Range:
        """The range that scales images with ``name``; an error if it is not usable."""
        return self.scale(name).check(name)

    def scale(self, name: StatsName) -> Range:
        """The range of ``name``, usable or not: one of the five statistics', or for
        ``image-top-db`` the one relative to each image's maximum."""
        if name == "image-top-db":
            return Range(-self.options.top_db / self.pixels.db_per_unit, 0.0, relative=True)
        if name not in STATS_NAMES:
            raise StatisticsError(f"Expected stats to be one of {SCALES}. Got {name!r}.")
        return self.ranges()[name]

    def ranges(self) -> dict[StatsName, Range]:
        return {
            "mean": self.mean,
            "extrema": self.extrema,
            "percentile": self.percentile,
            "top-db": self.top_db,
            "band-moments": self.band_moments,
        }


@dataclass(frozen=True)
class Figures:
    """How a statistic spends the 256 levels on the pixels that hold audio: the shares at
    the ends of the scale (level 0 is its minimum: white in an image), how many levels
    hold 99% of the pixels (the fewest that do), and decibels per level."""

    at_min: float
    at_max: float
    levels_99: int
    db_per_level: float

    @classmethod
    def of(cls, levels: np.ndarray, scale: Range, db_per_unit: float = DB_PER_UNIT) -> Figures:
        """From the count of pixels on each level (before the image's inversion), for
        features of ``db_per_unit`` decibels per log unit."""
        counts = np.asarray(levels, np.float64)
        total = counts.sum()
        if total == 0:
            raise StatisticsError("No pixel holds audio, so the levels cannot be described.")
        fullest = np.cumsum(np.sort(counts)[::-1])
        levels_99 = int(np.searchsorted(fullest, 0.99 * total, side="left")) + 1
        return cls(
            float(counts[0] / total),
            float(counts[-1] / total),
            levels_99,
            scale.db_per_level(db_per_unit),
        )
