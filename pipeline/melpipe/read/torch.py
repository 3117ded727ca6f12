"""PyTorch access to a store: a map-style Dataset of its clips (all, or one side of a split
by file), chunk-aware samplers, and a loader that reads whole batches.

Needs the ``torch`` extra (``python -m pip install '.[torch]'`` in a clone). Each
DataLoader worker opens the store itself on first use; what is pickled to a worker is only
the path and the small index arrays.

Three ways to read, slowest first (``make bench-read`` measures them):

- ``DataLoader(dataset, batch_size=B, sampler=ChunkShuffleSampler(dataset))``: items are
  fetched a batch at a time through ``__getitems__``, which reads each chunk once, then
  collated by the DataLoader.
- ``DataLoader(dataset, batch_size=None, sampler=ChunkBatchSampler(dataset, B))``: each
  worker reads, converts and stacks a whole batch in one go, straight into the shared
  memory that carries it to the training process.
- ``SpectrogramLoader(dataset, B, num_workers=...)``: as the second, except that workers
  send the stored uint8 pixels, a quarter of float32's bytes, and the conversion to
  [-1, 1] happens on arrival (on the GPU when ``device`` names one).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    Sampler,
    SequentialSampler,
    default_collate,
    get_worker_info,
)

from melpipe.errors import ArgumentError
from melpipe.read.reader import SpectrogramStore, open_store

Transform = Callable[[torch.Tensor], Any]


def to_unit_range(pixels: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 pixels as float32 in [-1, 1]: 0 (black, most energy) is -1, 255 is 1.

    The one conversion every reading path uses, so that they agree to the bit, on a CPU
    or a GPU alike. A multiplication, not a division: CUDA divides by a scalar as a
    multiplication by its reciprocal, so a division gave other last bits on a GPU than on
    a CPU (found on an H100); a float32 multiplication rounds the same everywhere.
    """
    return torch.mul(pixels, _STEP, out=out).sub_(1.0)


_STEP = 1 / 127.5


class SpectrogramDataset(Dataset):
    """The clips of a finished store, or those at ``indices``.

    Parameters
    ----------
    path : str or path
        A finished melpipe store.
    as_float : bool
        True: float32 tensors in [-1, 1], with -1 for pixel 0 (black, most energy).
        False: the stored uint8 pixels.
    transform : callable, optional
        Applied to each item's tensor, of shape (1, n_mels, n_frames).
    indices : sequence of int, optional
        The store's clips to use, e.g. one side of ``split_by_file``; default all.

    ``dataset[i]`` is the ``i``-th clip; ``store_indices[i]`` is its row in the store,
    ``paths[i]`` its file and ``starts[i]`` its start time in seconds. ``dataset[indices]``,
    with a sequence of ints, is the whole batch stacked, shape (len(indices), 1, n_mels,
    n_frames): what a DataLoader with ``batch_size=None`` and a batch sampler such as
    ``ChunkBatchSampler`` asks for.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        as_float: bool = True,
        transform: Transform | None = None,
        indices: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.as_float = as_float
        self.transform = transform
        reader = open_store(self.path)  # fails here, not in a worker, on a bad store
        every = np.arange(len(reader))
        # In store order, so that the samplers below find each chunk's clips together.
        self.store_indices = every if indices is None else np.unique(every[np.asarray(indices)])
        self.paths = reader.paths[self.store_indices]
        self.starts = reader.start[self.store_indices]
        self.chunk_length = reader.chunk_length
        self.config = reader.config
        self._reader: SpectrogramStore | None = reader

    def split_by_file(
        self, fraction: float = 0.1, *, seed: int = 0
    ) -> tuple[SpectrogramDataset, SpectrogramDataset]:
        """A train and a validation dataset that never share a recording, drawn from this
        dataset's clips: see :meth:`melpipe.read.reader.SpectrogramStore.split_by_file`."""
        train, val = self.reader.split_by_file(fraction, seed=seed)
        mine = self.store_indices
        return tuple(  # type: ignore[return-value]
            SpectrogramDataset(self.path, self.as_float, self.transform, np.intersect1d(mine, side))
            for side in (train, val)
        )

    def __getstate__(self) -> dict[str, Any]:
        # Workers open their own reader: an open store is not something to pickle.
        return {**self.__dict__, "_reader": None}

    @property
    def reader(self) -> SpectrogramStore:
        if self._reader is None:  # in a worker: the store was checked when the dataset was made
            self._reader = open_store(self.path, check_chunks=False)
        return self._reader

    def __len__(self) -> int:
        return len(self.store_indices)

    def __getitem__(self, index: Any) -> Any:
        if np.ndim(index) == 0:  # an int, or a numpy or torch scalar
            return self.__getitems__([int(index)])[0]
        if self.transform is not None:
            # A transform works on items; stack what it returns as the DataLoader would.
            return default_collate(self.__getitems__(index))
        if not self.as_float:
            # Read straight into the batch: no uint8 array in between.
            batch = _empty_batch((len(index), 1, *self.config.image_shape), torch.uint8)
            self._read(index, out=batch)
            return batch
        pixels = self._read(index)
        return to_unit_range(pixels, out=_empty_batch(pixels.shape, torch.float32))

    def __getitems__(self, indices: Sequence[int] | np.ndarray) -> list[Any]:
        batch = self._read(indices)
        # Converted as one batch: per-item tensor operations cost more than the read.
        if self.as_float:
            batch = to_unit_range(batch)
        items = list(batch.unbind(0))
        return items if self.transform is None else [self.transform(x) for x in items]

    def _read(
        self, indices: Sequence[int] | np.ndarray, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The uint8 pixels of items ``indices``, shape (n, 1, n_mels, n_frames), in ``out``
        when given."""
        rows = self.store_indices[np.asarray(indices, dtype=np.int64)]
        if out is None:
            return torch.from_numpy(self.reader.read_many(rows)).unsqueeze(1)
        self.reader.read_many(rows, out=out.numpy()[:, 0])
        return out


def _empty_batch(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor; inside a DataLoader worker, one in shared memory.

    A batch made in a worker goes to the training process through shared memory. Made
    there to begin with, it is not copied into it again, as default_collate makes the
    batches it stacks. The storage comes from ``UntypedStorage._new_shared``, the call
    default_collate itself makes, which torch does not document; where a release lacks
    it, the public ``share_memory_`` takes over, at the cost of one copy of the batch.
    """
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    new_shared = getattr(torch.UntypedStorage, "_new_shared", None)
    if new_shared is None:
        return torch.empty(shape, dtype=dtype).share_memory_()
    storage = new_shared(math.prod(shape) * dtype.itemsize)
    return torch.empty(0, dtype=dtype).set_(storage).view(*shape)


def _chunk_groups(dataset: SpectrogramDataset) -> list[np.ndarray]:
    """The dataset's item indices, one array per chunk of the store, in store order."""
    chunk_of = dataset.store_indices // dataset.chunk_length
    starts = np.flatnonzero(np.diff(chunk_of)) + 1
    return np.split(np.arange(len(dataset)), starts)


class ChunkShuffleSampler(Sampler[int]):
    """A random order that visits the store chunk by chunk, for read throughput.

    Each pass shuffles the order of the chunks, then the clips within each chunk, so a
    batch of up to ``chunk_length`` items touches one or two chunks instead of one per
    item. A new permutation is drawn every pass, from ``seed`` when given.
    """

    def __init__(self, dataset: SpectrogramDataset, seed: int | None = None) -> None:
        self._groups = _chunk_groups(dataset)
        self._rng = np.random.default_rng(seed)
        self._n = len(dataset)

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[int]:
        for g in self._rng.permutation(len(self._groups)):
            yield from self._rng.permutation(self._groups[g]).tolist()


class ChunkBatchSampler(Sampler[list[int]]):
    """Random batches of item indices, each drawn from as few chunks as possible.

    Each pass shuffles the clips within every chunk and cuts each chunk into whole
    batches of ``batch_size``. What is left over in the chunks (all of it when
    ``batch_size`` exceeds the chunk length) is pooled in a random chunk order and cut
    into batches too, so those touch only neighbouring chunks. The batches then come in
    random order; the one short batch, if any, comes last unless ``drop_last``. With the
    batch size equal to the store's chunk length (the default batch size of
    ``melpipe preprocess``, 64) nearly every batch is one chunk, read once.

    Use it as a DataLoader's ``sampler`` with ``batch_size=None``, so that the dataset
    reads each batch whole, or as its ``batch_sampler``.
    """

    def __init__(
        self,
        dataset: SpectrogramDataset,
        batch_size: int,
        seed: int | None = None,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ArgumentError(f"batch_size must be at least 1, not {batch_size}.")
        self.batch_size = batch_size
        self.drop_last = drop_last
        self._groups = _chunk_groups(dataset)
        self._rng = np.random.default_rng(seed)
        self._n = len(dataset)

    def __len__(self) -> int:
        return self._n // self.batch_size if self.drop_last else -(-self._n // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        size, rng = self.batch_size, self._rng
        batches: list[np.ndarray] = []
        leftovers: list[np.ndarray] = []
        for g in rng.permutation(len(self._groups)):
            items = rng.permutation(self._groups[g])
            whole = len(items) - len(items) % size
            batches.extend(items[:whole].reshape(-1, size))
            leftovers.append(items[whole:])
        pool = np.concatenate(leftovers) if leftovers else np.empty(0, dtype=np.int64)
        whole = len(pool) - len(pool) % size
        batches.extend(pool[:whole].reshape(-1, size))
        for b in rng.permutation(len(batches)):
            yield batches[b].tolist()
        if whole < len(pool) and not self.drop_last:
            yield pool[whole:].tolist()


class SpectrogramLoader:
    """Batches of a dataset, read whole by DataLoader workers; the fastest way to read.

    Parameters
    ----------
    dataset : SpectrogramDataset
    batch_size : int
        Items per batch; the store's chunk length (64 by default) reads fastest.
    shuffle : bool
        True: ``ChunkBatchSampler`` batches, a new order each pass. False: store order.
    seed : int, optional
        Seed of the shuffle.
    drop_last : bool
        Drop the last batch when it is short.
    device : str or torch.device, optional
        Where batches are delivered. The uint8 pixels are moved there and converted there,
        so a GPU receives a quarter of the bytes float32 would take.
    **dataloader_kwargs
        Passed to the ``DataLoader``: ``num_workers``, ``pin_memory``,
        ``persistent_workers``, ``prefetch_factor``, ...

    Without a ``transform``, workers send the stored uint8 pixels, and a float dataset's
    batches are converted to [-1, 1] on arrival, exactly as the dataset converts items.
    With a ``transform``, workers deliver the dataset's own items, transformed and stacked.
    ``dataloader`` is the DataLoader underneath.
    """

    def __init__(
        self,
        dataset: SpectrogramDataset,
        batch_size: int = 64,
        *,
        shuffle: bool = True,
        seed: int | None = None,
        drop_last: bool = False,
        device: str | torch.device | None = None,
        **dataloader_kwargs: Any,
    ) -> None:
        self.dataset = dataset
        self.device = None if device is None else torch.device(device)
        # Shipping uint8 and converting here costs less than shipping float32: in a
        # worker, most of a float batch's cost is faulting in 4 bytes of shared memory
        # per pixel.
        self._convert = dataset.as_float and dataset.transform is None
        source = dataset
        if self._convert:
            source = copy.copy(dataset)
            source.as_float = False
        sampler: Sampler[list[int]] = (
            ChunkBatchSampler(dataset, batch_size, seed=seed, drop_last=drop_last)
            if shuffle
            else BatchSampler(SequentialSampler(range(len(dataset))), batch_size, drop_last)
        )
        self.dataloader = DataLoader(source, batch_size=None, sampler=sampler, **dataloader_kwargs)

    def __len__(self) -> int:
        return len(self.dataloader)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.dataloader:
            if self.device is not None:
                batch = batch.to(self.device, non_blocking=True)
            yield to_unit_range(batch) if self._convert else batch


__all__ = [
    "ChunkBatchSampler",
    "ChunkShuffleSampler",
    "SpectrogramDataset",
    "SpectrogramLoader",
    "to_unit_range",
]
