"""The five statistics of whole runs on a generated corpus, against numpy over every pixel
of librosa's log-mels, with the padding left out; their inverses; and their independence
from batching, workers and scratch."""

from __future__ import annotations

import math
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

from melpipe.analysis.config import SpectrogramConfig
from melpipe.analysis.pixels import BINS_PER_UNIT, histogram_grid
from melpipe.analysis.segments import Piece
from melpipe.analysis.stats import STATS_NAMES
from melpipe.read.reader import open_store
from melpipe.run.executors import LoopExecutor
from melpipe.run.runner import preprocess
from melpipe.run.tasks import analyse
from tests.helpers import assert_one_line_error, librosa_log_mel, read_all, run_cli, synth

SYNC = LoopExecutor()
STEP = 1 / BINS_PER_UNIT

# --- The accumulators on plain arrays -----------------------------------------------------


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
