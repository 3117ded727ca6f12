"""Format 3 changed the attributes, never the contents: stores written by the last
commit of format 2 and by this code hold the same arrays, value for value."""

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

from tests.helpers import ARRAYS, specpipe

PREVIOUS = "3c57d66"  # the last commit that wrote format version 2
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
    assert before.attrs["format_version"] == 2 and after.attrs["format_version"] == 3
    for name in (*ARRAYS, "mel", "frame"):
        np.testing.assert_array_equal(after[name][:], before[name][:], err_msg=name)
    for name in ("mean", "extrema"):
        assert after.attrs["stats"][name] == before.attrs["stats"][name]
    assert after.attrs["stats"]["clipped_fraction"] == before.attrs["stats"]["clipped_fraction"]
    assert after.attrs["config"] == before.attrs["config"]
