"""A listing kept on disk: the same paths, in the same order, as ``sorted(set(paths))``
(the plain reference), read whole or by row, whatever the runs it was sorted in; and a
manifest far larger than one run read without holding its paths."""

import pickle
import random
import tracemalloc

import pytest

from melpipe.sources import sorted_paths
from melpipe.sources.manifests import read_manifest
from melpipe.sources.sorted_paths import BLOCK, PathsOnDisk, not_in, sort_paths


def _names(n, seed=0):
    rng = random.Random(seed)
    # a name that is not UTF-8 (surrogate escapes), a newline and a NUL inside a name,
    # one given twice: each must come back as given, once
    odd = ["caf\udce9.wav", "two\nlines.wav", "nul\0inside.wav", "ünïcode/ß.flac"]
    names = [f"{rng.randrange(1000):03d}/clip {rng.random():.12f}.wav" for _ in range(n)]
    return [*names, *odd, names[0], odd[0]]


@pytest.mark.parametrize("run", [None, 2, 999, BLOCK, 5000])
def test_sorting_in_runs_gives_the_plain_sorted_paths_once_each(run):
    names = _names(3 * BLOCK + 17 if run != 2 else 200)  # a run of 2: a merge of 100 runs
    reference = sorted(set(names))
    listed = sort_paths(reversed(names), run=run)
    assert len(listed) == len(reference)
    assert list(listed) == reference


def test_rows_and_slices_read_what_the_list_holds():
    reference = sorted(set(_names(2 * BLOCK + 5, seed=1)))
    listed = PathsOnDisk.of(reference)
    rng = random.Random(2)
    for i in [0, BLOCK - 1, BLOCK, len(reference) - 1, *rng.sample(range(len(reference)), 50)]:
        assert listed[i] == reference[i]
    assert listed[-1] == reference[-1] and listed[-len(reference)] == reference[0]
    for lo, hi in [(0, 0), (3, BLOCK + 3), (BLOCK - 1, 2 * BLOCK + 1), (100, 10**9), (-5, None)]:
        assert listed[lo:hi] == reference[lo:hi]
    assert listed[1 : BLOCK * 2 : 7] == reference[1 : BLOCK * 2 : 7]
    with pytest.raises(IndexError):
        listed[len(reference)]


def test_an_empty_listing_is_empty():
    assert len(sort_paths([])) == 0 and list(sort_paths([])) == []


def test_a_listing_on_disk_is_never_pickled():
    # a task that got one would carry every path: it must fail, not travel
    with pytest.raises(TypeError, match="send rows"):
        pickle.dumps(sort_paths(["a.wav"]))


def test_a_manifest_larger_than_a_run_is_never_held_whole(tmp_path, monkeypatch):
    # the client holds at most a run being sorted, or a block of each run being merged
    n, run = 100_000, 5 * BLOCK
    root = tmp_path / "audio"
    root.mkdir()
    names = [f"{i % 97:02d}/a file named at some length {i:08d}.wav" for i in range(n)]
    random.Random(3).shuffle(names)
    manifest = tmp_path / "list.txt"
    manifest.write_text("\n".join(names) + "\n")
    monkeypatch.setattr(sorted_paths, "RUN", run)
    tracemalloc.start()
    try:
        listing = read_manifest(manifest, root)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    held = sum(len(name) + 49 for name in names)  # what the paths take as str objects
    assert peak < held / 2, f"{peak} bytes at the peak, for paths of {held} bytes"
    assert list(listing.files) == sorted(names)


def test_the_paths_not_held_are_those_a_set_leaves():
    rng = random.Random(4)
    every = sorted(set(_names(3000, seed=5)))
    held = sorted([*rng.sample(every, 1000), "000/before everything", "zzz/after everything"])
    reference = [p for p in every if p not in set(held)]
    assert list(not_in(every, held)) == reference
    assert list(not_in(every, [])) == every and list(not_in([], held)) == []
