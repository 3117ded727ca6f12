import pytest

from pipeline.discover import list_audio_files
from pipeline.errors import InputError


def test_lists_audio_recursively_sorted_with_slashes(dataset):
    paths = list_audio_files(dataset)
    assert paths == sorted(paths)
    assert "a/sub/noise_48k.flac" in paths
    assert "d/Upper_case.WAV" in paths  # extensions match in any case
    assert "a/notes.txt" not in paths
    assert not any(p.startswith(".") or "/." in p for p in paths)
    assert "bad/not_audio.wav" in paths  # an audio name that will fail to decode is listed


def test_order_does_not_depend_on_creation_order(tmp_path):
    for name in ["b.wav", "a/z.wav", "a.wav", "A.wav"]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert list_audio_files(tmp_path) == ["A.wav", "a.wav", "a/z.wav", "b.wav"]


def test_no_audio_is_an_error(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(InputError, match="No audio files"):
        list_audio_files(tmp_path)


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(InputError, match="not a folder"):
        list_audio_files(tmp_path / "missing")
