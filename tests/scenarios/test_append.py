"""Datasets that grow: appends scaled with a store's frozen statistics, on real stores,
killed at several points and run again. (Duplicates, which appends look for too, are in
tests/scenarios/test_duplicate_runs.py.)"""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from numcodecs import Zstd

from melpipe.analysis.config import SpectrogramConfig
from melpipe.analysis.stats import SCALES
from melpipe.read.reader import open_store
from melpipe.run.executors import LoopExecutor
from melpipe.run.runner import preprocess
from melpipe.store import lock, opened, writer
from tests.helpers import (
    Interrupted,
    assert_one_line_error,
    interrupt_images_after,
    run_cli,
    tones,
)

CONFIG = SpectrogramConfig.from_options(n_mels=32, hop_length=256, duration=0.5)
CLIP_ARRAYS = ("images", "clipped", "file_index", "start_sample", "clip_min", "clip_max")
FILE_ARRAYS = ("path", "decoded", "n_clips", "size", "pcm_md5", "bytes_sha256")


def run(input_dir: Path, output: Path, **options) -> object:
    options.setdefault("executor", LoopExecutor())
    return preprocess(input_dir, output, None if options.get("append") else CONFIG, **options)


def everything(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """What a reader sees: every array of the layout, and the attributes."""
    reader = open_store(path)
    names = (*CLIP_ARRAYS[2:], *FILE_ARRAYS, "source", "duplicate_of", "first_clip")
    arrays = {name: reader.array(name) for name in names}
    arrays["images"] = reader[np.arange(len(reader))]
    arrays["histogram"] = reader.histogram().counts
    return arrays, opened.ReadableStore(path).attrs.to_dict()


def assert_same_arrays(a: tuple[dict, dict], b: tuple[dict, dict]) -> None:
    for name in a[0]:
        np.testing.assert_array_equal(a[0][name], b[0][name], err_msg=name)


def assert_same(a: tuple[dict, dict], b: tuple[dict, dict]) -> None:
    """The same arrays and attributes: the same store, to a reader."""
    assert_same_arrays(a, b)
    assert a[1] == b[1]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("grow")
    return {
        "first": tones(root / "first", 6, seed=1),
        "few": tones(root / "few", 3, seed=2, prefix="f"),
        "more": tones(root / "more", 14, seed=3, prefix="m"),
    }


# Each statistic with more files than the store had; a few files with the default one.
@pytest.mark.parametrize(("stats", "new"), [*((s, "more") for s in SCALES), ("mean", "few")])
def test_an_append_adds_clips_scaled_with_the_store_statistics_unchanged(
    folders, tmp_path, stats, new
):
    # 6 clips in chunks of 4: the append rewrites the short second chunk whole.
    out, frozen = tmp_path / "s.zarr", tmp_path / "frozen.zarr"
    run(folders["first"], out, stats=stats, batch_size=4)
    shutil.copytree(out, frozen)
    before, _ = everything(out)
    report = run(folders[new], out, append=True)
    reference = tmp_path / "reference.zarr"
    run(folders[new], reference, stats_from=frozen, batch_size=4)

    grown, ref = open_store(out), open_store(reference)
    n_old, n_new = 6, len(ref)
    assert len(grown) == n_old + n_new and report.counts.clips == n_old + n_new
    np.testing.assert_array_equal(grown[np.arange(n_old)], before["images"])
    np.testing.assert_array_equal(grown[np.arange(n_old, n_old + n_new)], ref[np.arange(n_new)])
    np.testing.assert_array_equal(grown.array("clipped")[n_old:], ref.array("clipped"))
    np.testing.assert_array_equal(grown.file_index[n_old:], ref.file_index + 6)
    np.testing.assert_array_equal(grown.array("first_clip")[6:], ref.array("first_clip") + n_old)
    assert grown.file_paths[6:].tolist() == ref.file_paths.tolist()
    assert grown.attrs.stats.values == open_store(frozen).attrs.stats.values
    source = grown.attrs.sources[1]
    assert (source.action, source.first_file, source.files, source.first_clip, source.clips) == (
        "append", 6, len(ref.file_paths), n_old, n_new)  # fmt: skip
    assert source.clipped_low + source.clipped_high == int(ref.array("clipped").sum())
    assert source.own == ref.attrs.sources[0].own
    # The histogram grew by the new clips' own.
    np.testing.assert_array_equal(grown.histogram().counts,
                                  before["histogram"] + ref.histogram().counts)  # fmt: skip
    assert zarr.open_array(str(out / "images"), mode="r").chunks[0] == 4


def test_the_statistics_of_a_grown_store_are_those_of_one_run_over_all_its_files(folders, tmp_path):
    both = tmp_path / "both"
    shutil.copytree(folders["first"], both)
    for f in folders["more"].iterdir():
        shutil.copy(f, both)
    out, whole = tmp_path / "s.zarr", tmp_path / "whole.zarr"
    run(folders["first"], out, batch_size=4)
    run(folders["more"], out, append=True)
    run(both, whole, batch_size=4)
    grown, expected = open_store(out).attrs.grown, open_store(whole).attrs.stats.values
    for name in ("mean", "extrema", "percentile", "top_db"):
        assert getattr(grown, name) == getattr(expected, name), name
    np.testing.assert_allclose(grown.pixels.band_mean, expected.pixels.band_mean, rtol=1e-12)
    np.testing.assert_allclose(grown.pixels.band_std, expected.pixels.band_std, rtol=1e-9)
    assert grown.pixels.count == expected.pixels.count
    info = run_cli("info", out).stdout
    assert "1 append" in info and "Statistics of every clip now" in info


def killed_after(monkeypatch, module, name):
    """Make ``module.name`` stop the process's run right after it did its work."""
    original = getattr(module, name)

    def stop(*args, **kwargs):
        original(*args, **kwargs)
        raise Interrupted

    monkeypatch.setattr(module, name, stop)


@pytest.mark.parametrize("point", ["begin", "grown", "rows", "images", "commit"])
def test_an_append_killed_leaves_the_store_as_it_was_and_runs_again_to_the_same_store(
    folders, tmp_path, monkeypatch, point
):
    out, clean = tmp_path / "s.zarr", tmp_path / "clean.zarr"
    run(folders["first"], out, batch_size=4)
    shutil.copytree(out, clean)
    run(folders["more"], clean, append=True)
    before = everything(out)
    progress = interrupt_images_after(2) if point == "images" else None
    names = {"begin": "begin_append", "grown": "grow", "rows": "write_rows",
             "commit": "put_attrs"}  # fmt: skip
    if point in names:
        killed_after(monkeypatch, writer, names[point])
    with pytest.raises(Interrupted):
        run(folders["more"], out, append=True, **({"progress": progress} if progress else {}))
    monkeypatch.undo()
    if point == "commit":  # the new contents, whole: there is nothing left to do
        assert_same_arrays(everything(out), everything(clean))
        assert run(folders["more"], out, append=True).added is None
        return
    assert_same(everything(out), before)  # what a reader sees: the store as it was
    run(folders["more"], out, append=True)
    assert_same_arrays(everything(out), everything(clean))


def test_an_append_killed_by_a_signal_is_run_again_by_the_same_command(folders, tmp_path):
    from tests.helpers import start_and_wait_for

    out, clean = tmp_path / "s.zarr", tmp_path / "clean.zarr"
    run(folders["first"], out, batch_size=1)
    shutil.copytree(out, clean)
    run(folders["more"], clean, append=True)
    before = everything(out)
    argv = [sys.executable, "-m", "melpipe", "preprocess", folders["more"], out, "--append",
            "--scheduler", "sync"]  # fmt: skip
    process, _ = start_and_wait_for(list(map(str, argv)), "pass 2/2")
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert_same(everything(out), before)
    run_cli(*argv[3:])
    assert_same_arrays(everything(out), everything(clean))


def test_a_reader_open_during_an_append_sees_the_old_contents(folders, tmp_path):
    out = tmp_path / "s.zarr"
    run(folders["first"], out, batch_size=4)
    reader = open_store(out)
    old = reader[np.arange(len(reader))].copy()
    seen = []

    class Bar:  # reads the store through the old reader and a new one at every batch
        def update(self, n=1):
            seen.append(np.array_equal(reader[np.arange(len(reader))], old))
            during = open_store(out)
            seen.append(len(during) == len(old) and np.array_equal(during[:], old))

        def close(self):
            pass

    run(folders["more"], out, append=True, progress=lambda d, t: Bar())
    assert seen and all(seen)
    assert len(reader) == len(old) and np.array_equal(reader[np.arange(len(old))], old)
    assert len(open_store(out)) == len(old) + 14


def test_an_append_takes_every_option_from_the_store_and_refuses_others(folders, tmp_path):
    out = tmp_path / "s.zarr"
    run(folders["first"], out, batch_size=4)
    base = ["preprocess", folders["more"], out, "--append", "--scheduler", "sync"]
    for extra, fragment in [
        (["--n-mels", "64"], "n_mels"),
        (["--stats", "extrema"], "--stats"),
        (["--top-db", "60"], "top_db"),
        (["--batch-size", "8"], "--batch-size"),
        (["--stats-from", out], "--stats-from"),
    ]:
        result = run_cli(*base, *extra, check=False)
        assert_one_line_error(result, fragment)
    assert_one_line_error(run_cli(*base, "--overwrite", check=False), "--append or --overwrite")
    assert len(open_store(out)) == 6
    ok = run_cli(*base, "--n-mels", "32", "--duration", "0.5")  # the store's own values
    assert "Appended 14 clips from 14 files" in ok.stdout
    missing = run_cli("preprocess", folders["more"], tmp_path / "none.zarr", "--append",
                      check=False)  # fmt: skip
    assert_one_line_error(missing, "no store at", "without --append")
    assert not (tmp_path / "none.zarr").exists()


def test_an_append_owns_the_store_and_refuses_while_another_run_holds_it(folders, tmp_path):
    out = tmp_path / "s.zarr"
    run(folders["first"], out, batch_size=4)
    with lock.hold(str(out), lock.Owner.new("someone"), create=False):
        result = run_cli("preprocess", folders["more"], out, "--append", "--scheduler", "sync",
                         check=False)  # fmt: skip
    assert_one_line_error(result, "someone")
    assert len(open_store(out)) == 6


def test_files_of_the_same_input_already_in_the_store_are_skipped(folders, tmp_path):
    folder = tmp_path / "growing"
    shutil.copytree(folders["first"], folder)
    out = tmp_path / "s.zarr"
    run(folder, out, batch_size=4)
    again = run_cli("preprocess", folder, out, "--append", "--scheduler", "sync")
    assert "Nothing to append" in again.stdout
    tones(folder, 2, seed=9, prefix="new")
    report = run(folder, out, append=True)
    assert (report.added.files, report.skipped_existing) == (2, 6)
    reader = open_store(out)
    assert sorted(reader.file_paths.tolist()) == sorted(p.name for p in folder.iterdir())
    assert reader.attrs.sources[1].skipped == 6


@pytest.mark.cluster
def test_an_append_on_a_dask_cluster_gives_the_bits_of_plain_loops(folders, tmp_path,
                                                                  dask_executor):  # fmt: skip
    loops, cluster = tmp_path / "loops.zarr", tmp_path / "cluster.zarr"
    run(folders["first"], loops, batch_size=4)
    shutil.copytree(loops, cluster)
    run(folders["more"], loops, append=True)
    run(folders["more"], cluster, append=True, executor=dask_executor)
    assert_same_arrays(everything(loops), everything(cluster))


def test_an_append_adds_objects_and_changes_none_a_reader_reads(folders, tmp_path):
    """Before the commit, every stored object a reader of the old store reads is as it
    was (the rewritten last chunk holds the same old rows, a new histogram row is an
    object of its own)."""
    out = tmp_path / "s.zarr"
    run(folders["first"], out, batch_size=4)
    chunk = out / "images" / "c" / "1" / "0" / "0"
    old = np.frombuffer(Zstd().decode(chunk.read_bytes()), np.uint8)
    run(folders["few"], out, append=True)
    new = np.frombuffer(Zstd().decode(chunk.read_bytes()), np.uint8)
    pixels = CONFIG.n_bands * CONFIG.n_frames
    np.testing.assert_array_equal(new[: 2 * pixels], old[: 2 * pixels])  # rows 4 and 5
    assert (out / "histogram" / "c" / "1" / "0").exists()
