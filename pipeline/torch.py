"""PyTorch access to a store: a map-style Dataset of its valid clips, and a chunk-aware sampler.

Needs the ``torch`` extra (``pip install 'specpipe[torch]'``). Each DataLoader worker opens
the store itself on first use; what is pickled to a worker is only the path and the small
index arrays. A DataLoader that batches fetches whole batches through ``__getitems__``,
which reads each chunk touched by a batch once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from pipeline.reader import SpectrogramStore, open_store

Transform = Callable[[torch.Tensor], Any]


class SpectrogramDataset(Dataset):
    """The valid clips of a finished store; failed rows are skipped.

    Parameters
    ----------
    path : str or path
        A finished specpipe store.
    as_float : bool
        True: float32 tensors in [-1, 1], with -1 for pixel 0 (black, most energy).
        False: the stored uint8 pixels.
    transform : callable, optional
        Applied to each item's tensor, of shape (1, n_mels, n_frames).

    Item ``i`` is the ``i``-th valid clip; ``store_indices[i]`` is its row in the store and
    ``paths[i]`` its file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        as_float: bool = True,
        transform: Transform | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.as_float = as_float
        self.transform = transform
        reader = open_store(self.path)  # fails here, not in a worker, on a bad store
        self.store_indices = reader.valid_indices
        self.paths = reader.paths[self.store_indices]
        self.chunk_length = reader.chunk_length
        self.config = reader.config
        self._reader: SpectrogramStore | None = reader

    def __getstate__(self) -> dict[str, Any]:
        # Workers open their own reader: an open store is not something to pickle.
        return {**self.__dict__, "_reader": None}

    @property
    def reader(self) -> SpectrogramStore:
        if self._reader is None:
            self._reader = open_store(self.path)
        return self._reader

    def __len__(self) -> int:
        return len(self.store_indices)

    def __getitem__(self, i: int) -> Any:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        images = self.reader.read_many(self.store_indices[np.asarray(indices, dtype=np.int64)])
        # Converted as one batch: per-item tensor operations cost more than the read.
        batch = torch.from_numpy(images).unsqueeze(1)
        if self.as_float:
            batch = batch.to(torch.float32).div_(127.5).sub_(1.0)
        items = list(batch.unbind(0))
        return items if self.transform is None else [self.transform(x) for x in items]


class ChunkShuffleSampler(Sampler[int]):
    """A random order that visits the store chunk by chunk, for read throughput.

    Each pass shuffles the order of the chunks, then the clips within each chunk, so a
    batch of up to ``chunk_length`` items touches one or two chunks instead of one per
    item. A new permutation is drawn every pass, from ``seed`` when given.
    """

    def __init__(self, dataset: SpectrogramDataset, seed: int | None = None) -> None:
        chunk_of = dataset.store_indices // dataset.chunk_length
        starts = np.flatnonzero(np.r_[True, np.diff(chunk_of) != 0])
        self._groups = np.split(np.arange(len(dataset)), starts[1:])
        self._rng = np.random.default_rng(seed)
        self._n = len(dataset)

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[int]:
        for g in self._rng.permutation(len(self._groups)):
            yield from self._rng.permutation(self._groups[g]).tolist()


__all__ = ["ChunkShuffleSampler", "SpectrogramDataset"]
