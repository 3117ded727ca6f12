"""Long recordings cut into many clips, by whole runs on real stores (and real worker
processes), against librosa on the whole files; and a two-hour file in bounded memory."""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
import zarr

from melpipe.analysis.config import SpectrogramConfig
from melpipe.errors import ConfigError
from melpipe.read.reader import open_store
from melpipe.run.executors import LoopExecutor
from melpipe.run.runner import preprocess
from tests.helpers import (
    config_of,
    librosa_log_mel,
    read_all,
    reference_image,
    reference_starts,
    run_cli,
    synth,
)

SYNC = LoopExecutor()


# (path, rate, channels, seconds, subtype): long recordings of mixed rates and formats.
LONG_FILES = [
    ("music/a_44k_stereo.flac", 44100, 2, 7.3, "PCM_16"),
    ("music/b_48k.wav", 48000, 1, 5.05, "PCM_24"),
    ("field/c_16k.wav", 16000, 1, 4.0, "FLOAT"),
    ("field/d_22k_stereo.wav", 22050, 2, 3.61, "PCM_16"),
    ("field/e_short_32k.flac", 32000, 1, 0.4, "PCM_16"),
]


def write_corpus(root: Path, rng: np.random.Generator) -> Path:
    for rel, sr, channels, seconds, subtype in LONG_FILES:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = synth(rng, sr, channels, seconds)
        data[: int(sr * 0.9)] *= 0.001  # a quiet first second, for --min-level-db
        sf.write(path, data, sr, subtype=subtype)
    (root / "broken.wav").write_text("not audio")
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"), np.random.default_rng(11))


def librosa_clips(root: Path, config: SpectrogramConfig):
    """Every window's log-mel and RMS level, from librosa.load of the whole file, sliced by
    a plain loop: (path, start, logmel, level) in path, then start order."""
    n, hop = config.n_samples, config.segment_hop
    clips = []
    for rel, *_ in sorted(LONG_FILES):
        y, _ = librosa.load(root / rel, sr=config.sample_rate)
        for s in reference_starts(len(y), n, hop, config.tail):
            window = librosa.util.fix_length(y[s : s + n], size=n)
            level = 10 * np.log10(np.mean(window.astype(np.float64) ** 2))
            clips.append((rel, s, librosa_log_mel(window, config), level))
    return clips


def assert_images_match(images, logmels, lo, hi):
    for image, logmel in zip(images, logmels, strict=True):
        difference = np.abs(image.astype(int) - reference_image(logmel, lo, hi))
        assert difference.max() <= 1 and (difference > 0).mean() < 1e-3


@pytest.mark.parametrize("hop", [None, 0.15])
def test_every_window_equals_librosa_on_the_whole_file(corpus, tmp_path, hop):
    config = config_of(segments="all", duration=0.4, segment_hop=hop)
    out = tmp_path / "all.zarr"
    report = preprocess(corpus, out, config, executor=SYNC, batch_size=7)
    expected = librosa_clips(corpus, config)
    reader = open_store(out)
    assert report.counts.clips == len(reader) == len(expected)
    assert [(reader.paths[i], reader.start_sample[i]) for i in range(len(reader))] == [
        (rel, s) for rel, s, *_ in expected
    ]
    np.testing.assert_allclose(reader.start, reader.start_sample / config.sample_rate)
    np.testing.assert_allclose(reader.level_db, [c[3] for c in expected], atol=1e-3)
    lows = np.array([c[2].min() for c in expected])
    highs = np.array([c[2].max() for c in expected])
    np.testing.assert_allclose(reader.array("clip_min"), lows, rtol=1e-5)
    # The post's statistic, now the mean of per-clip extrema, and the true extrema.
    stats = reader.stats
    np.testing.assert_allclose([stats.mean.min, stats.mean.max], [lows.mean(), highs.mean()],
                               rtol=1e-5)  # fmt: skip
    np.testing.assert_allclose([stats.extrema.min, stats.extrema.max], [lows.min(), highs.max()],
                               rtol=1e-5)  # fmt: skip
    assert_images_match(reader[:], [c[2] for c in expected], stats.mean.min, stats.mean.max)
    # Files: what was found, and each one's clips.
    assert reader.file_paths.tolist() == sorted([p for p, *_ in LONG_FILES] + ["broken.wav"])
    for rel, sr, channels, seconds, _ in LONG_FILES:
        f = reader.file_paths.tolist().index(rel)
        assert reader.decoded[f] and reader.array("sample_rate")[f] == sr
        assert reader.array("channels")[f] == channels
        assert reader.array("duration")[f] == pytest.approx(seconds, abs=1 / sr)
        assert (reader.paths[reader.clips_of(rel)] == rel).all()
    assert reader.clips_of("broken.wav").size == 0
    assert "broken.wav" in reader.file_paths[reader.failed_files]


def test_the_store_does_not_depend_on_workers_or_batch_sizes(corpus, tmp_path, dask_executor):
    config = config_of(segments="all", duration=0.25, segment_hop=0.2)
    reference = tmp_path / "reference.zarr"
    preprocess(corpus, reference, config, executor=SYNC, batch_size=64)
    for executor, batch_size in ((dask_executor, 5), (SYNC, 1), (dask_executor, 13)):
        out = tmp_path / f"b{batch_size}.zarr"
        preprocess(corpus, out, config, executor=executor, batch_size=batch_size)
        arrays, attrs = read_all(out)
        expected, expected_attrs = read_all(reference)
        for name, values in expected.items():
            np.testing.assert_array_equal(arrays[name], values, err_msg=name)
        assert attrs["stats"] == expected_attrs["stats"]


def test_tail_drop_keeps_whole_windows_and_pads_only_short_files(corpus, tmp_path):
    config = config_of(segments="all", duration=1.0, tail="drop")
    reader = open_store(preprocess(corpus, tmp_path / "d.zarr", config, executor=SYNC).output)
    expected = librosa_clips(corpus, config)
    assert [(reader.paths[i], reader.start_sample[i]) for i in range(len(reader))] == [
        (rel, s) for rel, s, *_ in expected
    ]
    short = reader.clips_of("field/e_short_32k.flac")
    assert len(short) == 1  # shorter than a clip: padded either way
    assert reader.clips_of("music/a_44k_stereo.flac").size == 7  # 7.3 s: seven whole


@pytest.mark.parametrize("select", ["first", "loudest", "spread"])
def test_max_clips_per_file_and_min_level_choose_as_documented(corpus, tmp_path, select):
    config = config_of(segments="all", duration=0.5, max_clips_per_file=3, select=select,
                       min_level_db=-40.0)  # fmt: skip
    out = tmp_path / f"{select}.zarr"
    preprocess(corpus, out, config, executor=SYNC, batch_size=4)
    reader = open_store(out)
    every = librosa_clips(corpus, config_of(segments="all", duration=0.5))
    expected = []
    for rel in sorted({c[0] for c in every}):
        mine = [c for c in every if c[0] == rel]
        levels = np.array([c[3] for c in mine], np.float32)
        loud = [i for i in range(len(mine)) if levels[i] >= -40.0]  # the quiet start goes
        if select == "first":
            keep = loud[:3]
        elif select == "loudest":
            keep = sorted(sorted(loud, key=lambda i: (-levels[i], i))[:3])
        else:
            keep = [loud[round(j)] for j in np.linspace(0, len(loud) - 1, 3)] if len(
                loud) > 3 else loud  # fmt: skip
        expected += [mine[i] for i in keep]
    assert [(reader.paths[i], reader.start_sample[i]) for i in range(len(reader))] == [
        (c[0], c[1]) for c in expected
    ]
    assert (reader.level_db >= -40).all() and (reader.array("n_clips") <= 3).all()
    lows = np.array([c[2].min() for c in expected])
    assert reader.stats.mean.min == pytest.approx(lows.mean(), rel=1e-5)  # over kept clips


def test_a_file_with_no_window_loud_enough_is_listed_as_such(tmp_path, rng):
    source = tmp_path / "in"
    source.mkdir()
    sf.write(source / "loud.wav", synth(rng, 22050, 1, 2.0), 22050)
    sf.write(source / "whisper.wav", 1e-4 * synth(rng, 22050, 1, 2.0), 22050)
    out = tmp_path / "quiet.zarr"
    run = run_cli("preprocess", source, out, "--scheduler", "sync", "--segments", "all",
                   "--min-level-db", "-40")  # fmt: skip
    assert "from 2 files: 2 decoded, 0 failed" in run.stdout
    assert "1 files decoded but gave no clip, every window below --min-level-db: whisper.wav" in (
        run.stdout
    )
    reader = open_store(out)
    f = reader.file_paths.tolist().index("whisper.wav")
    assert reader.decoded[f] and reader.file_errors[f] == "" and reader.clips_of(f).size == 0
    info = run_cli("info", out).stdout
    assert "gave no clip (every window too quiet): 1" in info and "  whisper.wav" in info


def test_a_level_no_window_reaches_fails_with_the_reason(corpus, tmp_path):
    config = config_of(segments="all", min_level_db=0.0)
    result = run_cli("preprocess", corpus, tmp_path / "x.zarr", "--scheduler", "sync",
                      "--segments", "all", "--min-level-db", "0", check=False)  # fmt: skip
    assert "No window is as loud as --min-level-db 0" in result.stderr
    assert config.min_level_db == 0.0


def test_the_segment_options_are_recorded_and_checked_like_any_other(corpus, tmp_path):
    config = config_of(segments="all", duration=0.5, segment_hop=0.25)
    train = tmp_path / "train.zarr"
    preprocess(corpus, train, config, executor=SYNC)
    recorded = zarr.open_group(train, mode="r").attrs["config"]
    assert (recorded["segments"], recorded["segment_hop"], recorded["tail"]) == (
        "all", config.segment_hop, "pad")  # fmt: skip
    other = config_of(segments="all", duration=0.5)
    with pytest.raises(ConfigError, match=r"segment_hop \(\d+, \d+\)"):
        preprocess(corpus, tmp_path / "v.zarr", other, executor=SYNC, stats_from=train)
    scaled = preprocess(corpus, tmp_path / "v.zarr", config, executor=SYNC, stats_from=train)
    assert scaled.stats.values == open_store(train).stats


def test_scan_counts_the_clips_and_the_audio_they_hold(corpus):
    out = run_cli("scan", corpus, "--segments", "all", "--duration", "1", "--tail", "drop").stdout
    total = sum(seconds for *_, seconds, _ in LONG_FILES)
    assert f"{total:.1f} s in all" in out
    # Whole one-second windows: 7 + 5 + 4 + 3, and one padded clip of the 0.4 s file.
    held = 7 + 5 + 4 + 3 + 0.4
    assert "20 clips, holding" in out and f"{held:.1f} s of the {total:.1f} s" in out
    first = run_cli("scan", corpus).stdout
    assert "5 clips, holding 4.4 s" in first


def test_a_long_file_is_decoded_once_per_pass_not_once_per_window(tmp_path, rng, monkeypatch):
    from melpipe.analysis.segments import Piece
    from melpipe.run.tasks import analyse

    sf.write(tmp_path / "long.wav", synth(rng, 44100, 2, 20.0), 44100, subtype="PCM_16")
    config = config_of(segments="all", duration=0.5, segment_hop=0.25)
    starts = np.arange(64) * config.segment_hop  # 16 s of overlapping windows
    read = []
    original = sf.SoundFile.read

    def counting(self, frames=-1, *args, **kwargs):
        data = original(self, frames, *args, **kwargs)
        read.append(len(data))
        return data

    monkeypatch.setattr(sf.SoundFile, "read", counting)
    result = analyse(str(tmp_path), [Piece(0, "long.wav", starts)], config)
    assert result.windows.ok.all()
    span = (starts[-1] + config.n_samples) * 2  # in frames at 44.1 kHz
    assert span <= sum(read) < span + 4 * 65536  # once, plus what a block reads past it


def peak_resident_bytes() -> int:
    """This process's peak resident memory since it started its program. (Not
    ``ru_maxrss``, which Linux carries over from the parent that forked the process.)"""
    with open("/proc/self/status") as status:
        line = next(x for x in status if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


@pytest.mark.cluster
def test_a_two_hour_stereo_file_stays_within_bounded_worker_memory(tmp_path):
    """2 hours of 48 kHz stereo (1.4 GB of PCM, 2.8 GB as float32): each worker's peak
    resident memory stays under 600 MB, since files are decoded in blocks."""
    from distributed import Client, LocalCluster

    from melpipe.run.clusters import DaskExecutor

    source = tmp_path / "in"
    source.mkdir()
    rng = np.random.default_rng(5)
    block = (0.1 * rng.standard_normal((48000 * 10, 2))).astype(np.float32)
    with sf.SoundFile(source / "two_hours.wav", "w", 48000, 2, "PCM_16") as f:
        for k in range(720):  # 10 s at a time, at varying levels
            f.write(block * (0.2 + 0.8 * ((k * 7919) % 100) / 100))
    config = SpectrogramConfig.from_options(segments="all", n_mels=64)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:  # fmt: skip
        report = preprocess(source, tmp_path / "out.zarr", config, executor=DaskExecutor(client))
        peaks = client.run(peak_resident_bytes)
    assert report.counts.clips == 7200
    print(f"peak resident memory per worker: {sorted(peaks.values())} bytes")
    assert max(peaks.values()) < 600e6, peaks
    reader = open_store(tmp_path / "out.zarr")
    assert reader.start[-1] == 7199.0 and reader.clips_of(0).size == 7200
