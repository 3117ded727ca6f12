"""Progress bars on the error output, which also end a run once it was asked to stop,
and where the local cluster's log went once something was written there."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from melpipe import interrupts


class _Bar(tqdm):
    """A progress bar that also ends the run once it was asked to stop, at the next batch
    that finishes (see :mod:`melpipe.interrupts`)."""

    def update(self, n: float | None = 1) -> bool | None:
        interrupts.check()
        return super().update(n)


class _BarOutput:
    """The error output, for progress bars, knowing whether they left a line unended: a
    signal can stop a run between a bar's first line and its close, and the error that
    follows then begins a line of its own (:meth:`end_line`), not the bar's."""

    unended = False

    def write(self, text: str) -> None:
        if text:
            self.unended = not text.endswith("\n")
        sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, fileno: what tqdm asks a file
        return getattr(sys.stderr, name)

    def end_line(self) -> None:
        if self.unended:
            self.write("\n")


BAR_OUTPUT = _BarOutput()
LOGS: list[Path] = []  # the local cluster's log, once something was written there


def log_note() -> str:
    if not LOGS:
        return ""
    return f" (Dask's messages, the failed tasks' tracebacks among them, are in {LOGS[-1]}.)"


def progress(description: str, total: int) -> tqdm:
    return _Bar(total=total, desc=description, unit="batch", file=BAR_OUTPUT, dynamic_ncols=True)
