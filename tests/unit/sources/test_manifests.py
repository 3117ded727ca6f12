"""Manifests (``--files-from``): each form a dataset comes with gives the files it names,
relative to INPUT, in store order; a manifest that cannot be used is one line naming it."""

import bz2
import gzip
import json

import pytest

from melpipe.errors import InputError
from melpipe.sources.manifests import manifest_kind, read_manifest

NAMES = ["b/two.wav", "a/one.flac", "c/three.mp3"]


@pytest.fixture
def root(tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    return folder


@pytest.mark.parametrize(
    ("name", "kind"),
    [("list.txt", "text"), ("files", "text"), ("train.jsonl", "jsonl"), ("m.JSON", "jsonl"),
     ("recordings.jsonl.gz", "jsonl"), ("meta.csv.bz2", "csv"), ("meta.tsv", "tsv")],
)  # fmt: skip
def test_the_form_is_the_name_s(name, kind):
    assert manifest_kind(name) == kind


def test_a_text_list_gives_its_paths_sorted_once_each(tmp_path, root):
    manifest = tmp_path / "list.txt"
    manifest.write_text("b/two.wav\n\n./a/one.flac\r\nc//three.mp3\nb/two.wav\n")
    listing = read_manifest(manifest, root)
    assert tuple(listing.files) == tuple(sorted(NAMES)) and listing.root == str(root)
    assert listing.skipped == ()


def test_absolute_paths_inside_input_are_made_relative(tmp_path, root):
    manifest = tmp_path / "list.txt"
    manifest.write_text("".join(f"{root / n}\n" for n in NAMES))
    assert tuple(read_manifest(manifest, root).files) == tuple(sorted(NAMES))


def test_a_name_with_spaces_or_any_extension_is_kept_as_given(tmp_path, root):
    manifest = tmp_path / "list.txt"
    manifest.write_text(" leading space.wav\nnotes.txt\n")
    assert tuple(read_manifest(manifest, root).files) == (" leading space.wav", "notes.txt")


def test_json_lines_of_audiocraft_nemo_and_lhotse(tmp_path, root):
    entries = [
        {"path": "b/two.wav", "duration": 1.0},  # AudioCraft
        {"audio_filepath": str(root / "a" / "one.flac"), "text": "hi"},  # NeMo, absolute
        {"id": "r3", "sources": [{"type": "file", "channels": [0], "source": "c/three.mp3"}],
         "sampling_rate": 16000, "num_samples": 16000, "duration": 1.0},  # lhotse
    ]  # fmt: skip
    manifest = tmp_path / "recordings.jsonl.gz"
    with gzip.open(manifest, "wt") as f:
        f.write("".join(json.dumps(e) + "\n" for e in entries))
    assert tuple(read_manifest(manifest, root).files) == tuple(sorted(NAMES))


@pytest.mark.parametrize(("suffix", "sep"), [(".csv", ","), (".tsv", "\t")])
def test_a_table_s_path_column(tmp_path, root, suffix, sep):
    manifest = tmp_path / f"meta{suffix}.bz2"
    rows = ["speaker" + sep + "audio_filepath"] + [f"s{i}{sep}{n}" for i, n in enumerate(NAMES)]
    manifest.write_bytes(bz2.compress(("\n".join(rows) + "\n").encode()))
    assert tuple(read_manifest(manifest, root).files) == tuple(sorted(NAMES))


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("list.txt", "a.wav\n../b.wav\n", r"Line 2 of the manifest .* names '\.\./b\.wav', "
         r"which is not a file under INPUT: give paths relative to INPUT"),
        ("list.txt", "/elsewhere/b.wav\n", r"Line 1 .* not under INPUT"),
        ("list.txt", "\n\n", r"names no file\.$"),
        ("m.jsonl", '{"path": "a.wav"}\n{"file": "b.wav"}\n',
         r"Line 2 of the manifest .* names no file: give it one of path, audio_filepath"),
        ("m.jsonl", '{"path": "a.wav"}\nnot json\n', r"Line 2 of the manifest .* is not JSON"),
        ("m.csv", "name,size\na.wav,3\n", r"has no column named path or audio_filepath"),
        ("m.csv", "path,size\n,3\n", r"Line 2 of the manifest .* names no file\."),
        ("list.txt", b"\xff\xfe\n", r"Cannot read the manifest .*UnicodeDecodeError"),
    ],
)  # fmt: skip
def test_a_manifest_that_cannot_be_used_is_refused_naming_the_line(
    tmp_path, root, name, text, message
):
    manifest = tmp_path / name
    manifest.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(InputError, match=message) as raised:
        read_manifest(manifest, root)
    assert "\n" not in str(raised.value)


def test_a_missing_manifest_or_input_is_one_line(tmp_path, root):
    with pytest.raises(InputError, match=r"The manifest '.*nowhere\.txt' does not exist\."):
        read_manifest(tmp_path / "nowhere.txt", root)
    manifest = tmp_path / "list.txt"
    manifest.write_text("a.wav\n")
    with pytest.raises(InputError, match=r"Input '.*absent' is not a folder"):
        read_manifest(manifest, tmp_path / "absent")
