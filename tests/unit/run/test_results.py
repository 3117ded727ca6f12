"""Pass 1's per-file records as columns: merged in any grouping they give, for each file,
the record a plain loop over the tasks' records keeps (the first failure, else the first
reading), and the file arrays it implies."""

import dataclasses
import math

import numpy as np
import pytest

from melpipe.analysis.pixels import PixelStats
from melpipe.run.results import FileRecords, FileValues, WindowResults
from melpipe.sources.headers import FileInfo


def reading(rng: np.random.Generator) -> FileInfo:
    if rng.random() < 0.3:
        return FileInfo(error=f"ValueError: broken {rng.integers(1000)}")
    rate = int(rng.choice([8000, 22050, 44100]))
    return FileInfo(int(rng.integers(1, 10**6)), rate, int(rng.integers(1, 3)), "WAV", "PCM_16",
                    size=int(rng.integers(1, 10**7)), peak=float(rng.random()) if rng.random()
                    < 0.5 else math.nan, pcm_format=str(rng.choice(["", "s16le", "f32le"])),
                    pcm_md5=rng.bytes(16).hex() if rng.random() < 0.5 else "")  # fmt: skip


def reference(tasks: list[dict[int, FileInfo]], n_files: int) -> dict[str, list]:
    """The file arrays by a plain loop: a file split over tasks failed if any of them
    failed, the first reason stays; otherwise its first reading stands."""
    kept: dict[int, FileInfo] = {}
    for records in tasks:
        for f, record in records.items():
            if f not in kept or (record.error and not kept[f].error):
                kept[f] = record
    out: dict[str, list] = {"error": [""] * n_files, "frames": [0] * n_files,
                            "sample_rate": [0] * n_files, "pcm_md5": [""] * n_files,
                            "pcm_format": [""] * n_files, "duration": [math.nan] * n_files,
                            "peak": [math.nan] * n_files}  # fmt: skip
    for f, r in kept.items():
        if r.readable:
            for name in ("frames", "sample_rate", "pcm_md5", "pcm_format"):
                out[name][f] = getattr(r, name)
            out["duration"][f] = r.duration
        if not math.isnan(r.peak):
            out["peak"][f] = r.peak
        out["error"][f] = r.error
    return out


@pytest.mark.parametrize("seed", range(5))
def test_merged_columns_keep_what_a_loop_over_the_records_keeps(seed):
    rng = np.random.default_rng(seed)
    n_files = 40
    tasks = []
    for _ in range(12):  # tasks in window order; a file may have a reading from several
        files = sorted(rng.choice(n_files, size=int(rng.integers(0, 8)), replace=False))
        tasks.append({int(f): reading(rng) for f in files})
    parts = [FileRecords.of(t) for t in tasks]
    cut = int(rng.integers(1, len(parts)))
    left = FileRecords.empty()
    for part in parts[:cut]:
        left = left.merge(part)
    right = parts[cut]
    for part in parts[cut + 1 :]:
        right = right.merge(part)
    values = FileValues.of(n_files, None, left.merge(right))
    expected = reference(tasks, n_files)
    for name, column in expected.items():
        np.testing.assert_array_equal(getattr(values, name), np.array(column, dtype=object
                                      if name in ("error", "pcm_md5", "pcm_format") else None),
                                      err_msg=name)  # fmt: skip
    pairs = zip(expected["error"], expected["sample_rate"], strict=True)
    assert values.decoded.tolist() == [e == "" and r > 0 for e, r in pairs]


def test_a_file_s_first_failure_outranks_readings_before_and_after_it():
    ok, bad, worse = FileInfo(100, 8000, 1), FileInfo(error="A: first"), FileInfo(error="B")
    merged = (
        FileRecords.of({3: ok})
        .merge(FileRecords.of({3: bad}))
        .merge(FileRecords.of({3: worse, 4: ok}))
    )
    assert merged.standing().tolist() == [1, 3]
    assert merged.first_error() == "A: first"


def window_part(rng: np.random.Generator, n: int, tasks_files: dict[int, FileInfo]):
    values = {
        "ok": rng.random(n) < 0.8, "level": rng.normal(-30, 9, n).astype(np.float32),
        "min": rng.normal(-20, 1, n).astype(np.float32),
        "max": rng.normal(0, 1, n).astype(np.float32), "frames": rng.integers(0, 90, n),
        "audio_max": rng.normal(0, 1, n).astype(np.float32),
        "size": rng.integers(0, 10**7, n), "modified": rng.random(n) * 1.8e9,
    }  # fmt: skip
    return WindowResults(**values, files=FileRecords.of(tasks_files))


@pytest.mark.parametrize("seed", range(3))
def test_what_a_task_found_travels_as_bytes_and_joins_as_merging_does(seed):
    # Pass 1's tasks write what they found to the store as bytes, which the client reads
    # back and joins; the reference is the tasks' own values merged one by one.
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(6):
        files = {int(f): reading(rng) for f in sorted(rng.choice(30, 4, replace=False))}
        parts.append(window_part(rng, int(rng.integers(0, 9)), files))
    parts[2] = dataclasses.replace(parts[2], files=FileRecords.of(
        {7: FileInfo(error="OSError: caf\udce9.wav cannot be opened")}))  # fmt: skip
    merged = WindowResults.empty()
    for part in parts:
        merged = merged.merge(part)
    pixels = PixelStats()
    joined = WindowResults.joined([WindowResults.from_bytes(p.to_bytes()) for p in parts], pixels)
    for f in dataclasses.fields(WindowResults):
        if f.name not in ("files", "pixels"):
            a, b = getattr(joined, f.name), getattr(merged, f.name)
            assert a.dtype == b.dtype, f.name
            np.testing.assert_array_equal(a, b, err_msg=f.name)
    assert joined.files is not None and merged.files is not None
    for f in dataclasses.fields(FileRecords):
        a, b = getattr(joined.files, f.name), getattr(merged.files, f.name)
        assert a.dtype.kind == b.dtype.kind, f.name
        np.testing.assert_array_equal(a, b, err_msg=f.name)
    assert joined.pixels is pixels
    assert WindowResults.joined([], pixels).ok.shape == (0,)
