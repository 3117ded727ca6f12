import numpy as np
import pytest
import zarr

from pipeline import store
from pipeline.config import SpectrogramConfig
from pipeline.errors import StoreError
from pipeline.plan import Batch, plan_batches

CONFIG = SpectrogramConfig.from_options(n_mels=16, n_fft=256, hop_length=128, frames=10)


def rows_for(batch, value):
    n = len(batch)
    return store.Rows(
        images=np.full((n, *CONFIG.image_shape), value, np.uint8),
        paths=[f"clip{batch.start + i}.wav" for i in range(n)],
        valid=np.ones(n, bool),
        errors=[""] * n,
        file_min=np.full(n, -1.0, np.float32),
        file_max=np.full(n, 1.0, np.float32),
        clipped=np.zeros(n, np.uint32),
    )


@pytest.fixture
def empty_store(tmp_path):
    path = tmp_path / "out.zarr"
    store.create(path, n_files=10, batch_size=4, config=CONFIG, attrs={})
    return path


def test_layout(empty_store):
    group = zarr.open_group(empty_store, mode="r")
    images = group["images"]
    assert images.shape == (10, 16, 10)
    assert images.dtype == np.uint8
    assert images.chunks == (4, 16, 10)  # one stored object per batch
    assert images.shards is None
    assert images.metadata.dimension_names == ("clip", "mel", "frame")
    for name in store.PER_CLIP_ARRAYS:
        assert group[name].shape == (10,)
        assert group[name].chunks == (4,)
    assert group["file_min"].dtype == np.float32
    assert group["valid"].dtype == bool
    assert group.attrs["status"] == "incomplete"
    assert group.attrs["config"] == CONFIG.to_dict()


def test_every_aligned_batch_lands(empty_store):
    for batch in plan_batches(10, 4):
        store.write_rows(empty_store, batch, rows_for(batch, batch.index + 1))
    group = zarr.open_group(empty_store, mode="r")
    assert group["images"][:, 0, 0].tolist() == [1, 1, 1, 1, 2, 2, 2, 2, 3, 3]
    assert group["paths"][:].tolist() == [f"clip{i}.wav" for i in range(10)]


@pytest.mark.parametrize("region", [(2, 6), (0, 2), (4, 10), (8, 9)])
def test_a_region_that_could_share_a_chunk_is_refused(empty_store, region):
    batch = Batch(0, *region)
    with pytest.raises(StoreError, match="does not align"):
        store.write_rows(empty_store, batch, rows_for(batch, 1))


def test_unfinished_store_is_recognised(empty_store):
    with pytest.raises(StoreError, match="unfinished"):
        store.read_attrs(empty_store)
    assert store.read_attrs(empty_store, require_complete=False)["status"] == "incomplete"
    store.finish(empty_store, {"counts": {"files": 10}})
    assert store.read_attrs(empty_store)["status"] == "complete"


def test_foreign_zarr_store_is_not_taken_for_ours(tmp_path):
    zarr.open_group(tmp_path / "other.zarr", mode="w")
    with pytest.raises(StoreError, match="not a specpipe store"):
        store.read_attrs(tmp_path / "other.zarr")
    with pytest.raises(StoreError, match="No Zarr store"):
        store.read_attrs(tmp_path / "missing.zarr")


def test_existing_output_needs_overwrite(empty_store):
    with pytest.raises(StoreError, match="--overwrite"):
        store.check_writable(empty_store, overwrite=False)
    store.check_writable(empty_store, overwrite=True)


def test_a_folder_that_is_not_a_store_is_never_replaced(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(StoreError, match="not a Zarr store"):
        store.check_writable(tmp_path, overwrite=True)
    assert (tmp_path / "precious.txt").exists()
