"""The exact pixel statistics against plain numpy: their accumulators for any batches and
tree, subtraction, a flat band, and the histogram's grid."""

from __future__ import annotations

import functools
import itertools
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from melpipe.analysis.pixels import BINS_PER_UNIT, Histogram, PixelStats, histogram_grid
from melpipe.analysis.scaling import image_to_logmel, scale_to_uint8
from melpipe.analysis.stats import Extrema, GlobalStats, StatsOptions, merge_all
from melpipe.errors import StatisticsError
from melpipe.run.types import tree_reduce

FLOOR = float(np.log(np.float32(1e-9)))
STEP = 1 / BINS_PER_UNIT

# --- The accumulators on plain arrays -----------------------------------------------------


def random_logmels(seed: int, n: int, n_mels: int = 6, n_frames: int = 9):
    rng = np.random.default_rng(seed)
    logmel = np.maximum(rng.standard_normal((n, n_mels, n_frames)) * 5 - 6, FLOOR)
    logmel = logmel.astype(np.float32)
    logmel[rng.random(logmel.shape) < 0.05] = 0.0
    logmel[:, -1] = np.float32(FLOOR)  # an empty band: all floor
    frames = rng.integers(0, n_frames + 1, n)
    frames[rng.random(n) < 0.5] = n_frames
    return logmel, frames


def held_values(logmel, frames):
    """(n_mels, pixels) float64: the frames that hold audio, by a plain loop."""
    columns = [logmel[i, :, t] for i in range(len(frames)) for t in range(frames[i])]
    return np.array(columns, np.float64).T.reshape(logmel.shape[1], -1)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40), cuts=st.lists(st.integers(1, 39)),
       split_every=st.integers(2, 6))  # fmt: skip
@example(seed=139287, n=1, cuts=[], split_every=2)  # a small variance under a large mean
@example(seed=21927, n=1, cuts=[], split_every=2)  # one pixel per band: numpy's variance is 0
def test_pixel_statistics_equal_numpy_for_any_batches_and_tree(seed, n, cuts, split_every):
    logmel, frames = random_logmels(seed, n)
    bounds = sorted({0, n, *(c for c in cuts if c < n)})
    parts = [PixelStats.of(logmel[a:b], frames[a:b], FLOOR) for a, b in itertools.pairwise(bounds)]
    whole = PixelStats.of(logmel, frames, FLOOR)
    reduced = tree_reduce(parts, functools.partial(merge_all, PixelStats), split_every=split_every)
    assert reduced.same_as(whole)  # bit for bit, whatever the batches and the tree
    values = held_values(logmel, frames)
    assert whole.frames == values.shape[1] == int(frames.sum())
    if not values.size:
        return
    mean, std = whole.band_moments()
    np.testing.assert_allclose(mean, values.mean(axis=1), rtol=1e-13, atol=1e-13)
    # The documented bound, band by band: the variance within a few units in the last place
    # of the mean square about the floor. Where the spread is far above it, the deviation
    # is within 1e-12 of numpy's; where it is near 0 (one pixel per band, seed 21927), its
    # square root is not: 1.7e-7 for numpy's 0.
    mean_squares = ((values - FLOOR) ** 2).mean(axis=1)
    error = np.abs(std**2 - values.var(axis=1))
    assert (error <= 16 * 2**-52 * mean_squares + 1e-15).all(), (error, mean_squares)
    spread = values.var(axis=1) > 1e6 * 2**-52 * mean_squares
    np.testing.assert_allclose(std[spread], values.std(axis=1)[spread], rtol=1e-12, atol=1e-12)
    exact = [Fraction(float(v)) for v in values[0]]  # band 0 by exact arithmetic
    exact_mean = sum(exact, Fraction(0)) / len(exact)
    assert mean[0] == float(exact_mean)  # the exact mean, rounded once
    exact_var = sum((v - exact_mean) ** 2 for v in exact) / len(exact)
    mean_square = sum((v - Fraction(FLOOR)) ** 2 for v in exact) / len(exact)
    # The per-clip sums of squares are rounded before they are added exactly: the variance
    # is within a few units in the last place of the mean square of the summed values.
    assert abs(Fraction(float(std[0])) ** 2 - exact_var) <= 16 * 2**-52 * mean_square
    assert std[-1] == 0.0  # a band of floor only has no spread at all
    first, n_bins = histogram_grid(1e-9)
    edges = (first + np.arange(n_bins + 1)) / BINS_PER_UNIT
    np.testing.assert_array_equal(
        whole.histogram.on_grid(first, n_bins), np.histogram(values, bins=edges)[0]
    )
    for q in (0, 0.1, 5, 50, 99.9, 100):
        assert whole.histogram.percentile(q) == pytest.approx(np.percentile(values, q),
                                                              abs=STEP / 2)  # fmt: skip


def test_subtracting_what_was_counted_leaves_the_rest_exactly():
    logmel, frames = random_logmels(3, 30)
    kept, dropped = (
        PixelStats.of(logmel[:20], frames[:20], FLOOR),
        PixelStats.of(logmel[20:], frames[20:], FLOOR),
    )
    assert kept.merge(dropped).subtract(dropped).same_as(kept)


def test_a_band_that_never_changes_sits_at_level_zero_and_inverts_exactly():
    logmel, frames = random_logmels(5, 12)
    frames[:] = logmel.shape[-1]
    pixels = PixelStats.of(logmel, frames, FLOOR)
    extrema = Extrema.from_clips(logmel.min(axis=(1, 2)), logmel.max(axis=(1, 2)))
    stats = GlobalStats.compute(extrema, pixels, float(logmel.max()), StatsOptions())
    scale = stats.range("band-moments")
    assert (scale.min[-1], scale.max[-1]) == (FLOOR, FLOOR + 1.0)
    images, _ = scale_to_uint8(logmel, scale)
    assert (images[:, 0] == 255).all()  # the top row is the highest band: white
    np.testing.assert_array_equal(image_to_logmel(images, scale)[:, -1], logmel[:, -1])


def test_the_histogram_grid_covers_every_possible_value():
    first, n_bins = histogram_grid(1e-9)
    assert first / BINS_PER_UNIT <= FLOOR < (first + 1) / BINS_PER_UNIT
    assert (first + n_bins) / BINS_PER_UNIT > np.log(np.finfo(np.float32).max)
    assert STEP <= 0.01


def test_a_histogram_of_nothing_is_empty():
    assert Histogram.of(np.empty(0, np.float32), -2653).total == 0
    with pytest.raises(StatisticsError, match="below the log"):
        Histogram.of(np.array([-30.0], np.float32), -2653)
