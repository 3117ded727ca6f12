"""Runs whose files a manifest names (``--files-from``): the same store as a walk that
finds the same files, and a line that names no file is a failure of that file, listed and
stored as every other."""

import json
import random

import numpy as np

from melpipe.read.reader import open_store
from melpipe.run.runner import preprocess
from melpipe.sources.discover import list_audio_files
from tests.helpers import assert_same_bytes, run_cli


def test_a_manifest_of_every_file_writes_what_a_walk_writes(dataset, config, loop, tmp_path):
    files = list(list_audio_files(dataset).files)
    random.Random(3).shuffle(files)  # the store's order is the paths', not the list's
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("".join(json.dumps({"path": f, "duration": 1.0}) + "\n" for f in files))
    walked, listed = tmp_path / "walked.zarr", tmp_path / "listed.zarr"
    preprocess(dataset, walked, config, executor=loop, batch_size=4)
    report = preprocess(dataset, listed, config, files_from=manifest, executor=loop, batch_size=4)
    assert report.counts.files == len(files)
    assert_same_bytes(listed, walked)


def test_a_line_that_names_no_file_is_a_failure_listed_and_stored(dataset, tmp_path):
    manifest = tmp_path / "list.txt"
    manifest.write_text("a/tone_16k.wav\nmissing/gone.wav\nb/chirp_22k.wav\n")
    out = tmp_path / "listed.zarr"
    result = run_cli("preprocess", dataset, out, "--files-from", manifest, "--n-mels", "32",
                     "--scheduler", "sync")  # fmt: skip
    assert "from 3 files: 2 decoded, 1 failed" in result.stdout
    assert "missing/gone.wav: FileNotFoundError: [Errno 2] No such file or directory" in (
        result.stdout
    )
    store = open_store(out)
    assert store.file_paths.tolist() == ["a/tone_16k.wav", "b/chirp_22k.wav", "missing/gone.wav"]
    assert store.decoded.tolist() == [True, True, False]
    assert store.file_errors[2].startswith("FileNotFoundError")
    assert len(store) == 2 and np.all(store.array("file_index") < 2)


def test_a_manifest_outside_input_refuses_the_run_in_one_line(dataset, tmp_path):
    manifest = tmp_path / "list.txt"
    manifest.write_text("a/tone_16k.wav\n/etc/passwd\n")
    result = run_cli("preprocess", dataset, tmp_path / "out.zarr", "--files-from", manifest,
                     check=False)  # fmt: skip
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Line 2 of the manifest" in lines[0], result.stderr
    assert "'/etc/passwd', which is not under INPUT" in lines[0]
    assert not (tmp_path / "out.zarr").exists()
