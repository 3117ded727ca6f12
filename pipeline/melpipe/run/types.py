"""The types the executors share with the planner and the run: what a run asks of an
executor (:class:`Work`), what an executor offers (:class:`Resources`), the progress bar
it updates, and the tree reduction both use to merge a pass's results. Pure: neither Dask
nor the store."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from melpipe.errors import ArgumentError, ConfigError

T = TypeVar("T")
DEFAULT_SPLIT_EVERY = 8


def tree_reduce(
    items: Sequence[T],
    combine: Callable[..., T],
    *,
    split_every: int = DEFAULT_SPLIT_EVERY,
    submit: Callable[..., Any] | None = None,
) -> T:
    """Combine ``items`` level by level, at most ``split_every`` at a time, in input order.

    ``submit(combine, *group)`` runs one combination; by default it is a plain call, and the
    Dask executor passes ``Client.submit`` so every level runs as tasks on the cluster and
    no task ever gathers all items.
    """
    if split_every < 2:
        raise ConfigError(f"Expected split_every >= 2. Got {split_every} instead.")
    if not items:
        raise ArgumentError("Nothing to reduce.")
    run = submit or (lambda fn, *args: fn(*args))
    level = list(items)
    while len(level) > 1:
        groups = [level[i : i + split_every] for i in range(0, len(level), split_every)]
        # A lone last item moves up a level as it is: combining one item is a wasted task.
        level = [run(combine, *group) if len(group) > 1 else group[0] for group in groups]
    return level[0]


@dataclass(frozen=True)
class Resources:
    """What an executor offers a run."""

    workers: int
    memory_per_worker: int | None  # bytes; None where the workers do not say
    in_client: bool  # tasks run in the client's process, so memory:// is shared


@dataclass(frozen=True)
class Work:
    """How much a run has to do, as an executor weighs it: ``windows`` to analyse, of
    ``samples_per_window`` each (exactly, or at least that many when not ``exact``), and
    whether its input or output lives in this process's memory."""

    windows: int
    samples_per_window: int
    exact: bool = True
    in_memory: bool = False


class ProgressBar(Protocol):
    def update(self, n: int = 1) -> Any: ...
    def close(self) -> Any: ...
