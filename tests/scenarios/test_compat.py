"""Later formats changed the layout, the names and the analysis's precision, not what a
user gets.

Each earlier version runs from git beside this one, on the same input and options. Since
melpipe 0.3.0 (still format 6) sums the power and the mel product in float32 in another
order, values derived from log-mels agree to float32 rounding, as they do with librosa:
images within one level and at least 99.9% of pixels equal, statistics within 1e-5
relative (tests/helpers.py, ``assert_arrays_match`` and ``assert_stats_match``);
everything else is equal.

- format 5, the last written under the former name (specpipe, import package
  ``pipeline``), for ``--segments first`` and ``--segments all`` alike;
- format 3, before clips and files were two dimensions: images, extrema, statistics and
  failures for ``--segments first``.
"""

from __future__ import annotations

import fcntl
import io
import json
import math
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import zarr

from melpipe.analysis.features import ANALYSIS
from melpipe.run.clusters import ONE_BLAS_THREAD
from melpipe.store.schema import ARRAYS, FORMAT, FORMAT_VERSION, ROW_CHUNK
from tests.helpers import (
    REPO,
    assert_arrays_match,
    assert_one_line_error,
    assert_stats_match,
    run_cli,
)

FORMAT_3 = "70ed724"  # the last commit that wrote format version 3
FORMAT_5 = "7a697a0"  # the last commit that wrote format version 5, as specpipe
CASES = {
    "defaults": ["--batch-size", "4"],
    "extrema-recomputed": ["--n-mels", "40", "--frames", "64", "--stats", "extrema",
                           "--no-scratch", "--batch-size", "3"],
    "speech": ["--sample-rate", "16000", "--hop-length", "160", "--n-fft", "400", "--n-mels",
               "80", "--fmin", "20", "--fmax", "7600", "--duration", "0.75"],
}  # fmt: skip
WINDOWED = {
    "loudest-band-moments": ["--segments", "all", "--duration", "0.5", "--max-clips-per-file",
                             "3", "--select", "loudest", "--stats", "band-moments",
                             "--batch-size", "5"],
    "hop-min-level": ["--segments", "all", "--duration", "0.4", "--segment-hop", "0.3",
                      "--min-level-db", "-30", "--tail", "drop", "--stats", "percentile"],
}  # fmt: skip


# New in format 7 (melpipe 0.4, the presets): each file's peak, and the analysis's
# conventions as parameters; a store made with the post's preset holds what these say.
NEW_ARRAYS = {"peak": np.nan}
# New in format 8 (melpipe 0.5, appends and duplicates): each file's source and hashes,
# the histogram one row per source, and the client's arrays in chunks of ROW_CHUNK rows.
# New in format 9 (melpipe 0.6, duplicates without decoding): each file's length in frames,
# size, PCM format, first window's probe and the MD5 of its samples, where read.
FILE_TABLE = {"source", "bytes_sha256", "duplicate_of", "frames", "size", "pcm_format",
              "pcm_md5", "probe"}  # fmt: skip
# A file that fails to decode may have its duration, rate and channels where its header
# gives them (the survey of `--segments all` reads it); format 5 had them only for files
# that decoded.
HEADER_ARRAYS = {"duration", "sample_rate", "channels"}
NEW_CONFIG = {"preset": "post", "spectrum": "mel", "stft_eps": 0.0, "padding": "center",
              "drop_nyquist": False, "log": "add", "peak_normalize": None}  # fmt: skip


def assert_new_config_keys_are_the_posts(after: dict, before: dict) -> None:
    """Every key of the earlier config is there with its value; the new ones hold the
    post's conventions (the window as long as the FFT, as many bands as mels)."""
    assert {k: after[k] for k in before} == dict(before)
    new = {k: after[k] for k in after if k not in before}
    expected = {**NEW_CONFIG, "win_length": before["n_fft"], "n_bands": before["n_mels"]}
    assert new == expected


def unpack(commit: str, folder: Path) -> Path:
    """The package as it was at ``commit``, unpacked from git into ``folder``, with the
    metadata of the distribution it was then (specpipe), which it reads its version from."""
    known = subprocess.run(
        ["git", "-C", REPO, "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True
    )
    if known.returncode:
        pytest.skip(f"commit {commit} is not in this clone (a shallow clone?)")
    archive = subprocess.run(
        ["git", "-C", REPO, "archive", "--format=tar", commit, "pipeline"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    info = folder / "specpipe-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: specpipe\nVersion: 0.1.0\n")
    return folder


def run_previous(folder: Path, *args: object) -> None:
    # BLAS on one thread, as melpipe runs it everywhere: format 3's --scheduler sync used one
    # per core, and OpenBLAS's float32 products differ in their last bits with the thread
    # count (0.3.30 here: 141 of 2 clips' pixels of the speech case).
    env = {**os.environ, **ONE_BLAS_THREAD, "PYTHONPATH": str(folder)}
    subprocess.run(
        # In that folder: "-m" puts the working directory first on the import path.
        [sys.executable, "-m", "pipeline", *map(str, args)], env=env, cwd=folder,
        check=True, capture_output=True, timeout=240,
    )  # fmt: skip


@pytest.fixture(scope="module")
def format_3(tmp_path_factory) -> Path:
    return unpack(FORMAT_3, tmp_path_factory.mktemp("format3"))


@pytest.fixture(scope="module")
def format_5(tmp_path_factory) -> Path:
    return unpack(FORMAT_5, tmp_path_factory.mktemp("format5"))


@pytest.mark.parametrize("case", {**CASES, **WINDOWED})
def test_contents_equal_those_specpipe_wrote_as_format_5(format_5, dataset, tmp_path, case):
    old, new = tmp_path / "old.zarr", tmp_path / "new.zarr"
    options = [*CASES.get(case, WINDOWED.get(case, []))]
    run_previous(format_5, "preprocess", dataset, old, "--scheduler", "sync", *options)
    run_cli("preprocess", dataset, new, "--scheduler", "sync", *options)
    before, after = zarr.open_group(old, mode="r"), zarr.open_group(new, mode="r")
    assert (before.attrs["format"], before.attrs["format_version"]) == ("specpipe", 5)
    assert (after.attrs["format"], after.attrs["format_version"]) == (FORMAT, FORMAT_VERSION)
    for spec in ARRAYS:
        if spec.name in NEW_ARRAYS or spec.name in FILE_TABLE:
            continue
        values = after[spec.name][:]
        expected_values = before[spec.name][:]
        if spec.name == "histogram":  # the run's row: the only source
            assert values.shape[0] == 1
            values = values[0]
        if spec.name in HEADER_ARRAYS:  # the survey reads a failed file's header too
            unknown = ~np.isfinite(expected_values) | (expected_values == 0)
            assert not after["decoded"][:][unknown].any(), spec.name
            values, expected_values = values[~unknown], expected_values[~unknown]
        assert_arrays_match(values, expected_values, spec.name)
        client = not spec.batched and spec.rows in ("clip", "file")
        expected = (ROW_CHUNK,) if client else before[spec.name].chunks
        assert after[spec.name].chunks[-len(expected) :] == expected, spec.name
    assert after["source"][:].tolist() == [0] * after["path"].shape[0]
    assert_new_config_keys_are_the_posts(after.attrs["config"], before.attrs["config"])
    for key in ("counts", "image", "skipped"):
        assert after.attrs[key] == before.attrs[key], key
    stats = json.loads(json.dumps(after.attrs["stats"]))
    # New in format 7: decibels per log unit, of power for the post's features.
    assert stats["pixels"].pop("db_per_unit") == 10 / math.log(10)
    assert_stats_match(stats, before.attrs["stats"])
    plan = dict(after.attrs["plan"])
    assert plan.pop("analysis") == ANALYSIS  # new in 0.3: a run resumes only with the same
    assert plan == dict(before.attrs["plan"])
    assert np.isnan(after["peak"][:]).all()  # measured only with peak_normalize


@pytest.mark.parametrize("case", CASES)
def test_contents_equal_those_the_format_3_wrote(format_3, dataset, tmp_path, case):
    old, new = tmp_path / "old.zarr", tmp_path / "new.zarr"
    run_previous(format_3, "preprocess", dataset, old, "--scheduler", "sync", *CASES[case])
    run_cli("preprocess", dataset, new, "--scheduler", "sync", *CASES[case])
    before, after = zarr.open_group(old, mode="r"), zarr.open_group(new, mode="r")
    assert before.attrs["format_version"] == 3 and after.attrs["format_version"] == FORMAT_VERSION
    # Format 3 kept a row (all 255) for each failed file; formats 4 on keep clips only.
    valid = before["valid"][:]
    same = {
        "images": ("images", valid),
        "file_min": ("clip_min", valid),
        "file_max": ("clip_max", valid),
        "clipped": ("clipped", valid),
        "paths": ("path", slice(None)),
        "valid": ("decoded", slice(None)),
        "errors": ("error", slice(None)),
        "mel": ("mel", slice(None)),
        "frame": ("frame", slice(None)),
    }
    for name, (new_name, rows) in same.items():
        assert_arrays_match(after[new_name][:], before[name][:][rows], new_name)
    np.testing.assert_array_equal(after["file_index"][:], np.flatnonzero(valid))
    for name in ("mean", "extrema", "clipped_fraction"):
        assert_stats_match(after.attrs["stats"][name], before.attrs["stats"][name], name)
    segments = {"segments", "segment_hop", "tail", "max_clips_per_file", "select", "min_level_db"}
    config = {k: v for k, v in after.attrs["config"].items() if k not in segments}
    assert_new_config_keys_are_the_posts(config, before.attrs["config"])


def test_a_store_of_the_former_name_is_refused_in_one_line_saying_what_to_run(
    format_5, dataset, tmp_path
):
    old = tmp_path / "old.zarr"
    run_previous(format_5, "preprocess", dataset, old, "--scheduler", "sync", "--n-mels", "40")
    result = run_cli("info", old, check=False)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "written by specpipe, melpipe's former name (format 5)" in result.stderr
    assert f"preprocess its input, {str(dataset)!r}, to it with --overwrite" in result.stderr
    # It is ours to replace: --overwrite makes it again, lock file of the former name and all,
    # but not while a run of the former name holds that lock.
    refused = run_cli("preprocess", dataset, old, "--scheduler", "sync", check=False)
    assert refused.returncode == 1 and "--overwrite" in refused.stderr
    with open(old / "specpipe.lock") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        busy = run_cli("preprocess", dataset, old, "--scheduler", "sync", "--overwrite",
                       check=False)  # fmt: skip
    assert_one_line_error(busy, "is being written by a run of specpipe")
    assert zarr.open_group(old, mode="r").attrs["format"] == "specpipe"  # left as it was
    run_cli("preprocess", dataset, old, "--scheduler", "sync", "--overwrite")
    assert zarr.open_group(old, mode="r").attrs["format"] == FORMAT
    assert not (old / "specpipe.lock").exists()
