"""The PyTorch Dataset and sampler, including through DataLoader worker processes."""

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pipeline.reader import open_store
from pipeline.torch import ChunkShuffleSampler, SpectrogramDataset


@pytest.fixture(scope="module")
def reader(finished_store):
    return open_store(finished_store)


def test_items_are_scaled_images_of_valid_clips(finished_store, reader):
    ds = SpectrogramDataset(finished_store)
    assert len(ds) == len(reader.valid_indices) == 10
    assert ds.paths.tolist() == reader.paths[reader.valid_indices].tolist()
    for i, row in enumerate(reader.valid_indices):
        item = ds[i]
        assert item.shape == (1, 64, 87) and item.dtype == torch.float32
        expected = reader[row].astype(np.float32) / 127.5 - 1.0  # a plain numpy reference
        np.testing.assert_allclose(item[0].numpy(), expected, atol=1e-6)
        assert item.min() >= -1.0 and item.max() <= 1.0
    raw = SpectrogramDataset(finished_store, as_float=False)
    assert raw[0].dtype == torch.uint8
    np.testing.assert_array_equal(raw[0][0].numpy(), reader[reader.valid_indices[0]])


def test_transform_is_applied_to_each_item(finished_store):
    ds = SpectrogramDataset(finished_store, transform=lambda x: x.flip(-1))
    plain = SpectrogramDataset(finished_store)
    torch.testing.assert_close(ds[3], plain[3].flip(-1))
    assert all(
        torch.equal(a, b.flip(-1))
        for a, b in zip(ds.__getitems__([4, 0]), plain.__getitems__([4, 0]), strict=True)
    )


def test_pickled_dataset_carries_no_open_store(finished_store):
    ds = SpectrogramDataset(finished_store)
    copy = pickle.loads(pickle.dumps(ds))
    assert copy._reader is None
    torch.testing.assert_close(copy[2], ds[2])


def test_dataloader_with_two_worker_processes_yields_every_valid_clip(finished_store):
    ds = SpectrogramDataset(finished_store)
    loader = DataLoader(ds, batch_size=3, num_workers=2, shuffle=True)
    batches = list(loader)
    assert all(b.shape[1:] == (1, 64, 87) for b in batches)
    got = torch.cat(batches)
    expected = torch.stack([ds[i] for i in range(len(ds))])
    # Same multiset of items: sort by a per-item key and compare.
    key = lambda t: t.flatten(1).sum(1).argsort()  # noqa: E731
    torch.testing.assert_close(got[key(got)], expected[key(expected)])


def test_chunk_shuffle_visits_each_chunk_in_one_run(finished_store, reader):
    ds = SpectrogramDataset(finished_store)
    sampler = ChunkShuffleSampler(ds, seed=3)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == list(range(len(ds))) == sorted(second)
    assert first != second  # a new order each pass
    assert list(ChunkShuffleSampler(ds, seed=3)) == first  # reproducible from the seed
    chunks = ds.store_indices[first] // reader.chunk_length
    n_chunks = len(set(chunks.tolist()))
    changes = int(np.count_nonzero(np.diff(chunks)))
    assert changes == n_chunks - 1  # never returns to a chunk it has left
    loader = DataLoader(ds, batch_size=4, num_workers=2, sampler=sampler)
    assert sum(len(b) for b in loader) == len(ds)
