"""The command line as a user meets it: real processes, real exit codes, real messages."""

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from melpipe.cli.app import main
from tests.helpers import run_cli, write_dataset


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fmax", "20000"], "Nyquist"),
        (["--n-mels", "400"], "more than the 257 frequency bins of --n-fft 512"),
        (["--n-mels", "200"], "too large for --n-fft 512"),
        (["--duration", "0"], "positive --duration"),
        (["--duration", "-2"], "positive --duration"),
        (["--batch-size", "0"], "positive --batch-size"),
        (["--stats-from", "nowhere.zarr"], "No Zarr store"),
        (["--workers", "0"], "positive number of --workers"),
        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "cannot apply to --scheduler"),
    ],
)
def test_invalid_parameters_fail_before_any_work(dataset, tmp_path, args, message):
    out = tmp_path / "never.zarr"
    result = CliRunner().invoke(main, ["preprocess", str(dataset), str(out), *args])
    assert result.exit_code != 0
    assert message in result.output
    assert not out.exists()


def test_existing_output_needs_overwrite(dataset, tmp_path):
    out = tmp_path / "out.zarr"
    run_cli("preprocess", dataset, out, "--scheduler", "sync")
    first = zarr.open_group(out, mode="r")["images"][:]
    result = run_cli("preprocess", dataset, out, "--scheduler", "sync", check=False)
    assert result.returncode == 1
    assert "already exists. Pass --overwrite" in result.stderr
    run_cli("preprocess", dataset, out, "--scheduler", "sync", "--overwrite", "--n-mels", 32)
    assert zarr.open_group(out, mode="r")["images"].shape[1] == 32 != first.shape[1]


def test_no_audio_is_a_clear_error(tmp_path):
    (tmp_path / "in").mkdir()
    result = run_cli("preprocess", tmp_path / "in", tmp_path / "out.zarr", check=False)
    assert result.returncode == 1
    assert "No audio files under" in result.stderr


def test_scan_reports_the_dataset(dataset):
    result = run_cli("scan", dataset)
    out = result.stdout
    # Headers only: NaN samples are found by preprocess, not by scan.
    assert "15 audio files" in out and "11 readable, 4 unreadable" in out
    for expected in (
        "WAV / PCM_16",
        "FLAC / PCM_24",
        "OGG / VORBIS",
        "44100",
        "8000",
        "16-bit",
        "compressed",
        "p50=",
    ):
        assert expected in out
    assert "bad/not_audio.wav: LibsndfileError: Format not recognised" in out
    assert "bad/header_only.wav: EmptyAudioError" in out
    assert "bad/truncated.wav: TruncatedAudioError" in out


def test_demo_then_preprocess(tmp_path):
    run_cli("demo", tmp_path / "demo", "--count", 12)
    result = run_cli("preprocess", tmp_path / "demo", tmp_path / "demo.zarr", "--scheduler", "sync")
    assert "Wrote 12 clips" in result.stdout and "14 files: 12 decoded, 2 failed" in result.stdout
    images = zarr.open_group(tmp_path / "demo.zarr", mode="r")["images"][:]
    assert len(np.unique(images)) > 100


def test_skipped_folders_are_reported_by_the_run_and_kept_in_the_store(tmp_path, rng):
    source = write_dataset(tmp_path / "in", rng, broken=False)
    (source / "a" / "back").symlink_to(source)  # a link that would loop forever
    out = tmp_path / "out.zarr"
    result = run_cli("preprocess", source, out, "--scheduler", "sync", "--n-mels", 64)
    reason = "a link to the input folder itself, which is listed already"
    assert f"Skipped folder a/back: {reason}" in result.stdout
    assert f"Skipped folder a/back: {reason}" in run_cli("info", out).stdout
    assert f"a/back: {reason}" in run_cli("scan", source).stdout
