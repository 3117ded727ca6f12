"""Runs that find duplicates: byte copies and lossless re-encodings found from headers and
the hashes of the few files that could be the same, dropped exactly, compared across an
append; and runs that read of each file no more than their clips need."""

from __future__ import annotations

import functools
import hashlib
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import zarr

from melpipe.analysis.config import SpectrogramConfig
from melpipe.read.reader import open_store
from melpipe.run.executors import LoopExecutor
from melpipe.run.runner import preprocess
from tests.helpers import assert_stats_match, long_and_short, reference_md5, run_cli, tones

CONFIG = SpectrogramConfig.from_options(n_mels=32, hop_length=256, duration=0.5)


def recording(folder: Path) -> dict[str, object]:
    """One recording as a WAV, a FLAC, an AIFF and a byte copy of the WAV; the same samples
    at another rate; another recording of the same length and format; and two files no
    other file shares a size or a length with (an OGG, a longer WAV)."""
    rng = np.random.default_rng(5)
    folder.mkdir(parents=True, exist_ok=True)
    y = np.clip(0.3 * rng.standard_normal(44100) * 32768, -32768, 32767).astype(np.int16)
    sf.write(folder / "a.wav", y, 44100, subtype="PCM_16")
    sf.write(folder / "b.flac", y, 44100, subtype="PCM_16")
    sf.write(folder / "c.aiff", y, 44100, subtype="PCM_16")
    shutil.copy(folder / "a.wav", folder / "d.wav")
    sf.write(folder / "e.wav", y, 22050, subtype="PCM_16")
    sf.write(folder / "f.wav", y[::-1].copy(), 44100, subtype="PCM_16")
    sf.write(folder / "g.ogg", y[:30000].astype(np.float32) / 32768, 44100)
    sf.write(folder / "h.wav", np.tile(y, 2), 44100, subtype="PCM_16")
    return {"md5": reference_md5(y.astype(np.int64)[:, None], 16),
            "reversed": reference_md5(y[::-1].astype(np.int64)[:, None], 16)}  # fmt: skip


def test_a_run_finds_copies_and_lossless_re_encodings_and_reads_only_the_candidates(tmp_path):
    folder = tmp_path / "in"
    expected = recording(folder)
    report = preprocess(folder, tmp_path / "s.zarr", CONFIG, executor=LoopExecutor())
    assert report.duplicates == (("a.wav", "b.flac", "c.aiff", "d.wav"),)
    store = open_store(tmp_path / "s.zarr")
    names = store.file_paths.tolist()
    assert names == ["a.wav", "b.flac", "c.aiff", "d.wav", "e.wav", "f.wav", "g.ogg", "h.wav"]
    assert store.array("duplicate_of").tolist() == [-1, 0, 0, 0, -1, -1, -1, -1]
    # Bytes hashed only where another file has the size and the same first window: the
    # WAV and its copy (the other rate and the other recording are as long, but their
    # first windows differ).
    sizes = [(folder / n).stat().st_size for n in names]
    assert store.array("size").tolist() == sizes
    assert sizes[0] == sizes[3] == sizes[4] == sizes[5]
    digests = [hashlib.sha256((folder / n).read_bytes()).hexdigest() if n in ("a.wav", "d.wav")
               else "" for n in names]  # fmt: skip
    assert store.array("bytes_sha256").tolist() == digests
    # Samples hashed where another file has the format, rate, channels, length and first
    # window, and a FLAC's known from its header anyway: never the other rate's, the other
    # recording's, nor those of the OGG and the longer WAV.
    md5 = expected["md5"]
    assert store.array("pcm_md5").tolist() == [md5] * 4 + [""] * 4
    assert store.array("pcm_format").tolist() == ["s16le"] * 6 + ["", "s16le"]
    assert store.array("frames").tolist() == [44100] * 6 + [30000, 88200]
    # The longer WAV begins with the recording: its first window, and probe, are the
    # WAV's; its length keeps it apart.
    probes = store.array("probe").tolist()
    assert len(set(probes[:4])) == 1 and probes[7] == probes[0] and len(set(probes)) == 4


def test_files_of_one_length_are_read_whole_only_where_their_first_windows_agree(tmp_path):
    """Clips of one length and format (a dataset cut to one second) all share a size and
    a shape: only the copy and its original are hashed, not the others."""
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(12):
        y = (0.3 * rng.standard_normal(16000) * 32767).astype(np.int16)
        sf.write(folder / f"clip{i:02d}.wav", y, 16000, subtype="PCM_16")
    shutil.copy(folder / "clip03.wav", folder / "copy.wav")
    report = preprocess(folder, tmp_path / "s.zarr", CONFIG, executor=LoopExecutor())
    assert report.duplicates == (("clip03.wav", "copy.wav"),)
    store = open_store(tmp_path / "s.zarr")
    read = [name for name, digest in zip(store.file_paths, store.array("bytes_sha256"),
                                         strict=True) if digest]  # fmt: skip
    assert read == ["clip03.wav", "copy.wav"]
    assert [bool(m) for m in store.array("pcm_md5")] == [n in read for n in store.file_paths]


def test_dropped_duplicates_leave_the_statistics_and_images_of_the_files_kept(tmp_path):
    folder = tmp_path / "in"
    recording(folder)
    kept = tmp_path / "kept"
    kept.mkdir()
    for name in ("a.wav", "e.wav", "f.wav", "g.ogg", "h.wav"):
        shutil.copy(folder / name, kept / name)
    dropped = preprocess(folder, tmp_path / "d.zarr", CONFIG, executor=LoopExecutor(),
                         duplicates="drop", batch_size=3)  # fmt: skip
    alone = preprocess(kept, tmp_path / "k.zarr", CONFIG, executor=LoopExecutor(), batch_size=3)
    assert dropped.counts.clips == alone.counts.clips == 5
    assert open_store(tmp_path / "d.zarr").array("n_clips").tolist() == [1, 0, 0, 0, 1, 1, 1, 1]
    left, right = (zarr.open_group(tmp_path / n, mode="r") for n in ("d.zarr", "k.zarr"))
    assert_stats_match(left.attrs["stats"], right.attrs["stats"])
    np.testing.assert_array_equal(left["images"][:], right["images"][:])


def test_an_append_reads_a_stored_file_from_its_input_to_compare_it(tmp_path, caplog):
    folder = tmp_path / "in"
    recording(folder)
    out = tmp_path / "s.zarr"
    first = tmp_path / "first"
    first.mkdir()
    shutil.copy(folder / "h.wav", first / "h.wav")  # alone in its run: never hashed
    shutil.copy(folder / "g.ogg", first / "g.ogg")
    preprocess(first, out, CONFIG, executor=LoopExecutor())
    assert open_store(out).array("pcm_md5").tolist() == ["", ""]
    later = tmp_path / "later"
    later.mkdir()
    y = sf.read(folder / "h.wav", dtype="int16")[0]
    sf.write(later / "h-again.flac", y, 44100, subtype="PCM_16")
    added = preprocess(later, out, append=True, executor=LoopExecutor())
    assert added.duplicates == (("h.wav", "h-again.flac"),)
    assert open_store(out).array("duplicate_of").tolist() == [-1, -1, 1]
    # A stored file that can no longer be read is not compared, and the run says so.
    (first / "g.ogg").unlink()
    again = tmp_path / "again"
    again.mkdir()
    shutil.copy(folder / "g.ogg", again / "g-copy.ogg")
    with caplog.at_level(logging.WARNING, logger="melpipe"):
        added = preprocess(again, out, append=True, executor=LoopExecutor())
    assert added.duplicates == ()
    assert "1 files could not be read whole" in caplog.text and "g.ogg" in caplog.text


def test_scan_lists_the_duplicates_and_what_it_read(tmp_path):
    folder = tmp_path / "in"
    recording(folder)
    out = run_cli("scan", folder, "--duplicates").stdout
    assert "3 files repeat the bytes or PCM samples of an earlier one, in 1 groups" in out
    assert "a.wav = b.flac = c.aiff = d.wav" in out
    read = sum((folder / n).stat().st_size for n in ("a.wav", "c.aiff", "d.wav", "e.wav",
                                                     "f.wav"))  # fmt: skip
    assert f"8 headers read; 5 files that share a size or a length with another read whole, " \
           f"{read / 1e6:.1f} MB" in out  # fmt: skip


def test_a_split_keeps_every_duplicate_group_on_one_side(tmp_path):
    folder = tmp_path / "in"
    tones(folder, 30, seed=4)
    for i in range(0, 30, 3):  # ten files stored twice, under another name and container
        y, rate = sf.read(folder / f"t{i:02d}.wav", dtype="int16")
        sf.write(folder / f"copy{i:02d}.flac", y, rate, subtype="PCM_16")
    out = tmp_path / "s.zarr"
    preprocess(folder, out, CONFIG, executor=LoopExecutor())
    reader = open_store(out)
    group = np.where(reader.array("duplicate_of") < 0, np.arange(40), reader.array("duplicate_of"))
    assert len(set(group.tolist())) == 30
    for seed in range(20):
        train, val = reader.split_by_file(0.3, seed=seed)
        assert not set(group[reader.file_index[train]]) & set(group[reader.file_index[val]])
        assert len(train) + len(val) == len(reader) and len(val)
    # Appending files never moves one that was there from its side.
    before = reader.split_by_file(0.3, seed=1)[1]
    tones(tmp_path / "later", 10, seed=11, prefix="z")
    preprocess(tmp_path / "later", out, append=True, executor=LoopExecutor())
    after = open_store(out).split_by_file(0.3, seed=1)[1]
    assert set(before.tolist()) == set(after.tolist()) & set(range(len(reader)))


def bytes_read() -> int:
    """Bytes this process has read through read(2) and its kin so far (Linux's rchar):
    from the page cache too, so it counts what was asked for, not what the disk gave."""
    line = next(x for x in Path("/proc/self/io").read_text().splitlines() if x.startswith("rchar"))
    return int(line.split()[1])


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> dict[str, tuple[Path, int]]:
    """Two long recordings and the same two cut short (:func:`long_and_short`)."""
    return long_and_short(tmp_path_factory.mktemp("recordings"))


def read_by_a_run(folder: Path, tmp_path: Path, **options) -> int:
    """Bytes a run on ``folder`` reads, once this process has imported what a run needs."""
    config = SpectrogramConfig.from_options(n_mels=32, **options)
    run = functools.partial(preprocess, folder, config=config, executor=LoopExecutor(),
                            batch_size=128)  # fmt: skip
    run(tmp_path / "first.zarr")
    before = bytes_read()
    run(tmp_path / "s.zarr")
    return bytes_read() - before


def test_a_default_run_reads_no_further_into_a_file_than_its_clip(recordings, tmp_path):
    long, short = (read_by_a_run(recordings[n][0], tmp_path / n) for n in ("long", "short"))
    # A minute or three seconds: the same clips, the same reads (the decoders' buffers aside).
    assert abs(long - short) < 64 * 1024, (long, short)


@pytest.mark.parametrize("peak", [None, 0.95])
def test_with_every_window_a_run_reads_each_file_once(recordings, tmp_path, peak):
    """Whether or not each file's peak is measured, for peak_normalize: in one reading.
    Twice would be 2; what is read beside the audio is pass 1's log-mels (7%), the
    resampler's warm-up at each span (3%) and the store's metadata."""
    folder, size = recordings["long"]
    read = read_by_a_run(folder, tmp_path, segments="all", peak_normalize=peak)
    assert 0.95 * size <= read <= 1.3 * size, (read, size)
