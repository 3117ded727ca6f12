"""The ``melpipe`` command's entry point: signal handlers first, then the command line.

Importing the command line takes about half a second (numpy, Zarr, Dask). A Ctrl-C in that
time would meet Python's own handler, which prints a traceback; here it only asks for a
stop (:mod:`melpipe.interrupts`), which the command answers with its one line as soon as
it begins.
"""

from __future__ import annotations

import signal
from typing import Any

from melpipe import interrupts


def _requested(signum: int, frame: Any) -> None:
    interrupts.request()


def main() -> None:
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, _requested)
    from melpipe.cli.app import main as command_line

    command_line()
