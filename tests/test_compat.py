"""Format 4 changed the layout (clips and files as two dimensions), not the contents of
``--segments first``, today's default: stores written by the last commit of format 3 and
by this code hold the same images, extrema, statistics and failures, value for value."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import zarr

from tests.helpers import specpipe

PREVIOUS = "70ed724"  # the last commit that wrote format version 3
REPO = Path(__file__).resolve().parent.parent
CASES = {
    "defaults": ["--batch-size", "4"],
    "extrema-recomputed": ["--n-mels", "40", "--frames", "64", "--stats", "extrema",
                           "--no-scratch", "--batch-size", "3"],
    "speech": ["--sample-rate", "16000", "--hop-length", "160", "--n-fft", "400", "--n-mels",
               "80", "--fmin", "20", "--fmax", "7600", "--duration", "0.75"],
}  # fmt: skip


@pytest.fixture(scope="module")
def previous(tmp_path_factory) -> Path:
    """The package as it was at PREVIOUS, unpacked from git, to run beside this one."""
    known = subprocess.run(
        ["git", "-C", REPO, "cat-file", "-e", f"{PREVIOUS}^{{commit}}"], capture_output=True
    )
    if known.returncode:
        pytest.skip(f"commit {PREVIOUS} is not in this clone (a shallow clone?)")
    archive = subprocess.run(
        ["git", "-C", REPO, "archive", "--format=tar", PREVIOUS, "pipeline"],
        capture_output=True,
        check=True,
    ).stdout
    folder = tmp_path_factory.mktemp("previous")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


@pytest.mark.parametrize("case", CASES)
def test_contents_equal_those_the_previous_format_wrote(previous, dataset, tmp_path, case):
    old, new = tmp_path / "old.zarr", tmp_path / "new.zarr"
    command = ["preprocess", dataset, old, "--scheduler", "sync", *CASES[case]]
    env = {**os.environ, "PYTHONPATH": str(previous)}
    subprocess.run(
        # In that folder: "-m" puts the working directory first on the import path.
        [sys.executable, "-m", "pipeline", *map(str, command)], env=env, cwd=previous,
        check=True, capture_output=True, timeout=240,
    )  # fmt: skip
    specpipe("preprocess", dataset, new, "--scheduler", "sync", *CASES[case])
    before, after = zarr.open_group(old, mode="r"), zarr.open_group(new, mode="r")
    assert before.attrs["format_version"] == 3 and after.attrs["format_version"] == 5
    # Format 3 kept a row (all 255) for each failed file; formats 4 and 5 keep clips only.
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
        np.testing.assert_array_equal(after[new_name][:], before[name][:][rows], err_msg=name)
    np.testing.assert_array_equal(after["file_index"][:], np.flatnonzero(valid))
    for name in ("mean", "extrema"):
        assert after.attrs["stats"][name] == before.attrs["stats"][name]
    assert after.attrs["stats"]["clipped_fraction"] == before.attrs["stats"]["clipped_fraction"]
    segments = {"segments", "segment_hop", "tail", "max_clips_per_file", "select", "min_level_db"}
    assert {k: v for k, v in after.attrs["config"].items() if k not in segments} == dict(
        before.attrs["config"]
    )
