"""Inputs and stores made to mislead, by accident or by a neighbour: damaged statistics,
chunks of the wrong size or cut short, headers that lie, metadata that claims absurd
sizes, and links where melpipe writes. Each is refused in one line naming the thing, and
nothing is allocated, written or followed on its word."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf

from melpipe.errors import StoreError
from melpipe.read.reader import open_store
from tests.helpers import assert_one_line_error, copy_of, edit_attrs, run_cli


@pytest.mark.parametrize(
    ("change", "stats", "expected"),
    [
        (lambda s: s["mean"].update(min=math.nan), "mean", "records 'mean' statistics that "
         "cannot have scaled its images (min=nan"),
        (lambda s: s["extrema"].update(min=5.0, max=-5.0), "extrema", "records 'extrema' "
         "statistics that give no usable range (min=5.0, max=-5.0): they are damaged"),
    ],
    ids=["nan-in-the-used", "min-above-max-in-another"],
)  # fmt: skip
def test_stats_from_a_store_with_damaged_statistics_is_refused_naming_it(
    finished_store, dataset, tmp_path, change, stats, expected
):
    source = copy_of(finished_store, tmp_path, "source.zarr")
    edit_attrs(source, lambda a: change(a["stats"]))
    out = tmp_path / "out.zarr"
    result = run_cli("preprocess", dataset, out, "--scheduler", "sync", "--n-mels", 64,
                     "--stats-from", source, "--stats", stats, check=False)  # fmt: skip
    assert_one_line_error(result, str(source), expected)
    assert not out.exists()  # refused while planning: nothing made, no pass run


@pytest.fixture(scope="module")
def two_stores(dataset, tmp_path_factory):
    """Stores of the same files with 64 and with 128 mel bands."""
    folder = tmp_path_factory.mktemp("two")
    for n_mels in (64, 128):
        run_cli("preprocess", dataset, folder / f"m{n_mels}.zarr", "--scheduler", "sync",
                "--n-mels", n_mels, "--batch-size", 4)  # fmt: skip
    return folder / "m64.zarr", folder / "m128.zarr"


def test_an_image_chunk_of_another_store_is_refused_not_read(two_stores, tmp_path):
    small, large = two_stores
    target = copy_of(large, tmp_path)
    chunk = target / "images" / "c" / "1" / "0" / "0"
    chunk.write_bytes((small / "images" / "c" / "1" / "0" / "0").read_bytes())
    store = open_store(target)
    with pytest.raises(StoreError, match=r"chunk 1 of 'images' holds \d+ bytes, where a chunk "
                       r"of 4 images of 128 x 87 holds \d+: it was altered"):  # fmt: skip
        store[:]
    assert store[:4].shape == (4, 128, 87)  # the other chunks still read
    result = run_cli("export-png", target, tmp_path / "png", check=False)
    assert_one_line_error(result, str(target), "chunk 1 of 'images'")


@pytest.mark.parametrize(("name", "key"), [("images", "c/0/0/0"), ("start", "c/0")])
def test_a_chunk_cut_short_is_the_stores_one_line_error(two_stores, tmp_path, name, key):
    target = copy_of(two_stores[1], tmp_path)
    chunk = target / name / key
    data = chunk.read_bytes()
    chunk.write_bytes(data[: len(data) // 2])
    if name == "images":
        with pytest.raises(StoreError, match=r"chunk 0 of 'images' does not decode"):
            open_store(target)[0]
    result = run_cli("export-png", target, tmp_path / "png", "--indices", "0", check=False)
    assert_one_line_error(result, str(target), f"of {name!r} does not decode", "is damaged")
    assert "internal error" not in result.stderr


# --- Links where melpipe writes ---------------------------------------------------------


def planted(tmp_path):
    """Someone's file, and what it holds before anyone writes through a link to it."""
    notes = tmp_path / "notes.txt"
    notes.write_text("a neighbour's notes\n")
    return notes


@pytest.mark.parametrize("lock", ["melpipe.lock", "specpipe.lock"])
def test_a_link_in_place_of_the_lock_file_is_refused_and_never_written(dataset, tmp_path, lock):
    notes = planted(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / lock).symlink_to(notes)
    result = run_cli("preprocess", dataset, out, "--scheduler", "sync", "--overwrite",
                     check=False)  # fmt: skip
    assert_one_line_error(result, f"'{lock}' in it is a link")
    assert notes.read_text() == "a neighbour's notes\n"
    from melpipe.store.lock import _open_lock_file

    with pytest.raises(StoreError, match="is a link: melpipe never writes through one"):
        _open_lock_file(str(out / lock))  # and if it appeared after the run looked
    assert notes.read_text() == "a neighbour's notes\n"


def test_an_output_folder_of_another_user_or_open_to_all_is_refused(dataset, tmp_path):
    import os

    out = tmp_path / "open"
    out.mkdir()
    out.chmod(0o777)
    result = run_cli("preprocess", dataset, out, "--scheduler", "sync", check=False)
    assert_one_line_error(result, "can be written by anyone", "chmod o-w")
    assert list(out.iterdir()) == []
    if os.geteuid() == 0:  # only root can make a folder another user's
        theirs = tmp_path / "theirs"
        theirs.mkdir()
        os.chown(theirs, 65534, 65534)
        result = run_cli("preprocess", dataset, theirs, "--scheduler", "sync", check=False)
        assert_one_line_error(result, "belongs to another user (uid 65534)")
        assert list(theirs.iterdir()) == []


def test_no_export_writes_through_a_link(finished_store, tmp_path):
    notes = planted(tmp_path)
    reader = open_store(finished_store)
    pictures = tmp_path / "png"
    (pictures / reader.label(0)).parent.mkdir(parents=True)
    inside = planted(pictures)  # a file in the folder too: followed, the name would stay in
    for target in (notes, inside):
        (pictures / f"{reader.label(0)}.png").unlink(missing_ok=True)
        (pictures / f"{reader.label(0)}.png").symlink_to(target)
        result = run_cli("export-png", finished_store, pictures, "--indices", "0", check=False)
        assert_one_line_error(result, ".png' is a link: melpipe never writes through one")
    assert inside.read_text() == "a neighbour's notes\n"
    audio = tmp_path / "clip.wav"
    audio.symlink_to(notes)
    result = run_cli("invert", finished_store, "--index", 0, "-o", audio, check=False)
    assert_one_line_error(result, "clip.wav' is a link")
    figure = tmp_path / "preview.png"
    figure.symlink_to(notes)
    result = run_cli("preview", finished_store, "-o", figure, check=False)
    assert_one_line_error(result, "preview.png' is a link")
    demo = tmp_path / "demo"
    (demo / "broken").mkdir(parents=True)
    (demo / "broken" / "empty.flac").symlink_to(notes)
    result = run_cli("demo", demo, "--count", 2, check=False)
    assert_one_line_error(result, "empty.flac' is a link")
    assert notes.read_text() == "a neighbour's notes\n"


def test_a_link_among_a_stores_arrays_is_never_followed_nor_removed(
    finished_store, dataset, tmp_path
):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "data.bin").write_bytes(b"theirs")
    out = copy_of(finished_store, tmp_path, "out.zarr")
    (out / "scratch").symlink_to(theirs)  # where a run keeps pass 1's log-mels
    result = run_cli("preprocess", dataset, out, "--scheduler", "sync", "--n-mels", 64,
                     "--overwrite", check=False)  # fmt: skip
    assert_one_line_error(result, "'scratch' in it is a link", "refusing to replace it")
    assert (theirs / "data.bin").read_bytes() == b"theirs" and (out / "scratch").is_symlink()


# --- Headers that lie --------------------------------------------------------------------


def lying_flac(path, rng) -> None:
    """One second of noise in a FLAC whose STREAMINFO claims 2**36 - 1 frames (18 days)."""
    sf.write(path, (rng.standard_normal(22050) * 0.1).astype(np.float32), 22050)
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC"  # STREAMINFO's rate, channels, depth and 36-bit count
    fields = int.from_bytes(data[18:26], "big") | (2**36 - 1)
    data[18:26] = fields.to_bytes(8, "big")
    path.write_bytes(bytes(data))


def test_a_header_that_claims_more_than_the_file_holds_lays_out_no_window(tmp_path, rng):
    audio = tmp_path / "audio"
    audio.mkdir()
    lying_flac(audio / "liar.flac", rng)
    sf.write(audio / "good.wav", (rng.standard_normal(44100) * 0.1).astype(np.float32), 22050)
    assert sf.info(audio / "liar.flac").frames == 2**36 - 1
    scan = run_cli("scan", audio, "--segments", "all", timeout=60)
    assert "liar.flac: TruncatedAudioError: the header declares 68719476735 frames, but the " \
           "file does not hold the last of them" in scan.stdout  # fmt: skip
    assert "2 clips, holding 2.0 s of the 2.0 s of audio" in scan.stdout
    run = run_cli("preprocess", audio, tmp_path / "out.zarr", "--scheduler", "sync",
                  "--segments", "all", timeout=120)  # fmt: skip
    assert "2 audio files, 2 windows to analyse" in run.stderr
    assert "from 2 files: 1 decoded, 1 failed" in run.stdout


# --- Metadata that claims absurd sizes ------------------------------------------------------


def within_one_gigabyte(*args: object):
    """The command line run with 1 GiB of address space, and a minute: a store's check may
    cost what it stores, never what its metadata claims (a plain run needs 0.2 GB)."""
    import resource
    import subprocess
    import sys

    limit = 1 << 30
    return subprocess.run(
        [sys.executable, "-m", "melpipe", *map(str, args)], capture_output=True, text=True,
        timeout=60, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)),
    )  # fmt: skip


def edit_array_shapes(store, names, rows):
    """Claim ``rows`` rows for arrays ``names``, in their metadata and the consolidated copy."""
    import json

    root = json.loads((store / "zarr.json").read_text())
    for name in names:
        metadata = json.loads((store / name / "zarr.json").read_text())
        metadata["shape"][0] = rows
        (store / name / "zarr.json").write_text(json.dumps(metadata))
        root["consolidated_metadata"]["metadata"][name]["shape"][0] = rows
    (store / "zarr.json").write_text(json.dumps(root))


def test_a_config_claiming_absurd_sizes_is_refused_before_anything_is_computed(
    finished_store, tmp_path
):
    store = copy_of(finished_store, tmp_path)
    edit_attrs(store, lambda a: a["config"].update(n_mels=10**8, n_fft=2**30))
    result = within_one_gigabyte("info", store)
    assert_one_line_error(result, str(store), "Expected --n-fft <= 65536. Got 1073741824")


def test_arrays_claiming_2_to_the_44_rows_are_refused_in_what_they_store(finished_store, tmp_path):
    from melpipe.store.schema import ARRAYS

    store = copy_of(finished_store, tmp_path)
    edit_array_shapes(store, [a.name for a in ARRAYS if a.rows == "clip"], 2**44)
    for command in (["info", store], ["preview", store, "-o", tmp_path / "p.png"]):
        result = within_one_gigabyte(*command)
        assert_one_line_error(result, str(store), "17592186044416", "was altered")


def test_finding_missing_chunks_costs_what_is_stored_not_what_is_claimed(tmp_path):
    import zarr

    from melpipe.store.opened import _stored_chunks, missing_chunks

    array = zarr.create_array(tmp_path / "a.zarr", shape=(2**44, 3), chunks=(4, 3),
                              dtype="uint8", fill_value=0)  # fmt: skip
    array[0:4] = 1
    array[8:12] = 2
    url = str(tmp_path / "a.zarr")
    assert _stored_chunks(url, array) == {0, 2}
    assert missing_chunks(url, array) == (2**42 - 2, [1, 3, 4])


# --- Input that changes during a run ---------------------------------------------------------


@pytest.mark.parametrize("same_stamp", [False, True], ids=["rewritten", "same-size-and-time"])
def test_a_file_replaced_between_the_passes_stops_the_run(
    dataset, tmp_path, rng, dask_executor, same_stamp
):
    import os
    import shutil

    from melpipe.analysis.config import SpectrogramConfig
    from melpipe.run.runner import preprocess

    audio = tmp_path / "audio"
    shutil.copytree(dataset, audio)
    victim = audio / "c" / "quiet_22k.wav"
    before = os.stat(victim)

    def replace_at_pass_2(description, total):
        if description.startswith("pass 2"):  # pass 1's statistics are recorded by now
            data, rate = sf.read(victim, dtype="float32")
            other = rng.standard_normal(data.shape).astype(np.float32) * 0.1
            sf.write(victim, other if same_stamp else np.tile(other, 2), rate,
                     subtype=sf.info(victim).subtype)  # fmt: skip
            if same_stamp:  # the same bytes' count and time: only the samples tell
                os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))
                assert os.stat(victim).st_size == before.st_size
        return NoBar()

    out = tmp_path / "out.zarr"
    config = SpectrogramConfig.from_options(n_mels=64)
    with pytest.raises(StoreError, match=r"'c/quiet_22k.wav' changed after pass 1 read it"):
        preprocess(audio, out, config, executor=dask_executor, scratch=False, batch_size=4,
                   progress=replace_at_pass_2)  # fmt: skip
    with pytest.raises(StoreError, match="unfinished"):
        open_store(out)  # never marked complete


class NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass
