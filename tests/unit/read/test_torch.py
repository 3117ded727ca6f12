"""The PyTorch Dataset and sampler, including through DataLoader worker processes."""

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from melpipe.read.reader import open_store
from melpipe.torch import (
    ChunkBatchSampler,
    ChunkShuffleSampler,
    SpectrogramDataset,
    SpectrogramLoader,
)


def same_items(got: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal as multisets of items: each sorted by a per-item key first."""
    key = lambda t: t.double().flatten(1).sum(1).argsort()  # noqa: E731
    assert torch.equal(got[key(got)], expected[key(expected)])


@pytest.fixture(scope="module")
def reader(finished_store):
    return open_store(finished_store)


def test_items_are_scaled_images_of_the_clips(finished_store, reader):
    ds = SpectrogramDataset(finished_store)
    assert len(ds) == len(reader) == 10
    assert ds.paths.tolist() == reader.paths.tolist()
    for i, row in enumerate(range(len(reader))):
        item = ds[i]
        assert item.shape == (1, 64, 87) and item.dtype == torch.float32
        expected = reader[row].astype(np.float32) / 127.5 - 1.0  # a plain numpy reference
        np.testing.assert_allclose(item[0].numpy(), expected, atol=1e-6)
        assert item.min() >= -1.0 and item.max() <= 1.0
    raw = SpectrogramDataset(finished_store, as_float=False)
    assert raw[0].dtype == torch.uint8
    np.testing.assert_array_equal(raw[0][0].numpy(), reader[0])


def test_a_split_by_file_gives_two_datasets_that_share_no_file(finished_store, reader):
    train, val = SpectrogramDataset(finished_store).split_by_file(0.3, seed=4)
    assert len(train) + len(val) == len(reader) and 0 < len(val) < len(reader)
    # Each file is drawn on its own: over many seeds, about the fraction asked for.
    shares = [len(SpectrogramDataset(finished_store).split_by_file(0.3, seed=s)[1]) / len(reader)
              for s in range(40)]  # fmt: skip
    assert 0.2 < np.mean(shares) < 0.4, np.mean(shares)
    assert not set(train.paths) & set(val.paths)
    again = SpectrogramDataset(finished_store).split_by_file(0.3, seed=4)[1]
    assert val.store_indices.tolist() == again.store_indices.tolist()  # reproducible
    for k, row in enumerate(val.store_indices):
        np.testing.assert_allclose(val[k][0].numpy(), reader[row] / 127.5 - 1.0, atol=1e-6)
    # A subset's chunk-aware batches cover it exactly.
    batches = list(ChunkBatchSampler(train, 2, seed=0))
    assert sorted(i for b in batches for i in b) == list(range(len(train)))


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


def test_dataloader_with_two_worker_processes_yields_every_clip(finished_store):
    ds = SpectrogramDataset(finished_store)
    loader = DataLoader(ds, batch_size=3, num_workers=2, shuffle=True)
    batches = list(loader)
    assert all(b.shape[1:] == (1, 64, 87) for b in batches)
    same_items(torch.cat(batches), torch.stack([ds[i] for i in range(len(ds))]))


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


@pytest.mark.parametrize("as_float", [True, False])
def test_a_sequence_of_indices_gives_the_items_stacked(finished_store, as_float):
    ds = SpectrogramDataset(finished_store, as_float=as_float)
    indices = [7, 0, 3, 3, 9]
    batch = ds[indices]
    assert batch.shape == (5, 1, 64, 87)
    assert torch.equal(ds[np.int64(7)], batch[0]) and torch.equal(ds[torch.tensor(0)], batch[1])
    assert torch.equal(batch, torch.stack([ds[i] for i in indices]))
    flipped = SpectrogramDataset(finished_store, as_float=as_float, transform=lambda x: x.flip(-1))
    assert torch.equal(flipped[np.array(indices)], batch.flip(-1))


def chunks_of(ds: SpectrogramDataset, batch: list[int]) -> set[int]:
    return set((ds.store_indices[batch] // ds.chunk_length).tolist())


def test_chunk_batches_split_each_pass_into_batches_of_few_chunks(finished_store):
    ds = SpectrogramDataset(finished_store)  # 10 items in chunks of 4 rows
    per_chunk = np.bincount(ds.store_indices // ds.chunk_length)
    for size in (1, 2, 3, 4, 6, 20):
        sampler = ChunkBatchSampler(ds, size, seed=1)
        first, second = list(sampler), list(sampler)
        for batches in (first, second):
            assert len(batches) == len(sampler) == -(-len(ds) // size)
            assert sorted(i for b in batches for i in b) == list(range(len(ds)))
            assert [len(b) for b in batches[:-1]] == [size] * (len(batches) - 1)
            one_chunk = sum(len(chunks_of(ds, b)) == 1 for b in batches)
            assert one_chunk >= int((per_chunk // size).sum())  # every whole batch a chunk has
        assert list(ChunkBatchSampler(ds, size, seed=1)) == first  # reproducible from the seed
        if size < len(ds):
            assert first != second  # a new order each pass
    dropped = list(ChunkBatchSampler(ds, 3, seed=0, drop_last=True))
    assert (
        [len(b) for b in dropped]
        == [3, 3, 3]
        == [3] * len(ChunkBatchSampler(ds, 3, drop_last=True))
    )
    with pytest.raises(ValueError, match="batch_size"):
        ChunkBatchSampler(ds, 0)


@pytest.mark.parametrize("as_float", [True, False])
def test_whole_batches_from_two_worker_processes(finished_store, as_float):
    ds = SpectrogramDataset(finished_store, as_float=as_float)
    loader = DataLoader(
        ds, batch_size=None, sampler=ChunkBatchSampler(ds, 3, seed=0), num_workers=2
    )
    batches = list(loader)
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    same_items(torch.cat(batches), ds[range(len(ds))])


def test_spectrogram_loader_delivers_the_datasets_items(finished_store):
    ds = SpectrogramDataset(finished_store)
    everything = ds[range(len(ds))]
    loader = SpectrogramLoader(ds, 4, seed=0, num_workers=2, device="cpu")
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    assert all(b.dtype == torch.float32 for b in batches)
    assert loader.dataloader.dataset.as_float is False  # workers send uint8
    # Converted on arrival, bit for bit as the dataset converts its items.
    same_items(torch.cat(batches), everything)
    in_order = list(SpectrogramLoader(ds, 4, shuffle=False, num_workers=2))
    assert torch.equal(torch.cat(in_order), everything)
    raw = SpectrogramDataset(finished_store, as_float=False)
    assert torch.equal(torch.cat(list(SpectrogramLoader(raw, 4, shuffle=False))), raw[range(10)])
    flipped = SpectrogramDataset(finished_store, transform=lambda x: x.flip(-1))
    got = torch.cat(list(SpectrogramLoader(flipped, 4, shuffle=False, drop_last=True)))
    assert torch.equal(got, everything[:8].flip(-1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("as_float", [True, False])
def test_spectrogram_loader_delivers_on_a_cuda_device(finished_store, as_float):
    """uint8 crosses to the GPU and is converted there, to the bit of the CPU's items."""
    ds = SpectrogramDataset(finished_store, as_float=as_float)
    batches = list(SpectrogramLoader(ds, 4, shuffle=False, num_workers=2, device="cuda"))
    assert all(b.device.type == "cuda" for b in batches)
    assert all(b.dtype == (torch.float32 if as_float else torch.uint8) for b in batches)
    assert torch.equal(torch.cat(batches).cpu(), ds[range(len(ds))])


@pytest.mark.parametrize("private_call", [True, False], ids=["new-shared", "share-memory"])
def test_a_worker_makes_its_batches_in_shared_memory(finished_store, monkeypatch, private_call):
    import melpipe.read.torch as module

    ds = SpectrogramDataset(finished_store, as_float=False)
    expected = ds[[3, 1, 4]]
    assert not expected.is_shared()  # in the training process, an ordinary tensor
    monkeypatch.setattr(module, "get_worker_info", lambda: object())  # as in a worker
    if not private_call:  # a torch release without the undocumented call
        monkeypatch.setattr(torch.UntypedStorage, "_new_shared", None)
    for as_float in (False, True):
        ds.as_float = as_float
        batch = ds[[3, 1, 4]]
        assert batch.is_shared() and batch.shape == (3, 1, 64, 87)
        assert batch.dtype == (torch.float32 if as_float else torch.uint8)
        reference = expected.float() / 127.5 - 1.0 if as_float else expected
        torch.testing.assert_close(batch, reference, atol=1e-6, rtol=0)
