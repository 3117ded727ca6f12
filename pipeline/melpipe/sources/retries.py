"""Storage that is briefly out of reach: which errors those are, and the bounded retries.

Object storage drops connections now and then, and an endpoint can be gone for a few
seconds. A task that meets such an error (:func:`transient`) runs again, whole, after 2,
4 and 8 seconds: every task's writes replace whole chunks, so running one again is safe.
A fourth failure, or any error of another kind, ends the run with one line naming the
storage. Where an error is a file's own (it does not decode), it is recorded for that file
as always; a transient error never is, since it says nothing about the file.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from melpipe.errors import StorageError

logger = logging.getLogger(__name__)

T = TypeVar("T")
WAITS = (2.0, 4.0, 8.0)  # seconds before each retry: 4 tries, 14 s of waiting
# Errors of a connection rather than of the data, by class name: botocore, aiohttp and
# fsspec raise their own, and none of them need be importable here.
_TRANSIENT_NAMES = frozenset({
    "EndpointConnectionError", "ConnectionClosedError", "ConnectTimeoutError",
    "ReadTimeoutError", "ClientConnectorError", "ClientOSError", "ServerDisconnectedError",
    "ServerTimeoutError", "FSTimeoutError",
})  # fmt: skip


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` says a connection to storage failed, not that data is wrong."""
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    return any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__)


class Places(Protocol):
    """What a task's run context says of where it reads and writes."""

    @property
    def root(self) -> str: ...

    @property
    def claim(self) -> Any: ...  # a lock.Claim: its ``url`` is the store


Item = TypeVar("Item")
Ctx = TypeVar("Ctx", bound=Places)


def retried(fn: Callable[[Item, Ctx], T]) -> Callable[[Item, Ctx], T]:
    """A task ``fn(item, run)`` that :func:`retrying` runs, naming as its storage the run's
    ``root`` (the input) and the store of its ``claim``."""

    @functools.wraps(fn)
    def run_task(item: Item, run: Ctx) -> T:
        where = " or ".join(repr(str(p)) for p in (run.root, run.claim.url) if p)
        return retrying(where, fn, item, run)

    return run_task


def retrying(where: str, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """``fn(*args, **kwargs)``, tried again after each of :data:`WAITS` while it fails
    with a transient error.

    Raises
    ------
    StorageError
        It failed that way every time; the message names ``where``, the storage.
    """
    for wait in (*WAITS, None):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not transient(exc):
                raise
            if wait is None:
                raise unreachable(where, exc, tries=len(WAITS) + 1) from None
            logger.warning("%s: %s: %s; trying again in %g s.", where,
                           type(exc).__name__, exc, wait)  # fmt: skip
            time.sleep(wait)
    raise AssertionError("unreachable")  # the loop returns or raises


def unreachable(where: str, exc: BaseException, tries: int = 1) -> StorageError:
    """The one-line error for storage that could not be reached."""
    during = f", {tries} times over {sum(WAITS):g} s" if tries > 1 else ""
    return StorageError(
        f"Could not reach the storage of {where}{during} ({type(exc).__name__}: {exc}). "
        "Check the connection and the endpoint, then run the same command again: an "
        "unfinished store is resumed."
    )
