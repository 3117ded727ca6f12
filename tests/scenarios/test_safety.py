"""Nothing lost, nothing silently wrong: each way a careless or unlucky user found to end
with wrong data in a store marked complete, to delete data that was not melpipe's, or to
meet a traceback, tried again as that user did."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import zarr

from melpipe.analysis.segments import Piece
from melpipe.errors import RunLockedError, StatisticsError, StoreError
from melpipe.read.reader import open_store
from melpipe.run.executors import LoopExecutor
from melpipe.run.runner import preprocess
from melpipe.run.tasks import analyse
from melpipe.store.schema import RUN_STATE
from tests.helpers import (
    Interrupted,
    as_nobody,
    assert_one_line_error,
    assert_same_arrays,
    interrupt_images_after,
    read_all,
    run_cli,
    world_readable_folder,
    write_dataset,
)


class Paused:
    """A progress callback that holds a run in its images pass until released."""

    def __init__(self) -> None:
        self.reached, self.release = threading.Event(), threading.Event()

    def __call__(self, description: str, total: int):
        pause = self

        class Bar:
            def update(self, n: int = 1) -> None:
                if "images" in description and not pause.reached.is_set():
                    pause.reached.set()
                    assert pause.release.wait(120)

            def close(self) -> None:
                pass

        return Bar()


def run_paused(dataset, out, config):
    """A run started in a thread and held half-way; returns (thread, pause, outcome)."""
    pause, outcome = Paused(), {}

    def run() -> None:
        try:
            outcome["report"] = preprocess(
                dataset, out, config, executor=LoopExecutor(), batch_size=4, progress=pause
            )
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    assert pause.reached.wait(120)
    return thread, pause, outcome


# 1. Two runs on one OUTPUT at once -----------------------------------------------------


@pytest.mark.parametrize("options", [[], ["--n-mels", "32"]], ids=["same", "other-parameters"])
def test_a_second_run_on_a_store_being_written_is_refused(dataset, config, tmp_path, options):
    out = tmp_path / "out.zarr"
    thread, pause, outcome = run_paused(dataset, out, config)
    try:
        second = run_cli(
            "preprocess", dataset, out, "--scheduler", "sync", "--batch-size", 4,
            "--n-mels", 64, *options, "--overwrite", check=False,
        )  # fmt: skip
    finally:
        pause.release.set()
        thread.join()
    assert_one_line_error(
        second, f"{str(out)!r} is being written by run ", f"(pid {os.getpid()} on"
    )
    assert "error" not in outcome, outcome.get("error")
    reference = tmp_path / "reference.zarr"
    preprocess(dataset, reference, config, executor=LoopExecutor(), batch_size=4)
    assert_same_arrays(out, reference)  # the first run's store, whole and right


class AppearsMeanwhile(LoopExecutor):
    """Plain loops, except that someone makes a folder at OUTPUT while the run gets ready."""

    def __init__(self, output: Path) -> None:
        self.output = output

    @property
    def resources(self):
        self.output.mkdir()
        (self.output / "notes.txt").write_text("a user's file")
        return super().resources


def test_a_folder_made_at_output_while_the_run_gets_ready_is_left_alone(dataset, config, tmp_path):
    out = tmp_path / "out.zarr"
    with pytest.raises(StoreError, match="appeared while this run was getting ready"):
        preprocess(dataset, out, config, executor=AppearsMeanwhile(out))
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


# 2. Missing scratch chunks --------------------------------------------------------------


def test_a_missing_scratch_chunk_is_an_error_not_an_image(dataset, config, tmp_path):
    out = tmp_path / "out.zarr"
    with pytest.raises(Interrupted):
        preprocess(dataset, out, config, executor=LoopExecutor(), batch_size=4,
                   progress=interrupt_images_after(1))  # fmt: skip
    # Windows 12-15 (the broken files gave windows too), which pass 2 has not read yet.
    (out / "scratch" / "c" / "3" / "0" / "0").unlink()
    with pytest.raises(StoreError, match=r"lacks pass 1's 'scratch' chunk for windows 12-15"):
        preprocess(dataset, out, config, executor=LoopExecutor(), batch_size=4)
    with pytest.raises(StoreError, match="unfinished"):
        open_store(out)


# 3. A float file with huge samples ------------------------------------------------------


def test_a_float_file_whose_log_mel_overflows_fails_with_its_reason(config, tmp_path, rng):
    source = write_dataset(tmp_path / "in", rng, broken=False)
    reference = tmp_path / "reference.zarr"
    preprocess(source, reference, config, executor=LoopExecutor())
    huge = 1e20 * np.sin(np.arange(22050) * 0.05)
    sf.write(source / "zz_huge.wav", huge.astype(np.float32), 22050, subtype="FLOAT")
    out = tmp_path / "out.zarr"
    report = preprocess(source, out, config, executor=LoopExecutor())
    arrays, attrs = read_all(out)
    file = arrays["path"].tolist().index("zz_huge.wav")
    assert not arrays["decoded"][file] and file not in arrays["file_index"]
    assert arrays["error"][file].startswith("NonFiniteFeaturesError: the log-mel is not finite")
    assert "1e+20" in arrays["error"][file]
    assert report.counts.failed == 1
    assert attrs["stats"]["mean"] == read_all(reference)[1]["stats"]["mean"]  # left out


# 4. A FIFO or a device named x.wav ------------------------------------------------------


def test_a_fifo_or_a_device_never_blocks_scan_or_preprocess(tmp_path, rng):
    source = write_dataset(tmp_path / "in", rng, broken=False)
    os.mkfifo(source / "pipe.wav")
    (source / "zero.wav").symlink_to("/dev/zero")
    scan = run_cli("scan", source, timeout=60)
    assert (
        "pipe.wav: NotRegularFileError: it is a FIFO (named pipe), not a regular file"
        in scan.stdout
    )
    assert "zero.wav: NotRegularFileError: it is a character device" in scan.stdout
    out = tmp_path / "out.zarr"
    run = run_cli("preprocess", source, out, "--scheduler", "sync", "--n-mels", 64, timeout=120)
    assert "Wrote 10 clips" in run.stdout and "12 files: 10 decoded, 2 failed" in run.stdout
    assert "pipe.wav: NotRegularFileError" in run.stdout


# 5. Resuming a --stats-from run after its source changed --------------------------------


def test_a_resume_whose_statistics_source_changed_is_refused(dataset, config, tmp_path, rng):
    source, out = tmp_path / "train.zarr", tmp_path / "val.zarr"
    preprocess(dataset, source, config, executor=LoopExecutor())
    with pytest.raises(Interrupted):
        preprocess(dataset, out, config, executor=LoopExecutor(), batch_size=4,
                   stats_from=source, progress=interrupt_images_after(1))  # fmt: skip
    other = write_dataset(tmp_path / "other", rng, broken=False)
    preprocess(other, source, config, executor=LoopExecutor(), overwrite=True)
    with pytest.raises(StoreError, match="differs from this one in stats_from"):
        preprocess(dataset, out, config, executor=LoopExecutor(), batch_size=4, stats_from=source)
    assert read_all(out)[1]["status"] == "incomplete"  # left as it was, for the user to decide


# 6. --overwrite deletes only what melpipe wrote -----------------------------------------


def test_overwrite_never_replaces_a_foreign_zarr_store(dataset, config, tmp_path):
    foreign = tmp_path / "theirs.zarr"
    zarr.open_group(foreign, mode="w").create_array("data", data=np.arange(5))
    with pytest.raises(StoreError, match="a Zarr store that melpipe did not write"):
        preprocess(dataset, foreign, config, executor=LoopExecutor(), overwrite=True)
    np.testing.assert_array_equal(zarr.open_array(foreign / "data")[:], np.arange(5))


@pytest.mark.parametrize("where", ["input", "parent"])
def test_overwrite_never_touches_the_input(config, tmp_path, rng, where):
    source = write_dataset(tmp_path / "data" / "audio", rng, broken=False)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    out = source if where == "input" else source.parent
    result = run_cli("preprocess", source, out, "--overwrite", "--scheduler", "sync", check=False)
    assert_one_line_error(result, "is the input folder or holds it")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_overwrite_validates_everything_before_deleting_anything(dataset, config, tmp_path):
    out = tmp_path / "good.zarr"
    preprocess(dataset, out, config, executor=LoopExecutor())
    before = read_all(out)[0]
    with pytest.raises(StoreError, match="No Zarr store"):
        preprocess(dataset, out, config, executor=LoopExecutor(), overwrite=True,
                   stats_from=tmp_path / "missing.zarr")  # fmt: skip
    (out / "my-notes.txt").write_text("a user's file inside the store")
    with pytest.raises(StoreError, match=r"'my-notes.txt', which melpipe did not write"):
        preprocess(dataset, out, config, executor=LoopExecutor(), overwrite=True)
    after = read_all(out)[0]
    for name, values in before.items():
        np.testing.assert_array_equal(after[name], values)
    open_store(out)  # still whole and complete


# 7. Streaming WAVs ------------------------------------------------------------------------


def test_a_streaming_wav_is_read_whole(tmp_path, config, rng):
    """RIFF and data sizes of 0xFFFFFFFF, as ffmpeg writes them to a pipe."""
    source = tmp_path / "in"
    source.mkdir()
    y = (0.5 * np.sin(np.arange(33075) * 0.07)).astype(np.float32)
    sf.write(source / "piped.wav", y, 22050, subtype="PCM_16")
    data = bytearray((source / "piped.wav").read_bytes())
    at = data.find(b"data")
    data[4:8] = data[at + 4 : at + 8] = (0xFFFFFFFF).to_bytes(4, "little")
    (source / "piped.wav").write_bytes(bytes(data))
    report = preprocess(source, tmp_path / "out.zarr", config, executor=LoopExecutor())
    assert (report.counts.clips, report.counts.failed) == (1, 0)


# 8. Unreadable files keep their errno ------------------------------------------------------


def test_an_unreadable_file_keeps_its_errno_in_the_reason(config):
    root = world_readable_folder()
    try:
        sf.write(root / "locked.wav", np.zeros(100, np.float32), 22050)
        (root / "locked.wav").chmod(0)
        piece = Piece(0, "locked.wav", np.zeros(1, np.int64))
        result = as_nobody(analyse, str(root), [piece], config)
    finally:
        shutil.rmtree(root)
    assert result.windows.files is not None and result.windows.files.file.tolist() == [0]
    assert result.windows.files.error[0] == "PermissionError: [Errno 13] Permission denied"


# 10. Sizes without limits ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--hop-length", "16384", "--frames", "60000"], " GB in a worker, which has "),
        (["--batch-size", "100000", "--frames", "60000"], " GB in a worker, which has "),
        (["--hop-length", "50000000"], "Expected --n-fft <= 65536. Got 100000000"),
        (["--frames", "100000000"], "100000000 frames wide, more than 65536"),
    ],
    ids=["clip", "batch", "hop", "frames"],
)  # fmt: skip
def test_a_setting_too_large_for_the_machine_is_refused_before_any_work(
    dataset, tmp_path, options, message
):
    out = tmp_path / "out.zarr"
    result = run_cli("preprocess", dataset, out, "--scheduler", "sync", *options, check=False)
    assert_one_line_error(result, message)
    assert not out.exists()


# 11. One line, never a traceback ------------------------------------------------------------


@pytest.mark.parametrize(
    "scheduler", ["sync", pytest.param("local", marks=pytest.mark.cluster)], ids=["sync", "local"]
)
def test_disk_full_is_one_line_and_the_store_stays_unfinished(dataset, tmp_path, scheduler):
    if (
        shutil.which("unshare") is None
        or subprocess.run(
            ["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True
        ).returncode
    ):
        pytest.skip("needs user namespaces (unshare) to mount a small tmpfs without root")
    disk = tmp_path / "disk"
    disk.mkdir()
    status = (
        f"import json; print(json.load(open('{disk}/out.zarr/zarr.json'))['attributes']['status'])"
    )
    where = "--scheduler sync" if scheduler == "sync" else "--workers 2"  # tasks in workers
    command = (
        f"mount -t tmpfs -o size=160k tmpfs {disk} && "
        f"{sys.executable} -m melpipe preprocess {dataset} {disk}/out.zarr {where} "
        f'--batch-size 1; echo status=$({sys.executable} -c "{status}")'
    )
    state = tmp_path / "state"
    result = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", command],
        capture_output=True, text=True, timeout=240,
        env={**os.environ, "XDG_STATE_HOME": str(state)},
    )  # fmt: skip
    assert_one_line_error(
        subprocess.CompletedProcess(result.args, 1, result.stdout, result.stderr),
        "No space left on device", "the same command resumes it",
    )  # fmt: skip
    assert "status=incomplete" in result.stdout
    for word in ("Traceback", "Compute Failed", "distributed."):
        assert word not in result.stderr, result.stderr
    if scheduler == "local":  # the workers' tracebacks are in the log the message names
        (log,) = (state / "melpipe" / "logs").iterdir()
        assert f"are in {log}." in result.stderr
        assert "Compute Failed" in log.read_text() and "No space left" in log.read_text()


def test_damaged_stores_are_one_line_errors(finished_store, tmp_path):
    truncated = tmp_path / "truncated.zarr"
    shutil.copytree(finished_store, truncated)
    text = (truncated / "zarr.json").read_text()
    (truncated / "zarr.json").write_text(text[:100])
    assert_one_line_error(run_cli("info", truncated, check=False), "zarr.json is not valid JSON")
    no_stats = tmp_path / "nostats.zarr"
    shutil.copytree(finished_store, no_stats)
    metadata = json.loads((no_stats / "zarr.json").read_text())
    del metadata["attributes"]["stats"]
    (no_stats / "zarr.json").write_text(json.dumps(metadata))
    assert_one_line_error(run_cli("info", no_stats, check=False), "lacks 'stats'")


def test_export_png_into_names_it_cannot_write_is_one_line(config, tmp_path, rng):
    source = write_dataset(tmp_path / "in", rng, broken=False)
    long_name = "x" * 250 + ".wav"  # 254 bytes; with ".png" one over the usual limit of 255
    sf.write(source / long_name, np.zeros(2000, np.float32), 22050)
    out = tmp_path / "out.zarr"
    preprocess(source, out, config, executor=LoopExecutor())
    result = run_cli("export-png", out, tmp_path / "png", check=False)
    assert_one_line_error(result, "File name too long", "Rename the input file")
    folder = tmp_path / "png2" / f"{open_store(out).label(0)}.png"
    folder.mkdir(parents=True)
    result = run_cli("export-png", out, tmp_path / "png2", "--indices", "0", check=False)
    assert_one_line_error(result, "Is a directory", "is in the way")


def test_reading_commands_refuse_bad_arguments_in_one_line(finished_store, tmp_path):
    result = run_cli("preview", finished_store, "--count", "-1", check=False)
    assert_one_line_error(result, "Invalid value for '--count'")
    result = run_cli("invert", finished_store, "--index", 5, "-o", tmp_path / "no" / "x.wav",
                      check=False)  # fmt: skip
    assert_one_line_error(result, "does not exist. Create it first")


def test_memory_output_with_worker_processes_is_refused(dataset, tmp_path):
    result = run_cli("preprocess", dataset, "memory://out.zarr", "--workers", 1, check=False)
    assert_one_line_error(result, "lives in this process's memory", "--scheduler sync")


def test_an_all_silent_input_fails_cleanly_and_leaves_no_scratch(config, tmp_path):
    source = tmp_path / "silence"
    source.mkdir()
    for i in range(3):
        sf.write(source / f"s{i}.wav", np.zeros(22050, np.float32), 22050)
    out = tmp_path / "out.zarr"
    result = run_cli("preprocess", source, out, "--scheduler", "sync", check=False)
    assert_one_line_error(result, "no usable range", "are all clips silent", "marked failed")
    assert not any((out / a.name).exists() for a in RUN_STATE)
    assert read_all(out)[1]["status"] == "failed"
    assert_one_line_error(run_cli("info", out, check=False), "failed: The 'mean' statistics")


def test_a_run_that_lost_its_store_stops(dataset, config, tmp_path):
    """A run whose store another run took over (after a crash, say) writes nothing more."""
    from melpipe.store import lock

    out = tmp_path / "out.zarr"
    thread, pause, outcome = run_paused(dataset, out, config)
    lock_file = out / "melpipe.lock"
    # As a second run does once the first's lock is gone: it records itself as the owner.
    owner = json.loads(lock_file.read_text())
    lock_file.write_text(json.dumps(owner | {"attempt": "someone-else", "run_id": "taker"}))
    pause.release.set()
    thread.join()
    assert isinstance(outcome.get("error"), RunLockedError)
    assert "now owned by run taker" in str(outcome["error"])
    assert read_all(out)[1]["status"] == "incomplete"
    del lock


def test_no_file_at_all_decodes(tmp_path, config):
    source = tmp_path / "bad"
    source.mkdir()
    (source / "x.wav").write_text("not audio")
    with pytest.raises(StatisticsError, match="No file could be decoded"):
        preprocess(source, tmp_path / "out.zarr", config, executor=LoopExecutor())
