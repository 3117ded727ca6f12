"""The window arithmetic of long recordings on plain values: where windows start, which
become clips, and which segment options apply."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from melpipe.analysis.config import SpectrogramConfig
from melpipe.analysis.segments import (
    Windows,
    choose,
    choose_clips,
    covered_seconds,
    rms_db,
    window_starts,
)
from melpipe.errors import ConfigError
from melpipe.run.plan import plan_batches
from tests.helpers import reference_starts


@settings(deadline=None)  # the first example builds a filter bank
@given(
    n_audio=st.integers(1, 50_000),
    n=st.integers(2, 5000),
    hop_share=st.floats(0.1, 2.5),
    tail=st.sampled_from(["pad", "drop"]),
)
def test_window_starts_match_a_plain_loop(n_audio, n, hop_share, tail):
    hop = max(1, round(n * hop_share))
    config = SpectrogramConfig(n_samples=n, segments="all", segment_hop=hop, tail=tail,
                               hop_length=1, n_fft=4, n_mels=1)  # fmt: skip
    starts = window_starts(n_audio, config)
    assert starts.tolist() == reference_starts(n_audio, n, hop, tail)
    if tail == "pad" and hop <= n:  # with no gaps between windows, all audio is held
        assert starts[-1] + n >= n_audio


def test_first_gives_one_window_at_the_start():
    config = SpectrogramConfig(n_samples=100)
    assert window_starts(10_000, config).tolist() == [0]
    assert window_starts(5, config).tolist() == [0]


@given(
    levels=st.lists(st.floats(-120, 0), min_size=1, max_size=40),
    k=st.integers(1, 10),
    select=st.sampled_from(["first", "loudest", "spread"]),
    floor=st.none() | st.floats(-100, -10),
)
def test_choose_keeps_what_each_selection_promises(levels, k, select, floor):
    config = SpectrogramConfig(segments="all", max_clips_per_file=k, select=select,
                               min_level_db=floor)  # fmt: skip
    levels_ = np.array(levels, dtype=np.float32)
    chosen = choose(levels_, config)
    loud = [i for i, v in enumerate(levels) if floor is None or levels_[i] >= floor]
    assert chosen.tolist() == sorted(set(chosen.tolist()))  # time order, no repeats
    assert set(chosen.tolist()) <= set(loud) and len(chosen) == min(k, len(loud))
    if select == "first":
        assert chosen.tolist() == loud[:k]
    elif select == "loudest":
        threshold = sorted((levels_[i] for i in loud), reverse=True)[: len(chosen)]
        assert sorted(levels_[chosen].tolist(), reverse=True) == [float(t) for t in threshold]
    elif len(loud) > 1 and k > 1:
        assert chosen[0] == loud[0] and chosen[-1] == loud[-1]  # from the first to the last


def test_loudest_ties_go_to_the_earlier_window():
    config = SpectrogramConfig(segments="all", max_clips_per_file=2, select="loudest")
    assert choose(np.array([-10, -5, -10, -5, -5], np.float32), config).tolist() == [1, 3]


def test_rms_db_is_twenty_log10_of_the_rms():
    t = np.arange(48000) / 48000
    sine = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    levels = rms_db(np.stack([sine, 0.1 * sine, np.ones_like(sine), np.zeros_like(sine)]))
    np.testing.assert_allclose(levels[:3], [20 * math.log10(math.sqrt(0.5)),
                                            20 * math.log10(0.1 * math.sqrt(0.5)), 0.0],
                               atol=1e-3)  # fmt: skip
    assert levels[3] == -200.0


def test_covered_seconds_counts_overlaps_once_and_stops_at_the_end():
    files = np.array([0, 0, 0, 1])
    starts = np.array([0.0, 0.5, 2.0, 0.0])
    durations = np.array([2.2, 0.4])
    # File 0: [0, 1.5) and [2.0, 2.2); file 1: [0, 0.4).
    assert covered_seconds(files, starts, durations, 1.0) == pytest.approx(1.5 + 0.2 + 0.4)


def test_a_ten_hour_recording_is_spread_over_many_even_tasks():
    config = SpectrogramConfig(segments="all")
    ten_hours = 10 * 3600 * config.sample_rate
    windows = Windows.layout([config.sample_rate * 3, None, ten_hours], config)
    assert len(windows) == 3 + 36000 and (windows.file != 1).all()
    paths = ["a.wav", "broken.wav", "long.wav"]
    batches = plan_batches(len(windows), 64)
    assert len(batches) == math.ceil(36003 / 64)
    for b in batches:
        pieces = windows.pieces(np.arange(b.start, b.stop))
        pieces = pieces.named([paths[f] for f in pieces.files])
        assert sum(len(p.starts) for p in pieces) == len(b)  # the same work in every task
        for p in pieces:  # each a range of samples of one file
            assert p.path == paths[p.file] and np.all(np.diff(p.starts) == config.n_samples)


def test_choose_clips_drops_every_window_of_a_file_that_failed_anywhere():
    config = SpectrogramConfig(segments="all", max_clips_per_file=2, select="loudest")
    windows = Windows(np.array([0, 0, 0, 1, 1, 2]), np.zeros(6, np.int64))
    ok = np.array([True, True, True, False, False, True])
    levels = np.array([-30, -10, -20, -5, -5, -40], np.float32)
    assert choose_clips(windows, ok, levels, config).tolist() == [1, 2, 5]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"segment_hop": 0.5}, "`segment_hop` only applies with `segments='all'`"),
        ({"max_clips_per_file": 3}, "`max_clips_per_file` only applies"),
        ({"segments": "all", "select": "loudest"}, "only with `max_clips_per_file`"),
        ({"segments": "all", "segment_hop": 0.0}, "at least one sample"),
        ({"segments": "some"}, "`segments` to be one of first, all"),
        ({"segments": "all", "max_clips_per_file": 0}, "`max_clips_per_file` to be a positive"),
    ],
)
def test_segment_options_that_cannot_apply_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        SpectrogramConfig.from_options(**options)
