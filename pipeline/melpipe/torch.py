"""PyTorch access to a store, under the name training code imports (``melpipe.torch``);
the code is in :mod:`melpipe.read.torch`, with the rest of the read layer."""

from melpipe.read.torch import (
    ChunkBatchSampler,
    ChunkShuffleSampler,
    SpectrogramDataset,
    SpectrogramLoader,
    to_unit_range,
)

__all__ = [
    "ChunkBatchSampler",
    "ChunkShuffleSampler",
    "SpectrogramDataset",
    "SpectrogramLoader",
    "to_unit_range",
]
