"""A run's passes as typed stages: a task, the items it maps over, and the mergeable kind
their results reduce to (rechunker's ``Stage``, with the reduction the executors do).

A stage is a value; :class:`Stages` runs one on the run's executor, with a progress bar.
What each stage's task does is :mod:`melpipe.run.tasks`'s; which stages a run runs, and
in which order, is :mod:`melpipe.run.lifecycle`'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from melpipe.analysis.stats import M
from melpipe.run.executors import Executor, ProgressBar
from melpipe.run.tasks import RunContext

Item = TypeVar("Item")  # a stage's item
Progress = Callable[[str, int], ProgressBar]


@dataclass(frozen=True)
class Stage(Generic[Item, M]):
    """One pass over ``items``: ``task(item, context)`` for each, merged as ``kind``. A
    stage may carry a context of its own (pass 2's, which holds the scales)."""

    title: str
    task: Callable[[Item, RunContext], M]
    items: Sequence[Item]
    kind: type[M]
    context: RunContext | None = None


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def no_progress(description: str, total: int) -> ProgressBar:
    return _NoBar()


@dataclass(frozen=True)
class Stages:
    """Runs stages on one executor, in one run's context, each with a progress bar."""

    executor: Executor
    context: RunContext
    progress: Progress = no_progress

    def __call__(self, stage: Stage[Any, M]) -> M:
        if not stage.items:  # a resumed run whose batches were all written
            return stage.kind.empty()
        bar = self.progress(stage.title, len(stage.items))
        try:
            context = stage.context or self.context
            return self.executor.map_reduce(stage.task, stage.items, context, stage.kind, bar)
        finally:
            bar.close()

    def with_context(self, **changes: Any) -> RunContext:
        """The run's context with ``changes``, for a stage that needs its own."""
        return dataclasses.replace(self.context, **changes)
