"""Inputs and stores made to mislead, by accident or by a neighbour: damaged statistics,
chunks of the wrong size or cut short, headers that lie, metadata that claims absurd
sizes, and links where melpipe writes. Each is refused in one line naming the thing, and
nothing is allocated, written or followed on its word."""

from __future__ import annotations

import math

import pytest

from melpipe.errors import StoreError
from melpipe.reader import open_store
from tests.helpers import assert_one_line_error, copy_of, edit_attrs, run_cli


@pytest.mark.parametrize(
    ("change", "stats", "expected"),
    [
        (lambda s: s["mean"].update(min=math.nan), "mean", "records 'mean' statistics that "
         "cannot have scaled its images (min=nan"),
        (lambda s: s["extrema"].update(min=5.0, max=-5.0), "extrema", "records 'extrema' "
         "statistics that give no usable range (min=5.0, max=-5.0): they are damaged"),
    ],
    ids=["nan-in-the-used", "min-above-max-in-another"],
)  # fmt: skip
def test_stats_from_a_store_with_damaged_statistics_is_refused_naming_it(
    finished_store, dataset, tmp_path, change, stats, expected
):
    source = copy_of(finished_store, tmp_path, "source.zarr")
    edit_attrs(source, lambda a: change(a["stats"]))
    out = tmp_path / "out.zarr"
    result = run_cli("preprocess", dataset, out, "--scheduler", "sync", "--n-mels", 64,
                     "--stats-from", source, "--stats", stats, check=False)  # fmt: skip
    assert_one_line_error(result, str(source), expected)
    assert not out.exists()  # refused while planning: nothing made, no pass run


@pytest.fixture(scope="module")
def two_stores(dataset, tmp_path_factory):
    """Stores of the same files with 64 and with 128 mel bands."""
    folder = tmp_path_factory.mktemp("two")
    for n_mels in (64, 128):
        run_cli("preprocess", dataset, folder / f"m{n_mels}.zarr", "--scheduler", "sync",
                "--n-mels", n_mels, "--batch-size", 4)  # fmt: skip
    return folder / "m64.zarr", folder / "m128.zarr"


def test_an_image_chunk_of_another_store_is_refused_not_read(two_stores, tmp_path):
    small, large = two_stores
    target = copy_of(large, tmp_path)
    chunk = target / "images" / "c" / "1" / "0" / "0"
    chunk.write_bytes((small / "images" / "c" / "1" / "0" / "0").read_bytes())
    store = open_store(target)
    with pytest.raises(StoreError, match=r"chunk 1 of 'images' holds \d+ bytes, where a chunk "
                       r"of 4 images of 128 x 87 holds \d+: it was altered"):  # fmt: skip
        store[:]
    assert store[:4].shape == (4, 128, 87)  # the other chunks still read
    result = run_cli("export-png", target, tmp_path / "png", check=False)
    assert_one_line_error(result, str(target), "chunk 1 of 'images'")


@pytest.mark.parametrize(("name", "key"), [("images", "c/0/0/0"), ("start", "c/0")])
def test_a_chunk_cut_short_is_the_stores_one_line_error(two_stores, tmp_path, name, key):
    target = copy_of(two_stores[1], tmp_path)
    chunk = target / name / key
    data = chunk.read_bytes()
    chunk.write_bytes(data[: len(data) // 2])
    if name == "images":
        with pytest.raises(StoreError, match=r"chunk 0 of 'images' does not decode"):
            open_store(target)[0]
    result = run_cli("export-png", target, tmp_path / "png", "--indices", "0", check=False)
    assert_one_line_error(result, str(target), f"of {name!r} does not decode", "is damaged")
    assert "internal error" not in result.stderr
