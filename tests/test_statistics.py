"""The five statistics: their accumulators against plain numpy, then whole runs on a
generated corpus against numpy over every pixel of librosa's log-mels, with the padding
left out; their inverses; and their independence from batching."""

from __future__ import annotations

import functools
import itertools
import math
from fractions import Fraction
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
from hypothesis import example, given, settings
from hypothesis import strategies as st

from melpipe.analysis.config import SpectrogramConfig
from melpipe.analysis.pixels import BINS_PER_UNIT, Histogram, PixelStats, histogram_grid
from melpipe.analysis.scaling import image_to_logmel, scale_to_uint8
from melpipe.analysis.segments import Piece
from melpipe.analysis.stats import STATS_NAMES, Extrema, GlobalStats, StatsOptions, merge_all
from melpipe.errors import StatisticsError
from melpipe.read.reader import open_store
from melpipe.run.executors import LoopExecutor
from melpipe.run.runner import preprocess
from melpipe.run.tasks import analyse
from melpipe.run.types import tree_reduce
from tests.helpers import assert_one_line_error, librosa_log_mel, read_all, run_cli, synth

SYNC = LoopExecutor()
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


# --- Whole runs against numpy over every pixel ---------------------------------------------

FILES = [  # path, rate, channels, seconds: short ones padded, an 8 kHz one with empty bands
    ("a/short_16k.wav", 16000, 1, 0.3),
    ("a/long_44k_stereo.flac", 44100, 2, 2.35),
    ("b/narrow_8k.wav", 8000, 1, 1.3),
    ("b/mid_22k.wav", 22050, 1, 0.8),
    ("c/silent_tail_32k.wav", 32000, 1, 1.6),
]


def config_of(**options) -> SpectrogramConfig:
    return SpectrogramConfig.from_options(
        n_mels=24, hop_length=128, duration=0.5, segments="all", **options
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stats-corpus")
    rng = np.random.default_rng(12)
    for rel, sr, channels, seconds in FILES:
        data = synth(rng, sr, channels, seconds)
        if "silent_tail" in rel:
            data[len(data) // 2 :] = 0.0  # digital silence is sound's floor, not padding
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / rel, data, sr)
    (root / "broken.wav").write_text("not audio")
    return root


def reference(root: Path, reader, config: SpectrogramConfig):
    """For each clip of the store, librosa's log-mel of the window librosa.load gives, and
    its frames that hold audio by a plain loop over the frame centres."""
    loaded = {}
    logmels, frames = [], []
    for path, start in zip(reader.paths, reader.start_sample, strict=True):
        if path not in loaded:
            loaded[path] = librosa.load(root / path, sr=config.sample_rate)[0]
        y = loaded[path]
        window = librosa.util.fix_length(y[start : start + config.n_samples], size=config.n_samples)
        logmels.append(librosa_log_mel(window, config))
        audio = min(config.n_samples, len(y) - start)
        frames.append(sum(1 for t in range(config.n_frames) if t * config.hop_length < audio))
    return np.array(logmels), np.array(frames)


CHOICES = {
    "every window": {},
    "two loudest of each file": {"max_clips_per_file": 2, "select": "loudest"},
    "four loudest of each file": {"max_clips_per_file": 4, "select": "loudest"},
    "loud enough": {"min_level_db": -30.0},
}


@pytest.mark.parametrize("scratch", [True, False], ids=["scratch", "no-scratch"])
@pytest.mark.parametrize("choice", CHOICES)
def test_every_statistic_equals_numpy_over_the_pixels_that_hold_audio(
    corpus, tmp_path, choice, scratch
):
    config = config_of(**CHOICES[choice])
    out = tmp_path / "s.zarr"
    preprocess(corpus, out, config, executor=SYNC, batch_size=3, scratch=scratch)
    reader = open_store(out)
    logmels, frames = reference(corpus, reader, config)
    np.testing.assert_array_equal(reader.audio_frames, frames)
    assert (frames < config.n_frames).any()  # the corpus has padding to leave out
    held = np.concatenate([m[:, :f] for m, f in zip(logmels, frames, strict=True)], axis=1)
    values = held.astype(np.float64).ravel()
    stats = reader.stats
    # The post's two keep their definition: every pixel, padding included.
    assert stats.extrema.min == pytest.approx(logmels.min(), abs=1e-4)
    assert stats.mean.max == pytest.approx(logmels.max(axis=(1, 2)).mean(), rel=1e-5)
    # The histogram: every pixel that holds audio, none of the padding.
    histogram = reader.histogram()
    assert histogram.total == stats.pixels.count == values.size < logmels.size
    for q in (0.1, 1, 50, 99, 99.9):
        assert histogram.percentile(q) == pytest.approx(np.percentile(values, q),
                                                        abs=STEP + 1e-4)  # fmt: skip
    lo, hi = stats.options.percentiles
    assert stats.percentile.min == pytest.approx(np.percentile(values, lo), abs=STEP + 1e-4)
    assert stats.percentile.max == pytest.approx(np.percentile(values, hi), abs=STEP + 1e-4)
    assert np.percentile(values, 50) > np.percentile(logmels, 50) + STEP  # padding is left out
    # top-db: the maximum over the pixels that hold audio, and 80 dB of power below it.
    assert stats.top_db.max == pytest.approx(values.max(), abs=1e-4)
    assert stats.top_db.max - stats.top_db.min == pytest.approx(80 * math.log(10) / 10)
    # band-moments: per band, lowest first, over the same pixels.
    np.testing.assert_allclose(stats.pixels.band_mean, held.mean(axis=1, dtype=np.float64),
                               rtol=1e-5, atol=1e-4)  # fmt: skip
    np.testing.assert_allclose(stats.pixels.band_std, held.std(axis=1, dtype=np.float64),
                               rtol=1e-4, atol=1e-4)  # fmt: skip
    # The reduction itself, to float64 rounding and to the count, over the log-mels the
    # run's own analysis gives for its clips (one task's worth, no batching, no tree).
    pieces = [Piece(0, path, np.array([start])) for path, start in
              zip(reader.paths, reader.start_sample, strict=True)]  # fmt: skip
    ours = analyse(str(corpus), pieces, config)
    assert ours.windows.ok.all()
    mine = np.concatenate([m[:, :f] for m, f in zip(ours.logmel, frames, strict=True)], axis=1)
    np.testing.assert_allclose(stats.pixels.band_mean, mine.mean(axis=1, dtype=np.float64),
                               rtol=1e-12, atol=1e-12)  # fmt: skip
    np.testing.assert_allclose(stats.pixels.band_std, mine.std(axis=1, dtype=np.float64),
                               rtol=1e-12, atol=1e-12)  # fmt: skip
    first, n_bins = histogram_grid(config.eps)
    edges = (first + np.arange(n_bins + 1)) / BINS_PER_UNIT
    np.testing.assert_array_equal(reader.array("histogram")[0], np.histogram(mine, edges)[0])
    assert stats.top_db.max == mine.max()
    mean, std = np.array(stats.pixels.band_mean), np.array(stats.pixels.band_std)
    np.testing.assert_allclose(stats.band_moments.min, np.where(std > 0, mean - 3 * std, mean))
    np.testing.assert_allclose(stats.band_moments.max, np.where(std > 0, mean + 3 * std, mean + 1))


def test_statistics_do_not_depend_on_batches_workers_or_scratch(corpus, tmp_path, dask_executor):
    config = config_of(max_clips_per_file=3, select="loudest", segment_hop=0.3)
    reference_store = tmp_path / "reference.zarr"
    preprocess(corpus, reference_store, config, executor=SYNC, batch_size=64)
    expected_arrays, expected = read_all(reference_store)
    runs = [(dask_executor, 5, True), (SYNC, 1, False), (dask_executor, 2, False)]
    for executor, batch_size, scratch in runs:
        out = tmp_path / f"b{batch_size}{scratch}.zarr"
        preprocess(corpus, out, config, executor=executor, batch_size=batch_size, scratch=scratch)
        arrays, attrs = read_all(out)
        assert attrs["stats"] == expected["stats"]
        for name in ("histogram", "audio_frames"):
            np.testing.assert_array_equal(arrays[name], expected_arrays[name], err_msg=name)


@pytest.mark.parametrize("name", STATS_NAMES)
def test_to_logmel_inverts_every_statistic_within_half_a_level(corpus, tmp_path, name):
    config = config_of()
    out = tmp_path / f"{name}.zarr"
    preprocess(corpus, out, config, executor=SYNC, stats=name, batch_size=4)
    reader = open_store(out)
    logmels, frames = reference(corpus, reader, config)
    scale = reader.stats.range(name)
    assert reader.scale == scale
    lo, hi = scale.bounds()  # per band (lowest first) for band-moments, else one pair
    inside = (logmels > lo + 1e-4) & (logmels < hi - 1e-4)
    half_level = np.broadcast_to((hi - lo) / 510, logmels.shape)
    error = np.abs(reader.to_logmel(reader[:]) - logmels)
    assert inside.mean() > 0.5
    assert (error[inside] <= half_level[inside] + 2e-4).all()
    # How the statistic spends the levels, against the images themselves.
    levels = 255 - reader[:][:, ::-1, :].astype(np.int64)
    held = np.concatenate([lv[:, :f].ravel() for lv, f in zip(levels, frames, strict=True)])
    counts = np.bincount(held, minlength=256)
    figures = reader.figures[name]
    exact = name == "band-moments"  # counted by pass 2; the others from the histogram
    tolerance = 0 if exact else 0.01
    assert figures.at_min == pytest.approx(counts[0] / held.size, abs=tolerance)
    assert figures.at_max == pytest.approx(counts[255] / held.size, abs=tolerance)
    fullest = np.cumsum(np.sort(counts)[::-1])
    levels_99 = int(np.searchsorted(fullest, 0.99 * held.size)) + 1
    assert abs(figures.levels_99 - levels_99) <= (0 if exact else 3)
    db = float(np.median(hi - lo)) * 10 / math.log(10) / 255
    assert figures.db_per_level == pytest.approx(db)


def test_stats_from_scales_with_any_statistic_of_another_store(corpus, tmp_path):
    source, split, chained = tmp_path / "a.zarr", tmp_path / "b.zarr", tmp_path / "c.zarr"
    run_cli("preprocess", corpus, source, "--scheduler", "sync", "--segments", "all",
             "--duration", "0.5", "--n-mels", "24", "--hop-length", "128")  # fmt: skip
    run_cli("preprocess", corpus, split, "--scheduler", "sync", "--stats-from", source,
             "--stats", "percentile", "--percentiles", "5", "95", "--segments", "all",
             "--duration", "0.5", "--n-mels", "24", "--hop-length", "128")  # fmt: skip
    a, b = open_store(source), open_store(split)
    histogram = a.histogram()
    assert b.used == "percentile"
    assert b.scale.min == histogram.percentile(5) and b.scale.max == histogram.percentile(95)
    assert b.stats.pixels == a.stats.pixels and b.attrs.stats.source.store == str(source)
    # b's statistics are a's: other percentiles need a's histogram, so a is named.
    result = run_cli("preprocess", corpus, chained, "--scheduler", "sync", "--stats-from",
                      split, "--percentiles", "1", "99", "--segments", "all", "--duration",
                      "0.5", "--n-mels", "24", "--hop-length", "128", check=False)  # fmt: skip
    assert_one_line_error(result, "other --percentiles", f"use --stats-from {source}.")
    result = run_cli("preprocess", corpus, chained, "--scheduler", "sync", "--percentiles",
                      "50", "10", check=False)  # fmt: skip
    assert_one_line_error(result, "--percentiles LO and HI", "50 and 10")


def test_info_and_preview_show_how_each_statistic_spends_the_levels(corpus, tmp_path):
    out = tmp_path / "s.zarr"
    preprocess(corpus, out, config_of(), executor=SYNC, stats="top-db")
    info = run_cli("info", out).stdout
    for name in STATS_NAMES:
        line = next(row for row in info.splitlines() if row[2:].startswith(name + " "))
        assert line.startswith("*" if name == "top-db" else " ")
        figures = open_store(out).figures[name]
        assert f"{figures.at_min:.2%}" in line and f"{figures.levels_99:d}" in line
    picture = tmp_path / "p.png"
    run_cli("preview", out, "-o", picture)
    assert picture.stat().st_size > 10_000


def test_a_histogram_of_nothing_is_empty():
    assert Histogram.of(np.empty(0, np.float32), -2653).total == 0
    with pytest.raises(StatisticsError, match="below the log"):
        Histogram.of(np.array([-30.0], np.float32), -2653)
