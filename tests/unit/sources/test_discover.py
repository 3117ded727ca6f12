"""Which files a run sees, in which order, and every folder it could not list, said so."""

import hashlib
import os
import shutil
import stat

import pytest

from melpipe.errors import InputError
from melpipe.sources.discover import Listing, list_audio_files
from melpipe.sources.sorted_paths import PathsOnDisk
from tests.helpers import as_nobody, world_readable_folder


def test_lists_audio_recursively_sorted_with_slashes(dataset):
    paths = list_audio_files(dataset).files
    assert list(paths) == sorted(paths)
    assert "a/sub/noise_48k.flac" in paths
    assert "d/Upper_case.WAV" in paths  # extensions match in any case
    assert "a/notes.txt" not in paths
    assert not any(p.startswith(".") or "/." in p for p in paths)
    assert "bad/not_audio.wav" in paths  # an audio name that will fail to decode is listed


def test_order_does_not_depend_on_creation_order(tmp_path):
    for name in ["b.wav", "a/z.wav", "a.wav", "A.wav"]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert tuple(list_audio_files(tmp_path).files) == ("A.wav", "a.wav", "a/z.wav", "b.wav")


def test_no_audio_is_an_error(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(InputError, match="No audio files"):
        list_audio_files(tmp_path)


def test_missing_folder_and_a_file_are_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        list_audio_files(tmp_path / "missing")
    (tmp_path / "x.wav").write_bytes(b"x")
    with pytest.raises(InputError, match="not a folder"):
        list_audio_files(tmp_path / "x.wav")


def test_links_to_folders_are_followed_and_loops_reported(tmp_path):
    outside = tmp_path / "elsewhere"
    (outside / "deep").mkdir(parents=True)
    (outside / "deep" / "far.wav").write_bytes(b"x")
    root = tmp_path / "in"
    (root / "real").mkdir(parents=True)
    (root / "real" / "r.wav").write_bytes(b"x")
    (root / "linked").symlink_to(outside)  # a dataset kept on another disk
    (root / "real" / "loop").symlink_to(root)  # a link back up: would never end
    (root / "again").symlink_to(root / "real")  # the same folder under a second name
    listing = list_audio_files(root)
    assert tuple(listing.files) == ("linked/deep/far.wav", "real/r.wav")
    skipped = {s.path: s.reason for s in listing.skipped}
    assert skipped == {
        "again": "a link to real, which is listed already",
        "real/loop": "a link to the input folder itself, which is listed already",
    }


def test_an_unreadable_folder_is_reported_with_its_errno():
    root = world_readable_folder()
    try:
        (root / "ok").mkdir()
        (root / "ok" / "a.wav").write_bytes(b"x")
        (root / "locked").mkdir()
        (root / "locked" / "b.wav").write_bytes(b"x")
        (root / "locked").chmod(0)
        files, skipped = as_nobody(_listed, str(root))
    finally:
        (root / "locked").chmod(0o755)
        shutil.rmtree(root)
    assert files == ("ok/a.wav",)
    assert [(s.path, s.reason) for s in skipped] == [
        ("locked", "cannot be read: [Errno 13] Permission denied")
    ]


def _listed(root):
    """A listing as it can travel between processes (its files are on disk, in this one)."""
    listing = list_audio_files(root)
    return tuple(listing.files), listing.skipped


def test_a_fifo_with_an_audio_name_is_listed_to_fail_later(tmp_path):
    os.mkfifo(tmp_path / "pipe.wav")
    (tmp_path / "dev.wav").symlink_to("/dev/null")
    listing = list_audio_files(tmp_path)
    assert tuple(listing.files) == ("dev.wav", "pipe.wav")
    assert stat.S_ISFIFO(os.stat(tmp_path / "pipe.wav").st_mode)


@pytest.mark.parametrize("n", [0, 1, 65536, 65537, 140000])
def test_the_fingerprint_is_the_digest_of_the_paths_joined(n):
    # Hashed in parts (so that the listing is never held twice); the plain reference is
    # the digest of every path joined by newlines, which stores record.
    files = tuple(f"{i % 7}/clip \udcff{i}.wav" for i in range(n))
    joined = "\n".join(files).encode("utf-8", "surrogateescape")
    assert Listing("root", files).sha256() == hashlib.sha256(joined).hexdigest()
    on_disk = Listing("root", PathsOnDisk.of(files))  # as a walk gives them
    assert on_disk.sha256() == hashlib.sha256(joined).hexdigest()
