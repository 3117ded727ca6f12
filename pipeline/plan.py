"""How files are grouped into tasks and store regions, and how partial results are combined.

Pure arithmetic, no Dask and no Zarr: the runner turns a plan into futures or plain calls,
and both give identical bytes. A batch is exactly one chunk of the image array and one
chunk of every per-file array, so each store object is written whole by one task.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pipeline.errors import ConfigError

T = TypeVar("T")

DEFAULT_SPLIT_EVERY = 8


@dataclass(frozen=True)
class Batch:
    """Rows ``start:stop`` of the store, handled by one task."""

    index: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


def plan_batches(n_files: int, batch_size: int) -> list[Batch]:
    """Consecutive batches of ``batch_size`` rows covering ``n_files``; the last may be short."""
    if batch_size <= 0:
        raise ConfigError(f"Expected a positive batch size. Got {batch_size} instead.")
    return [
        Batch(index, start, min(start + batch_size, n_files))
        for index, start in enumerate(range(0, n_files, batch_size))
    ]


def tree_reduce(
    items: Sequence[T],
    combine: Callable[..., T],
    *,
    split_every: int = DEFAULT_SPLIT_EVERY,
    submit: Callable[..., Any] | None = None,
) -> T:
    """Combine ``items`` level by level, at most ``split_every`` at a time, in input order.

    ``submit(combine, *group)`` runs one combination; by default it is a plain call, and the
    Dask runner passes ``Client.submit`` so every level runs as tasks on the cluster and no
    task ever gathers all items.
    """
    if split_every < 2:
        raise ConfigError(f"Expected split_every >= 2. Got {split_every} instead.")
    if not items:
        raise ValueError("Nothing to reduce.")
    run = submit or (lambda fn, *args: fn(*args))
    level = list(items)
    while len(level) > 1:
        groups = [level[i : i + split_every] for i in range(0, len(level), split_every)]
        # A lone last item moves up a level as it is: combining one item is a wasted task.
        level = [run(combine, *group) if len(group) > 1 else group[0] for group in groups]
    return level[0]
