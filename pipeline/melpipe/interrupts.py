"""How a signal ends a run: it asks for a stop, and the run stops where nothing is half done.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be when a signal
arrives, and some places cannot take it. Inside distributed's ``sync`` before its future
exists, tornado then logs a ``NameError`` with a traceback; in a ``LocalCluster`` half
built, distributed's exit hook fails to close it, with another; inside Zarr's or fsspec's
``sync``, a write goes on in their event loop while the run unwinds. So while a run lasts
(:func:`deferred`), the command line's signal handler only records the request here
(:func:`request`), and the run raises ``KeyboardInterrupt`` itself at points where it is
safe (:func:`check`): before each task it runs in this process, while it waits for a
pass's results, between passes. Code that any exception may stop and that can last long
(the listing of the input) runs :func:`interruptible`, where the handler raises at once.

Outside :func:`deferred`, a request is answered at once, as Python's own handler does; so
is a second one that comes before the run reached a check (a run stuck where it never
checks still stops), but none after it, while the run closes its cluster and its store.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_requested = threading.Event()
_answered = threading.Event()  # a check() raised: the run is ending
_deferred = 0  # depth of deferred() blocks
_interruptible = 0  # depth of interruptible() blocks inside them


def reset() -> None:
    """Forget an earlier request: a new command begins."""
    _requested.clear()
    _answered.clear()


def request() -> bool:
    """Record a request to stop; whether the caller, a signal handler, may raise
    ``KeyboardInterrupt`` at once: outside a run, in an interruptible part of one, or on
    a second request that the run has not answered yet (a run stuck out of reach of its
    checks still stops). Once it has, further requests change nothing: the run is already
    closing its cluster and its store."""
    again = _requested.is_set()
    _requested.set()
    if _answered.is_set():
        return False
    return again or _deferred == 0 or _interruptible > 0


def check() -> None:
    """Raise ``KeyboardInterrupt`` if a stop was requested: a point where the run may end."""
    if _requested.is_set():
        _answered.set()
        raise KeyboardInterrupt


def wait(seconds: float) -> None:
    """Sleep up to ``seconds``, and raise as :func:`check` does, at once if a stop is
    requested meanwhile."""
    _requested.wait(seconds)
    check()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A run: a request to stop is answered at its next :func:`check`, not where the
    signal found it."""
    global _deferred
    _deferred += 1
    try:
        yield
    finally:
        _deferred -= 1


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """A part of a run that a ``KeyboardInterrupt`` may stop anywhere: a request raises
    at once, and one made before it began raises on entering."""
    global _interruptible
    check()
    _interruptible += 1
    try:
        yield
    finally:
        _interruptible -= 1
