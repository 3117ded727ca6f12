"""Exact statistics of pixels: a histogram of the values and, per band, counts and sums
of values and of squares, all integers, so that partial results merge, and subtract, in any
order to the same bits (:class:`Histogram`, :class:`PixelStats`). What the dataset
statistics of :mod:`melpipe.analysis.stats` are computed from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

from melpipe.errors import StatisticsError

if TYPE_CHECKING:
    from melpipe.analysis.stats import Range

LEVELS = 256  # levels of a uint8 image


def exact_sum(values: np.ndarray) -> Fraction:
    """The exact sum of float32 values, as a fraction: :func:`_exact_column_sums` over one
    column, a few numpy operations where a ``Fraction`` per value would take 100 times
    longer."""
    values = np.asarray(values)
    if values.dtype != np.float32:
        raise TypeError(f"exact_sum takes float32 values, not {values.dtype}.")
    if not np.isfinite(values).all():
        raise StatisticsError("Cannot sum non-finite values exactly.")
    (total,) = _exact_column_sums(values.astype(np.float64).reshape(-1, 1))
    return Fraction(total, 1 << SUM_SHIFT)


# --- Pixels that hold audio: histogram and per-band moments ------------------------------

BINS_PER_UNIT = 128  # histogram bins per log unit: 1/128 = 0.0078 (0.034 dB) wide
# Exact sums are integers in units of 2**-SUM_SHIFT, below the last bit of the smallest
# float64 (2**-1074), so that every float64, and every part of one, is a whole number.
SUM_SHIFT = 1074 + 53


def histogram_grid(eps: float) -> tuple[int, int]:
    """The histogram's bins for ``log(mel + eps)`` in float32: the number of the first
    bin (bin ``k`` holds ``k / BINS_PER_UNIT <= x < (k + 1) / BINS_PER_UNIT``) and how
    many there are, from ``log(eps)``, the least possible value, to the log of the
    largest float32, the greatest."""
    with np.errstate(all="ignore"):
        lo = float(np.log(np.float32(eps)))
        hi = float(np.log(np.finfo(np.float32).max))
    first, last = math.floor(lo * BINS_PER_UNIT), math.floor(hi * BINS_PER_UNIT)
    return first, last - first + 1


@dataclass(frozen=True, eq=False)
class Histogram:
    """Counts of values in bins of ``1 / BINS_PER_UNIT`` log units, from bin ``first``."""

    first: int = 0
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @classmethod
    def of(cls, values: np.ndarray, first: int) -> Histogram:
        """The histogram of float32 ``values``, none of them below bin ``first``."""
        if values.size == 0:
            return cls()
        # float32 times a power of two is exact: no value changes bin on the way.
        # Floors of float32 values are whole numbers below 2**24: also exact in float32.
        scaled = np.multiply(values, np.float32(BINS_PER_UNIT), dtype=np.float32)
        np.floor(scaled, out=scaled)
        scaled -= np.float32(first)
        try:
            return cls(first, np.bincount(scaled.astype(np.intp).ravel()))
        except ValueError:  # bincount refuses negative values
            raise StatisticsError("A log-mel value lies below the log(eps) floor.") from None

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def _combine(self, other: Histogram, sign: int) -> Histogram:
        if not len(other.counts):
            return self
        if not len(self.counts):
            return Histogram(other.first, sign * other.counts)
        first = min(self.first, other.first)
        stop = max(self.first + len(self.counts), other.first + len(other.counts))
        counts = np.zeros(stop - first, np.int64)
        counts[self.first - first : self.first - first + len(self.counts)] += self.counts
        counts[other.first - first : other.first - first + len(other.counts)] += sign * other.counts
        return Histogram(first, counts)

    def on_grid(self, first: int, n_bins: int) -> np.ndarray:
        """The counts over the bins ``first .. first + n_bins - 1``, every value inside."""
        if len(self.counts) and (
            self.first < first or self.first + len(self.counts) > first + n_bins
        ):
            raise StatisticsError("A log-mel value lies outside the histogram's range.")
        full = np.zeros(n_bins, np.int64)
        full[self.first - first : self.first - first + len(self.counts)] = self.counts
        return full

    def centres(self) -> np.ndarray:
        return (self.first + np.arange(len(self.counts)) + 0.5) / BINS_PER_UNIT

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile of the counted values, as ``numpy.percentile`` computes
        it (linear between the two nearest ranks), with each rank's value taken as the
        centre of its bin: within half a bin of the exact percentile."""
        n = self.total
        if n == 0:
            raise StatisticsError("No pixel holds audio, so there are no percentiles.")
        rank = q / 100.0 * (n - 1)
        below, above = math.floor(rank), min(math.floor(rank) + 1, n - 1)
        cumulative = np.cumsum(self.counts)
        lo, hi = self.centres()[np.searchsorted(cumulative, [below, above], side="right")]
        return float(lo + (rank - below) * (hi - lo))

    def levels(self, scale: Range) -> np.ndarray:
        """How many values fall on each of the 256 levels of a scalar ``scale``, each bin
        counted at the level of its centre."""
        levels = np.clip(np.rint((self.centres() - scale.min) / scale.span * 255.0), 0, 255)
        return np.bincount(levels.astype(np.int64), weights=self.counts, minlength=LEVELS)


@dataclass(frozen=True, eq=False)
class PixelStats:
    """Partial statistics over the pixels that hold audio of some clips: their histogram
    and, per mel band, their count and exact sums of values and of squares.

    Every part is an integer, so partial statistics merge in any order, and also subtract
    (what a run does when it drops windows it had counted, see :mod:`melpipe.run.runner`).
    """

    frames: int = 0  # pixels per band
    histogram: Histogram = field(default_factory=Histogram)
    sums: tuple[int, ...] = ()  # per band, of value - origin, in units of 2**-SUM_SHIFT
    squares: tuple[int, ...] = ()  # per band, of (value - origin)**2, in those units
    origin: float = 0.0

    @classmethod
    def of(cls, logmel: np.ndarray, frames: np.ndarray, origin: float) -> PixelStats:
        """The statistics of clips' log-mels (n_clips, n_mels, n_frames) float32, of which
        the first ``frames[i]`` frames of clip ``i`` hold audio. The sums are of the
        values minus ``origin`` (the ``log(eps)`` floor), so that a band that is all
        floor has a variance of exactly 0."""
        logmel, frames = np.asarray(logmel), np.asarray(frames, np.int64)
        n_frames = int(frames.sum())
        if n_frames == 0:
            return cls(origin=origin)
        padded = np.flatnonzero(frames < logmel.shape[-1])
        values = held(logmel, frames)
        sums, squares = _band_sums(logmel, frames, padded, origin)
        first = math.floor(origin * BINS_PER_UNIT)  # the floor is the least possible value
        return cls(n_frames, Histogram.of(values, first), sums, squares, origin)

    def _combine(self, other: PixelStats, sign: int) -> PixelStats:
        if not other.sums:
            return self
        if not self.sums:
            zero = (0,) * len(other.sums)
            return PixelStats(0, Histogram(), zero, zero, other.origin)._combine(other, sign)
        if self.origin != other.origin:
            raise StatisticsError("Cannot merge pixel statistics about different origins.")
        return PixelStats(
            self.frames + sign * other.frames,
            self.histogram._combine(other.histogram, sign),
            tuple(a + sign * b for a, b in zip(self.sums, other.sums, strict=True)),
            tuple(a + sign * b for a, b in zip(self.squares, other.squares, strict=True)),
            self.origin,
        )

    def merge(self, other: PixelStats) -> PixelStats:
        return self._combine(other, 1)

    def subtract(self, other: PixelStats) -> PixelStats:
        """These statistics without the pixels of ``other``, which they counted."""
        return self._combine(other, -1)

    @classmethod
    def empty(cls) -> PixelStats:
        return cls()

    def same_as(self, other: PixelStats) -> bool:
        """Equal in every count and sum, bit for bit."""
        return (self.frames, self.sums, self.squares, self.histogram.first) == (
            other.frames,
            other.sums,
            other.squares,
            other.histogram.first,
        ) and np.array_equal(self.histogram.counts, other.histogram.counts)

    def band_moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Per band, lowest first: the mean and the (population) standard deviation, each
        the float64 rounding of a value computed exactly from the sums."""
        if self.frames == 0:
            raise StatisticsError("No pixel holds audio, so there are no band moments.")
        n, unit = self.frames, 1 << SUM_SHIFT
        means = [Fraction(s, n * unit) for s in self.sums]
        variances = [
            max(Fraction(q, n * unit) - m * m, Fraction(0))  # < 0 only by rounding
            for q, m in zip(self.squares, means, strict=True)
        ]
        origin = Fraction(self.origin)
        return (
            np.array([float(origin + m) for m in means]),
            np.sqrt(np.array([float(v) for v in variances])),
        )


def held(images: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """The pixels of spectrograms (n, n_mels, n_frames) that hold audio, the first
    ``frames[i]`` frames of each: the array itself when every frame does, else a copy of
    those pixels, flattened."""
    frames = np.asarray(frames)
    if (frames >= images.shape[-1]).all():
        return images  # the common case: nothing copied
    holds = np.arange(images.shape[-1]) < frames[:, None, None]
    return images[np.broadcast_to(holds, images.shape)]


def _band_sums(
    logmel: np.ndarray, frames: np.ndarray, padded: np.ndarray, origin: float
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per band, the sums of the values minus ``origin`` and of their squares over the
    frames that hold audio, as integers in units of ``2**-SUM_SHIFT``.

    Each clip's sums over its frames are float64 sums of its (float32) values in numpy's
    pairwise order, which depends only on the clip, not on where it sits in a batch; those
    per-clip sums are then added exactly. So the result is the same for any batching, and
    within float64 rounding of the exact sum. Measured: 4 passes over the batch, 5x faster
    than summing every value exactly.
    """
    x = logmel.astype(np.float64)
    x -= origin  # exact: a float32 minus a float32, in float64
    for i in padded.tolist():
        x[i, :, frames[i] :] = 0.0  # the padding adds nothing
    sums = x.sum(axis=-1)
    np.square(x, out=x)
    return _exact_column_sums(sums), _exact_column_sums(x.sum(axis=-1))


def _exact_column_sums(values: np.ndarray) -> tuple[int, ...]:
    """The exact sum of each column of finite float64 ``values`` (n, m), as integers in
    units of ``2**-SUM_SHIFT``.

    Rump, Ogita and Oishi's error-free extraction ("Accurate floating-point summation",
    SIAM J. Sci. Comput. 31, 2008): with ``sigma`` a power of two large enough for the
    column, ``q = (sigma + x) - sigma`` and ``x - q`` are exact, every ``q`` is a multiple
    of ``sigma * 2**-53``, and so their float64 sum is exact in any order. What is left,
    ``x - q``, is extracted again until nothing is; a few rounds, each a handful of numpy
    operations, where a Python integer per value would take milliseconds.
    """
    n, m = values.shape
    totals = [0] * m
    residual = np.array(values, np.float64)
    headroom = 2.0 ** math.ceil(math.log2(n + 2))
    while True:
        largest = np.abs(residual).max(axis=0, initial=0.0)
        live = np.flatnonzero(largest)
        if not len(live):
            return tuple(totals)
        exponent = np.ceil(np.log2(largest[live])).astype(np.int64)
        # At least 2**-1022: around it every float64 is a whole number of 2**-1074, the
        # least one, so subnormal residuals are taken whole.
        sigma = np.maximum(np.ldexp(headroom, exponent), 2.0**-1022)
        if not np.isfinite(sigma).all():
            raise StatisticsError("Values too large to sum exactly in float64.")
        part = (sigma + residual[:, live]) - sigma
        residual[:, live] -= part
        # Every part is a whole number of units of 2**(log2(sigma) - 53), and so their sum.
        unit = np.frexp(sigma)[1].astype(np.int64) - 1 - 53
        counts = np.ldexp(part.sum(axis=0), -unit).astype(np.int64)  # exact: below 2**53
        shifts = (unit + SUM_SHIFT).tolist()
        for j, count, shift in zip(live.tolist(), counts.tolist(), shifts, strict=True):
            totals[j] += count << shift if shift >= 0 else count >> -shift


# --- The statistics of a dataset, and the ranges they give ----------------------------------
