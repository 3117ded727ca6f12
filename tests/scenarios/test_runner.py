"""End-to-end runs on real worker processes, checked against an independent reference."""

import dataclasses
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import zarr

from melpipe.analysis.config import SpectrogramConfig
from melpipe.errors import ConfigError, InputError, StatisticsError, StoreError
from melpipe.read.reader import open_store
from melpipe.run.executors import LoopExecutor
from melpipe.run.runner import preprocess
from melpipe.run.tasks import AnalysisItem, ImagesItem, RecountItem, SurveyItem
from melpipe.store.schema import RUN_STATE
from tests.helpers import (
    BROKEN_FILES,
    GOOD_FILES,
    Interrupted,
    assert_same_arrays,
    interrupt_images_after,
    librosa_clip_log_mel,
    read_all,
    reference_image,
    write_dataset,
)

SYNC = LoopExecutor()


def reference(root: Path, config: SpectrogramConfig):
    """The post's method done right, file by file with librosa and numpy: no melpipe code."""
    logmels = {rel: librosa_clip_log_mel(root / rel, config) for rel, *_ in GOOD_FILES}
    lows = np.array([m.min() for m in logmels.values()], np.float64)
    highs = np.array([m.max() for m in logmels.values()], np.float64)
    stats = {
        "mean": (lows.mean(), highs.mean()),
        "extrema": (lows.min(), highs.max()),
    }
    return logmels, stats


@pytest.fixture(scope="module")
def dask_run(dataset, config, dask_executor, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "dask.zarr"
    report = preprocess(dataset, out, config, executor=dask_executor, batch_size=3)
    return out, report


def test_store_matches_the_librosa_reference(dask_run, dataset, config):
    out, report = dask_run
    arrays, attrs = read_all(out)
    logmels, stats = reference(dataset, config)
    paths = arrays["path"].tolist()
    assert paths == sorted([rel for rel, *_ in GOOD_FILES] + BROKEN_FILES)
    # One clip per file that decoded, in file order, each from its file's start.
    np.testing.assert_array_equal(arrays["file_index"], np.flatnonzero(arrays["decoded"]))
    assert not arrays["start"].any() and not arrays["start_sample"].any()
    assert attrs["status"] == "complete"
    for name in ("mean", "extrema"):
        np.testing.assert_allclose(
            [attrs["stats"][name]["min"], attrs["stats"][name]["max"]], stats[name], rtol=1e-5
        )
    assert attrs["stats"]["used"] == "mean"
    lo, hi = attrs["stats"]["mean"]["min"], attrs["stats"]["mean"]["max"]
    for rel, logmel in logmels.items():
        file = paths.index(rel)
        assert arrays["decoded"][file] and arrays["error"][file] == ""
        assert arrays["n_clips"][file] == 1
        row = arrays["first_clip"][file]
        np.testing.assert_allclose(arrays["clip_min"][row], logmel.min(), rtol=1e-5)
        np.testing.assert_allclose(arrays["clip_max"][row], logmel.max(), rtol=1e-5)
        expected = reference_image(logmel, lo, hi)
        # float32 rounding may move a value across a .5 boundary; nothing else may differ.
        difference = np.abs(arrays["images"][row].astype(int) - expected)
        assert difference.max() <= 1 and (difference > 0).mean() < 1e-3, rel
    assert report.counts.decoded == report.counts.clips == len(GOOD_FILES)


def test_broken_files_keep_their_reasons_and_give_no_clip(dask_run):
    out, report = dask_run
    arrays, attrs = read_all(out)
    paths = arrays["path"].tolist()
    reasons = {rel: arrays["error"][paths.index(rel)] for rel in BROKEN_FILES}
    truncated = reasons.pop("bad/truncated.wav")
    assert reasons == {
        "bad/empty.wav": "LibsndfileError: Format not recognised",
        "bad/header_only.wav": "EmptyAudioError: the file holds no samples",
        "bad/not_audio.wav": "LibsndfileError: Format not recognised",
        "bad/nan.wav": "NonFiniteAudioError: the file holds NaN or infinite samples",
    }
    assert truncated.startswith("TruncatedAudioError: the header declares")
    for rel in BROKEN_FILES:
        file = paths.index(rel)
        assert not arrays["decoded"][file] and arrays["n_clips"][file] == 0
        assert file not in arrays["file_index"]
    assert attrs["counts"] == {"files": 15, "decoded": 10, "failed": 5, "clips": 10}
    assert [f.path for f in report.failures] == sorted(BROKEN_FILES)


@pytest.mark.parametrize(
    ("executor", "batch_size"), [("loop", 15), ("loop", 1), ("cluster", 4), ("cluster", 64)]
)
def test_contents_do_not_depend_on_workers_or_batch_size(
    dask_run, dataset, config, dask_executor, tmp_path, executor, batch_size
):
    out = tmp_path / "again.zarr"
    runner = dask_executor if executor == "cluster" else SYNC
    preprocess(dataset, out, config, executor=runner, batch_size=batch_size)
    assert_same_arrays(out, dask_run[0])


def test_same_batch_size_writes_identical_bytes_on_disk(dask_run, dataset, config, tmp_path):
    out = tmp_path / "sync.zarr"
    preprocess(dataset, out, config, executor=SYNC, batch_size=3)
    chunk_files = sorted(
        p.relative_to(out)
        for p in out.rglob("*")
        if p.parent != out and p.is_file() and p.name != "zarr.json"
    )
    assert chunk_files
    for rel in chunk_files:
        assert (out / rel).read_bytes() == (dask_run[0] / rel).read_bytes(), rel


def test_no_write_is_lost_with_many_small_chunks(dataset, config, dask_executor, tmp_path):
    """Two workers, one clip per chunk: every row must hold its own image, none the fill."""
    out = tmp_path / "small.zarr"
    preprocess(dataset, out, config, executor=dask_executor, batch_size=1)
    reference_run = tmp_path / "reference.zarr"
    preprocess(dataset, reference_run, config, executor=SYNC, batch_size=15)
    assert_same_arrays(out, reference_run)
    arrays, _ = read_all(out)
    assert (arrays["file_index"] >= 0).all()  # no row left at the fill value
    assert (arrays["images"] != 255).any(axis=(1, 2)).all()


def test_a_file_name_that_is_not_utf8_does_not_stop_the_run(tmp_path, config, rng):
    source = write_dataset(tmp_path / "in", rng, broken=False)
    odd = os.fsencode(source / "a") + b"/caf\xe9.wav"
    (source / "a" / "tone_16k.wav").rename(os.fsdecode(odd))
    out = tmp_path / "out.zarr"
    report = preprocess(source, out, config, executor=SYNC)
    assert report.counts.decoded == len(GOOD_FILES)
    assert "a/caf\\xe9.wav" in zarr.open_group(out, mode="r")["path"][:].tolist()
    # A broken file with such a name is reported in the same readable form.
    Path(os.fsdecode(odd)).write_bytes(b"not audio")
    report = preprocess(source, out, config, executor=SYNC, overwrite=True)
    assert [f.path for f in report.failures] == ["a/caf\\xe9.wav"]


def test_extrema_statistics_never_clip(dataset, config, tmp_path):
    report = preprocess(dataset, tmp_path / "x.zarr", config, executor=SYNC, stats="extrema")
    _, attrs = read_all(tmp_path / "x.zarr")
    assert attrs["stats"]["used"] == report.stats.used == "extrema"
    assert attrs["stats"]["clipped_fraction"] == 0.0
    images = zarr.open_group(tmp_path / "x.zarr")["images"][:]
    assert images.min() == 0 and images.max() == 255  # the range is used fully


def test_mean_statistics_clip_and_say_how_much(dask_run):
    _, attrs = read_all(dask_run[0])
    assert 0 < attrs["stats"]["clipped_fraction"] < 0.5


def test_stats_from_scales_a_split_like_its_training_split(dask_run, config, tmp_path, rng):
    validation = write_dataset(tmp_path / "validation", rng, broken=False)
    out = tmp_path / "validation.zarr"
    report = preprocess(validation, out, config, executor=SYNC, stats_from=dask_run[0])
    _, train_attrs = read_all(dask_run[0])
    arrays, attrs = read_all(out)
    assert attrs["stats"]["mean"] == train_attrs["stats"]["mean"]
    assert attrs["stats"]["extrema"] == train_attrs["stats"]["extrema"]
    assert attrs["stats"]["from"] == str(dask_run[0])
    assert report.stats.used == "mean"
    # Its own extrema differ, and the images were scaled with the training statistics.
    lo, hi = train_attrs["stats"]["mean"]["min"], train_attrs["stats"]["mean"]["max"]
    row = 0
    logmel = librosa_clip_log_mel(validation / arrays["path"][arrays["file_index"][row]], config)
    expected = reference_image(logmel, lo, hi)
    assert np.abs(arrays["images"][row].astype(int) - expected).max() <= 1


def test_stats_from_refuses_another_analysis(dask_run, dataset, tmp_path):
    other = SpectrogramConfig.from_options(n_mels=32)
    with pytest.raises(ConfigError, match="n_mels"):
        preprocess(dataset, tmp_path / "x.zarr", other, executor=SYNC, stats_from=dask_run[0])


def test_stats_from_refuses_an_unfinished_store(dataset, config, tmp_path):
    unfinished = tmp_path / "unfinished.zarr"
    with pytest.raises(Interrupted):
        preprocess(dataset, unfinished, config, executor=SYNC, progress=interrupt_images_after(1))
    with pytest.raises(StoreError, match="unfinished"):
        preprocess(dataset, tmp_path / "x.zarr", config, executor=SYNC, stats_from=unfinished)


def test_a_run_that_fails_leaves_an_unfinished_store(tmp_path, config):
    source = tmp_path / "all_bad"
    source.mkdir()
    (source / "x.wav").write_text("not audio")
    out = tmp_path / "out.zarr"
    with pytest.raises(StatisticsError, match=r"No file could be decoded.*marked failed"):
        preprocess(source, out, config, executor=SYNC)
    with pytest.raises(StoreError, match="failed: No file could be decoded"):
        open_store(out)
    assert not (out / "scratch").exists()
    with pytest.raises(StoreError, match="this same run, which failed"):
        preprocess(source, out, config, executor=SYNC)


def test_errors_before_any_work(dask_run, dataset, config, tmp_path):
    with pytest.raises(StoreError, match="already exists"):
        preprocess(dataset, dask_run[0], config, executor=SYNC)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="No audio files"):
        preprocess(tmp_path / "empty", tmp_path / "x.zarr", config, executor=SYNC)
    assert not (tmp_path / "x.zarr").exists()


@pytest.mark.parametrize("scratch", [True, False])
def test_an_unfinished_run_is_resumed_from_the_batches_it_wrote(dataset, config, tmp_path, scratch):
    out, reference_run = tmp_path / "resumed.zarr", tmp_path / "reference.zarr"
    preprocess(dataset, reference_run, config, executor=SYNC, batch_size=4)
    with pytest.raises(Interrupted):
        preprocess(
            dataset,
            out,
            config,
            executor=SYNC,
            batch_size=4,
            scratch=scratch,
            progress=interrupt_images_after(2),
        )
    with pytest.raises(StoreError, match="unfinished"):
        open_store(out)
    assert (out / "clipped" / "c" / "1").exists() and not (out / "clipped" / "c" / "2").exists()
    kept = (out / "images" / "c" / "1" / "0" / "0").stat()

    report = preprocess(dataset, out, config, executor=SYNC, batch_size=4, scratch=scratch)
    assert (report.counts.files, report.counts.decoded, report.counts.clips) == (15, 10, 10)
    assert "statistics" not in report.seconds  # pass 1 was not run again
    assert (out / "images" / "c" / "1" / "0" / "0").stat().st_mtime_ns == kept.st_mtime_ns
    assert not any((out / a.name).exists() for a in RUN_STATE)
    assert_same_arrays(out, reference_run)
    assert [f.path for f in report.failures] == sorted(BROKEN_FILES)


def test_scratch_and_recompute_write_the_same_bytes(dataset, config, tmp_path):
    kept, again = tmp_path / "scratch.zarr", tmp_path / "recompute.zarr"
    preprocess(dataset, kept, config, executor=SYNC, batch_size=4, scratch=True)
    preprocess(dataset, again, config, executor=SYNC, batch_size=4, scratch=False)
    files = sorted(p.relative_to(kept) for p in kept.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert not any(p.parts[0] in {a.name for a in RUN_STATE} for p in files)
    for rel in files:
        # The root metadata records times and the plan, the lock file its owner.
        if rel.as_posix() not in ("zarr.json", "melpipe.lock"):
            assert (kept / rel).read_bytes() == (again / rel).read_bytes(), rel


class Pickling(LoopExecutor):
    """Plain loops that pickle each task's item first, as a Dask client does, and keep the
    pickles of the passes' items."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def map_reduce(self, fn, items, context, kind, bar):
        passes = (SurveyItem, AnalysisItem, RecountItem, ImagesItem)
        self.sent += [pickle.dumps(item) for item in items if isinstance(item, passes)]
        return super().map_reduce(fn, items, context, kind, bar)


@pytest.mark.parametrize(("scratch", "segments"), [(True, "first"), (False, "first"),
                                                  (True, "all")])  # fmt: skip
def test_tasks_read_their_files_paths_from_the_store_not_their_arguments(
    dataset, config, tmp_path, scratch, segments
):
    # What travels to the scheduler with each task holds no path, at any scale: a task
    # reads its files' paths from the run's listing in the store (without the scratch
    # array, pass 2 decodes the files again, so it reads them too; with --segments all,
    # the survey of headers reads them first).
    config = dataclasses.replace(config, segments=segments)
    executor = Pickling()
    report = preprocess(dataset, tmp_path / "out.zarr", config, executor=executor,
                        batch_size=4, scratch=scratch)  # fmt: skip
    assert report.counts.decoded == len(GOOD_FILES)
    names = [Path(rel).stem.encode() for rel, *_ in GOOD_FILES]
    assert len(executor.sent) >= 2 * report.counts.clips / 4
    assert not [n for n in names if any(n in sent for sent in executor.sent)]
    assert not (tmp_path / "out.zarr" / "listing").exists()  # run state, gone at the end


def test_an_unfinished_store_of_another_run_is_not_resumed(dataset, config, tmp_path):
    out = tmp_path / "other.zarr"
    preprocess(dataset, out, config, executor=SYNC, batch_size=4)
    zarr.open_group(out, mode="r+", use_consolidated=False).attrs["status"] = "incomplete"
    with pytest.raises(StoreError, match=r"differs from this one in batch_size.*`overwrite=True`"):
        preprocess(dataset, out, config, executor=SYNC, batch_size=5)
    report = preprocess(dataset, out, config, executor=SYNC, batch_size=5, overwrite=True)
    assert "statistics" in report.seconds  # started over


def test_a_run_killed_just_before_its_completion_mark_finishes_without_work(
    dataset, config, tmp_path, monkeypatch
):
    from melpipe.store import writer

    out, reference_run = tmp_path / "almost.zarr", tmp_path / "reference.zarr"
    first = preprocess(dataset, reference_run, config, executor=SYNC, batch_size=4)
    finish = writer.finish

    def killed(claim, attrs):
        if attrs.status == "complete":
            raise Interrupted
        finish(claim, attrs)

    monkeypatch.setattr(writer, "finish", killed)
    with pytest.raises(Interrupted):
        preprocess(dataset, out, config, executor=SYNC, batch_size=4)
    monkeypatch.setattr(writer, "finish", finish)
    written = {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*") if p.is_file()}
    again = preprocess(dataset, out, config, executor=SYNC, batch_size=4)
    assert (again.counts.files, again.counts.decoded, again.stats.clipped_fraction) == (
        first.counts.files,
        first.counts.decoded,
        first.stats.clipped_fraction,
    )
    assert {p: p.stat().st_mtime_ns for p in written} == written  # nothing written again
    assert open_store(out).attrs.status == "complete"
    assert_same_arrays(out, reference_run)


def test_a_store_without_its_run_state_is_not_resumed_but_named(dataset, config, tmp_path):
    out = tmp_path / "edited.zarr"
    preprocess(dataset, out, config, executor=SYNC, batch_size=4)
    # A finished store marked unfinished by hand: its run state is gone.
    zarr.open_group(out, mode="r+", use_consolidated=False).attrs["status"] = "incomplete"
    with pytest.raises(StoreError, match=r"lacks 'window_ok'.*Pass `overwrite=True` to start over"):
        preprocess(dataset, out, config, executor=SYNC, batch_size=4)
    report = preprocess(dataset, out, config, executor=SYNC, batch_size=4, overwrite=True)
    assert report.action == "replace" and report.counts.clips == 10
