import functools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from melpipe import records
from melpipe.analysis.pixels import exact_sum
from melpipe.analysis.stats import Extrema, GlobalStats, Range, StatsOptions, merge_all
from melpipe.errors import StatisticsError
from melpipe.run.types import tree_reduce
from tests.helpers import simple_stats

finite = st.floats(min_value=-25, max_value=15, allow_nan=False, width=32)
entries = st.lists(st.tuples(finite, finite, st.booleans()), min_size=1, max_size=120)


def as_arrays(rows):
    lows = np.array([min(a, b) for a, b, _ in rows], dtype=np.float32)
    highs = np.array([max(a, b) for a, b, _ in rows], dtype=np.float32)
    failed = np.array([f for _, _, f in rows])
    lows[failed] = np.nan
    highs[failed] = np.nan
    return lows, highs


def reduce_in_batches(lows, highs, batch_size, split_every):
    parts = [
        Extrema.from_clips(lows[i : i + batch_size], highs[i : i + batch_size])
        for i in range(0, len(lows), batch_size)
    ]
    return tree_reduce(parts, functools.partial(merge_all, Extrema), split_every=split_every)


@settings(max_examples=200, deadline=None)
@given(rows=entries, batch_size=st.integers(1, 50), split_every=st.integers(2, 9))
def test_any_batch_size_and_tree_shape_gives_the_same_statistics(rows, batch_size, split_every):
    lows, highs = as_arrays(rows)
    one_by_one = reduce_in_batches(lows, highs, 1, 2)
    reduced = reduce_in_batches(lows, highs, batch_size, split_every)
    assert reduced == one_by_one  # exact, not approximately
    ok = ~np.isnan(lows)
    if not ok.any():
        with pytest.raises(StatisticsError, match="No clip"):
            reduced.mean_and_extrema()
        return
    mean, extrema = reduced.mean_and_extrema()
    # Independent reference: plain numpy over the good files.
    assert extrema == Range(float(lows[ok].min()), float(highs[ok].max()))
    assert math.isclose(mean.min, np.mean(lows[ok], dtype=np.float64), rel_tol=1e-12,
                        abs_tol=1e-12)  # fmt: skip
    assert math.isclose(mean.max, np.mean(highs[ok], dtype=np.float64), rel_tol=1e-12,
                        abs_tol=1e-12)  # fmt: skip


def test_mean_is_the_post_statistic_and_extrema_the_true_one():
    lows = np.array([-20.0, -10.0, np.nan], dtype=np.float32)
    highs = np.array([2.0, 6.0, np.nan], dtype=np.float32)
    mean, extrema = Extrema.from_clips(lows, highs).mean_and_extrema()
    assert mean == Range(-15.0, 4.0)
    assert extrema == Range(-20.0, 6.0)


def test_round_trips_through_a_dict():
    stats = simple_stats((-15.0, 4.0), (-20.0, 6.0))
    assert stats.band_moments.per_band
    assert records.from_dict(GlobalStats, records.to_dict(stats)) == stats


@pytest.mark.parametrize("bad", [(1.0, 1.0), (2.0, 1.0), (0.0, math.inf)])
def test_degenerate_range_is_refused(bad):
    with pytest.raises(StatisticsError, match="no usable range"):
        simple_stats(bad, bad).range("mean")


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), max_size=80))
def test_exact_sum_equals_a_sum_of_fractions(values):
    array = np.array(values, dtype=np.float32)
    reference = sum((Fraction(float(v)) for v in array), Fraction(0))
    assert exact_sum(array) == reference


def test_exact_sum_refuses_what_it_cannot_sum_exactly():
    with pytest.raises(TypeError, match="float32"):
        exact_sum(np.zeros(3))
    with pytest.raises(StatisticsError, match="non-finite"):
        exact_sum(np.array([1.0, np.inf], dtype=np.float32))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"percentiles": (50.0, 10.0)}, "`percentiles`"),
        ({"percentiles": (0.0, 101.0)}, "`percentiles`"),
        ({"top_db": -3.0}, "`top_db`"),
        ({"clip_std": 0.0}, "`clip_std`"),
    ],
)
def test_options_out_of_range_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        StatsOptions(**options)
