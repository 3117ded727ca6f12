"""Pass 1's per-file records as columns: merged in any grouping they give, for each file,
the record a plain loop over the tasks' records keeps (the first failure, else the first
reading), and the file arrays it implies."""

import math

import numpy as np
import pytest

from melpipe.run.results import FileRecords, FileValues
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
