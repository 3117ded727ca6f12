"""The store's declared layout and its typed attributes, on plain values."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from melpipe.analysis.config import SpectrogramConfig
from melpipe.analysis.stats import (
    STATS_NAMES,
    Figures,
    GlobalStats,
    PixelSummary,
    Range,
    StatsOptions,
)
from melpipe.errors import StoreError
from melpipe.sources.discover import SkippedFolder
from melpipe.store.schema import (
    ARRAYS,
    MARKER,
    WINDOW_ARRAYS,
    Counts,
    StatsRecord,
    StatsSource,
    Step,
    StoreAttrs,
    arrays_of,
    store_entries,
)
from tests.helpers import a_source, simple_stats

text = st.text(max_size=20)
finite = st.floats(-30, 30, allow_nan=False)
ranges = st.tuples(finite, finite).map(lambda t: Range(min(t), max(t)))
bands = st.integers(1, 5).flatmap(
    lambda n: st.tuples(
        st.lists(finite, min_size=n, max_size=n), st.lists(st.floats(0, 5), min_size=n, max_size=n)
    )
)


def recorded(mean: Range, extrema: Range, percentile: Range, band: tuple) -> GlobalStats:
    means, stds = tuple(band[0]), tuple(band[1])
    top_db = Range(extrema.max - 18.4, extrema.max)
    per_band = Range(means, tuple(m + 1.0 for m in means))
    pixels = PixelSummary(10, extrema.max, means, stds)
    return GlobalStats(mean, extrema, percentile, top_db, per_band, StatsOptions(), pixels)


figures = st.builds(Figures, st.floats(0, 1), st.floats(0, 1), st.integers(1, 256),
                    st.floats(0.01, 2))  # fmt: skip
statistics = st.builds(recorded, ranges, ranges, ranges, bands)
records = st.builds(
    StatsRecord,
    values=statistics,
    used=st.sampled_from(STATS_NAMES),
    source=st.none() | st.builds(StatsSource, text, text),
    clipped_fraction=st.floats(0, 1),
    figures=st.dictionaries(st.sampled_from(STATS_NAMES), figures),
)
configs = st.builds(
    SpectrogramConfig.from_options,
    n_mels=st.integers(8, 64),
    hop_length=st.sampled_from([128, 256, 512]),
    duration=st.floats(0.1, 3.0),
    segments=st.just("all"),
    segment_hop=st.floats(0.05, 2.0),
    tail=st.sampled_from(["pad", "drop"]),
    max_clips_per_file=st.none() | st.integers(1, 100),
    min_level_db=st.none() | st.floats(-100, 0),
)
attributes = st.builds(
    StoreAttrs,
    status=st.just("complete"),
    run_id=text,
    created=text,
    input=text,
    config=configs,
    plan=st.dictionaries(text, st.integers() | text | st.booleans(), max_size=5),
    versions=st.dictionaries(text, text, max_size=3),
    skipped=st.lists(st.builds(SkippedFolder, text, text), max_size=3).map(tuple),
    stats=records,
    counts=st.builds(Counts, st.integers(0, 10**7), st.integers(0, 10**7), st.integers(0, 10**9)),
    failure=st.none() | text,
    extra=st.dictionaries(st.sampled_from(["note", "owner"]), text, max_size=2),
    sources=st.lists(
        st.builds(
            a_source,
            st.integers(0, 10**7),
            st.integers(0, 10**9),
            input=text,
            action=st.sampled_from(["run", "append"]),
            own=st.none() | statistics,
        ),
        min_size=1,
        max_size=3,
    ).map(tuple),
    grown=st.none() | statistics,
)


@given(attributes)
def test_attributes_round_trip_through_json(attrs):
    assert StoreAttrs.from_dict(json.loads(json.dumps(attrs.to_dict()))) == attrs


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "other"}, "not a melpipe store"),
        ({"format_version": 3}, "format version 3"),
        ({"status": "halfway"}, "'status' holds 'halfway', not one of 'incomplete', 'complete'"),
        ({"stats": None}, "marked complete but its attributes lack stats"),
        ({"config": {"n_mels": 64}}, r"damaged attributes \(lacks 'config.sample_rate'\)"),
        (
            {"counts": {"files": 2, "decoded": 1, "clips": 1, "failed": 0}},
            "'counts.failed' is 0, where this version of melpipe has 1",
        ),
    ],
)
def test_what_cannot_be_read_is_named(change, message):
    good = StoreAttrs(
        status="complete", run_id="r", created="t", input="in",
        config=SpectrogramConfig(), plan={}, versions={},
        stats=StatsRecord(simple_stats((0, 1), (0, 1)), "mean", None, 0.0),
        counts=Counts(1, 1, 1), sources=(a_source(1, 1),),
    ).to_dict()  # fmt: skip
    with pytest.raises(StoreError, match=message):
        StoreAttrs.from_dict(good | change)
    missing = {k: v for k, v in good.items() if k != "plan"}
    with pytest.raises(StoreError, match="lacks 'plan'"):
        StoreAttrs.from_dict(missing)


def test_each_step_writes_its_arrays_with_the_marker_last():
    written = [a.name for step in Step for a in arrays_of(step)]
    expected = [a.name for a in (*ARRAYS, *WINDOW_ARRAYS)]
    assert sorted(written) == sorted(expected)  # every array, once
    assert arrays_of(Step.IMAGES)[-1].name == MARKER
    assert {"zarr.json", "melpipe.lock", "images", "scratch"} <= store_entries()
