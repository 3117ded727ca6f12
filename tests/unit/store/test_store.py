"""The store module against its schema: layout, aligned writes, ownership, round trips of
every array, the checks made on opening, and the reader's fast path into Zarr's internals."""

import shutil

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from melpipe import records
from melpipe.analysis.config import SpectrogramConfig
from melpipe.errors import RunLockedError, StoreError
from melpipe.read.reader import open_store
from melpipe.run.plan import plan_batches
from melpipe.store import lock, opened, writer
from melpipe.store.schema import (
    ARRAYS,
    BY_NAME,
    LISTING_CHUNK,
    ROW_CHUNK,
    Batch,
    Sizes,
    StoreAttrs,
    chunks_of,
    shape_of,
)
from tests.helpers import copy_of, edit_attrs, random_rows, write_store

CONFIG = SpectrogramConfig.from_options(n_mels=16, n_fft=256, hop_length=128, frames=10)


@pytest.fixture
def written(tmp_path, rng):
    rows = random_rows(rng, 10, CONFIG)
    write_store(tmp_path / "s.zarr", rows, CONFIG, batch_size=4)
    return tmp_path / "s.zarr", rows


def test_layout_follows_the_schema(written):
    path, _ = written
    group = zarr.open_group(path, mode="r")
    sizes = Sizes(clips=10, files=len(written[1][1]["path"]))
    for spec in ARRAYS:
        array = group[spec.name]
        assert array.shape == shape_of(spec, sizes, CONFIG), spec.name
        assert array.chunks == chunks_of(spec, sizes, 4, CONFIG), spec.name
        assert array.metadata.dimension_names == spec.dims
        assert array.shards is None
    assert group["images"].chunks == (4, 16, 10)  # one stored object per batch
    assert group["start"].chunks == (65536,)  # written whole by the client: one object
    assert group["clip_min"].dtype == np.float32 and group["decoded"].dtype == bool
    attrs = StoreAttrs.from_dict(group.attrs.asdict())
    assert attrs.status == "complete" and attrs.config == CONFIG


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(n=st.integers(1, 23), batch_size=st.integers(1, 9), seed=st.integers(0, 2**32 - 1))
def test_every_array_round_trips_through_the_store(tmp_path_factory, n, batch_size, seed):
    clips, files = random_rows(np.random.default_rng(seed), n, CONFIG)
    path = tmp_path_factory.mktemp("round") / "s.zarr"
    write_store(path, (clips, files), CONFIG, batch_size)
    reader = open_store(path)
    np.testing.assert_array_equal(reader[:], clips["images"])
    np.testing.assert_array_equal(reader.read_many(np.arange(n)[::-1]), clips["images"][::-1])
    for name, values in {**clips, **files}.items():
        if name != "images":
            np.testing.assert_array_equal(reader.array(name), values, err_msg=name)
    assert reader.paths.tolist() == files["path"][clips["file_index"]].tolist()
    assert reader.chunk_length == min(batch_size, n)


@pytest.mark.parametrize("region", [(2, 6), (0, 2), (4, 10), (8, 9)])
def test_a_region_that_could_share_a_chunk_is_refused(written, region):
    path, (clips, _) = written
    with lock.hold(str(path), lock.Owner.new("other"), create=False) as claim:
        batch = Batch(0, *region)
        part = {k: clips[k][batch.start : batch.stop] for k in ("images", "clipped")}
        with pytest.raises(StoreError, match="does not align"):
            writer.write(claim, batch, part)


def test_a_claim_that_lost_the_store_writes_nothing(written):
    path, (clips, _) = written
    before = (path / "images" / "c" / "0" / "0" / "0").read_bytes()
    stale = lock.Claim(str(path), "test-run", "an-attempt-that-does-not-own-it")
    batch = plan_batches(10, 4)[0]
    with pytest.raises(RunLockedError, match=r"is now owned by .*not by run test-run"):
        writer.write(stale, batch, {k: clips[k][0:4] for k in ("images", "clipped")})
    assert (path / "images" / "c" / "0" / "0" / "0").read_bytes() == before


def test_inspect_tells_what_is_at_a_location(tmp_path, written):
    path, _ = written
    assert opened.inspect(str(tmp_path / "none")).kind == "absent"
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "mine.txt").write_text("keep me")
    assert opened.inspect(str(tmp_path / "folder")).kind == "folder"
    zarr.open_group(tmp_path / "foreign.zarr", mode="w")
    assert opened.inspect(str(tmp_path / "foreign.zarr")).kind == "zarr"
    state = opened.inspect(str(path))
    assert state.kind == "melpipe" and state.written == (0, 1, 2)
    assert "melpipe.lock" in state.entries and "images" in state.entries


def test_a_deleted_chunk_is_an_error_not_the_fill_value(written, tmp_path):
    copy = copy_of(written[0], tmp_path)
    (copy / "images" / "c" / "1" / "0" / "0").unlink()
    with pytest.raises(StoreError, match=r"lacks 1 chunk\(s\) of 'images' \(clips 4-7\)"):
        open_store(copy)
    unchecked = open_store(copy, check_chunks=False)  # as a DataLoader worker opens it
    with pytest.raises(StoreError, match="lacks chunk 1 of its images"):
        unchecked[5]
    shutil.rmtree(copy)
    copy = copy_of(written[0], tmp_path)
    (copy / "clipped" / "c" / "2").unlink()
    with pytest.raises(StoreError, match=r"lacks 1 chunk\(s\) of 'clipped' \(clips 8-9\)"):
        open_store(copy)


def test_an_edited_config_is_refused(written, tmp_path):
    copy = copy_of(written[0], tmp_path)
    edit_attrs(copy, lambda a: a["config"].update(n_mels=15))
    with pytest.raises(StoreError, match=r"config|n_mels"):
        open_store(copy)
    copy2 = tmp_path / "frames.zarr"
    shutil.copytree(written[0], copy2)
    bigger = SpectrogramConfig.from_options(n_mels=16, n_fft=256, hop_length=128, frames=11)
    edit_attrs(copy2, lambda a: a.update(config=records.to_dict(bigger)))
    with pytest.raises(
        StoreError, match=r"'images' has shape \(10, 16, 10\).*gives \(10, 16, 11\)"
    ):
        open_store(copy2)


# Editing the group through Zarr lists it: Zarr then warns about the lock file beside the
# arrays, and about consolidated metadata, neither of which this test is about.
@pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning")
def test_an_images_array_of_another_dtype_is_refused(written, tmp_path):
    copy = copy_of(written[0], tmp_path)
    group = zarr.open_group(copy, mode="r+", use_consolidated=False)
    del group["images"]
    group.create_array("images", shape=(10, 16, 10), chunks=(4, 16, 10), dtype="float32")
    group["images"][:] = 300.0
    zarr.consolidate_metadata(copy)
    with pytest.raises(StoreError, match="'images' holds float32, not uint8"):
        open_store(copy)


def test_counts_that_disagree_with_the_arrays_are_refused(written, tmp_path):
    copy = copy_of(written[0], tmp_path)
    # Recorded consistently (files = decoded + failed), but not what the arrays hold.
    edit_attrs(copy, lambda a: a["counts"].update(decoded=a["counts"]["decoded"] - 1,
                                                  failed=a["counts"]["failed"] + 1))  # fmt: skip
    with pytest.raises(StoreError, match=r"records \d+ files, \d+ decoded, 10 clips, but holds"):
        open_store(copy)
    edit_attrs(copy, lambda a: a["counts"].update(
        decoded=a["counts"]["decoded"] + 1, failed=a["counts"]["failed"] - 1, clips=9))  # fmt: skip
    with pytest.raises(StoreError, match=r"9 clips, but its arrays hold \d+ files and 10 clips"):
        open_store(copy)


def test_damaged_metadata_and_missing_stats_are_named(written, tmp_path):
    copy = copy_of(written[0], tmp_path)
    text = (copy / "zarr.json").read_text()
    (copy / "zarr.json").write_text(text[: len(text) // 2])
    with pytest.raises(StoreError, match=r"zarr.json is not valid JSON"):
        open_store(copy)
    copy2 = tmp_path / "nostats.zarr"
    shutil.copytree(written[0], copy2)
    edit_attrs(copy2, lambda a: a.pop("stats"))
    with pytest.raises(StoreError, match=r"damaged attributes \(lacks 'stats'\)"):
        open_store(copy2)


def test_the_fast_chunk_path_relies_on_what_zarr_provides(written):
    """The reader decodes a local store's image chunks without Zarr's event loop. This
    names every piece of Zarr it relies on, so that an upgrade that moves one fails here
    rather than silently falling back to the slow path or reading the wrong file."""
    from numcodecs import Zstd
    from zarr.codecs import BytesCodec, ZstdCodec
    from zarr.core.metadata import ArrayV3Metadata
    from zarr.storage import LocalStore

    path, (rows, _) = written
    images = zarr.open_array(path / "images", mode="r")
    assert isinstance(images.store, LocalStore) and (path / "images").samefile(
        f"{images.store.root}/{images.path}"
    )
    assert isinstance(images.metadata, ArrayV3Metadata)
    assert [type(c) for c in images.metadata.codecs] == [BytesCodec, ZstdCodec]
    assert images.metadata.encode_chunk_key((2, 0, 0)) == "c/2/0/0"
    out = np.empty((4, 16, 10), np.uint8)
    Zstd().decode((path / "images" / "c" / "1" / "0" / "0").read_bytes(), out=out)
    np.testing.assert_array_equal(out, rows["images"][4:8])
    reader = open_store(path)
    assert reader._store._decoder is not None  # the fast path is taken for this store
    np.testing.assert_array_equal(reader[[9, 0, 5]], rows["images"][[9, 0, 5]])


def test_the_listing_gives_back_every_path_by_row_across_chunks(tmp_path):
    # Rows on both sides of a chunk's end, and a name that is not UTF-8, which must come
    # back as the same str (surrogate escapes), to open the same file.
    paths = [f"d{i % 3}/clip {i:05d}.wav" for i in range(LISTING_CHUNK + 10)]
    paths[LISTING_CHUNK] = "caf\udce9/\u00e9t\u00e9.flac"
    path = tmp_path / "s.zarr"
    write_store(path, random_rows(np.random.default_rng(0), 3, CONFIG), CONFIG, batch_size=2)
    with lock.hold(str(path), lock.Owner.new("test-run"), create=False) as claim:
        writer.write_listing(claim, paths)
        rows = np.array([0, 5, LISTING_CHUNK - 1, LISTING_CHUNK, LISTING_CHUNK + 9])
        assert writer.read_listing(claim, rows) == [paths[i] for i in rows]
        assert writer.read_listing(claim, np.arange(len(paths))) == paths
        assert writer.read_listing(claim, np.empty(0, np.int64)) == []
        (path / "listing" / "c" / "1").unlink()  # the second chunk gone
        assert writer.read_listing(claim, np.arange(3)) == paths[:3]
        with pytest.raises(StoreError, match=r"lacks part of its run's listing \(rows 4095-4096"):
            writer.read_listing(claim, np.array([LISTING_CHUNK - 1, LISTING_CHUNK]))


def test_arrays_written_a_chunk_at_a_time_equal_one_whole_write(tmp_path):
    # The client writes its arrays chunk by chunk (its peak is one chunk's encoding); the
    # stored bytes must be those of one write of the whole array, which zarr splits itself.
    values = np.array([f"{'x' * (i % 50)}/{i}.wav" for i in range(2 * ROW_CHUNK + 3)])
    spec = BY_NAME["path"]
    for name, chunked in (("whole", False), ("chunked", True)):
        group = zarr.create_group(tmp_path / f"{name}.zarr", zarr_format=3)
        array = group.create_array("path", shape=(len(values),), chunks=(ROW_CHUNK,),
                                   dtype=str, fill_value="")  # fmt: skip
        if chunked:
            writer._write_in_chunks(array, spec, values[:100])
            writer._write_in_chunks(array, spec, values[100:], start=100)  # an append's rows
        else:
            array[:] = values
    for key in ("c/0", "c/1", "c/2"):
        whole = (tmp_path / "whole.zarr" / "path" / key).read_bytes()
        assert (tmp_path / "chunked.zarr" / "path" / key).read_bytes() == whole, key


def test_what_pass_1_found_reads_back_by_batch_and_a_missing_one_is_named(tmp_path):
    attrs = StoreAttrs(status="incomplete", run_id="test-run", created="2026-12-07",
                       input="nowhere", config=CONFIG, plan={}, versions={})  # fmt: skip
    path = str(tmp_path / "s.zarr")
    with lock.hold(path, lock.Owner.new("test-run"), create=True) as claim:
        writer.create(claim, attrs, sizes=Sizes(0, 10, windows=10), batch_size=4)
        found = {0: b"first \x00 batch", 2: b"third"}
        for index, value in found.items():
            writer.write_pass_1(claim, Batch(index, 4 * index, min(4 * index + 4, 10)), value)
        assert writer.read_pass_1(claim, range(2, 3)) == [b"third"]
        with pytest.raises(StoreError, match="lacks what pass 1 found of batch 1: its data"):
            writer.read_pass_1(claim, range(0, 3))
        writer.write_pass_1(claim, Batch(1, 4, 8), b"second")
        assert writer.read_pass_1(claim, range(0, 3)) == [b"first \x00 batch", b"second", b"third"]
        with pytest.raises(StoreError, match="lacks what pass 1 found of batch 3"):
            writer.read_pass_1(claim, range(0, 4))  # past the end: there is no batch 3
