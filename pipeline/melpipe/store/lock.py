"""Who owns an output store: one run at a time, and a crashed run never leaves it stuck.

A run owns OUTPUT while it holds the lock file ``OUTPUT/melpipe.store.lock``. The file names the
owner (run id, an attempt id unique to this process's claim, host, pid, start time), so a
second run is refused with a message naming the first. Every task reads the file before
it writes, and the run reads it before it marks the store complete: a task left running
by a client that died, after another run took the store over, writes nothing.

- On a local file system the lock is ``flock`` on that file: the kernel releases it when
  the process ends, however it ends, so a killed run can be resumed at once.
- On object storage (any other fsspec file system) it is a lease: the object is created
  only if absent (S3's ``If-None-Match``), renewed by a background thread, and taken over
  once it has not been renewed for :data:`LEASE_SECONDS`.

Nothing here knows Zarr; the lock file is the one object of a store that Zarr does not see.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import fcntl
import json
import logging
import os
import socket
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
from fsspec.implementations.local import LocalFileSystem

from melpipe import records
from melpipe.errors import RecordError, RunLockedError, StoreError
from melpipe.sources.discover import filesystem
from melpipe.sources.retries import transient
from melpipe.store.schema import FORMER_LOCK_FILE, LOCK_FILE

logger = logging.getLogger(__name__)

LEASE_SECONDS = 120.0  # an object-storage lease not renewed for this long is abandoned
RENEW_SECONDS = 20.0
TAKEOVER_SETTLE_SECONDS = 1.0


def _now() -> float:
    return time.time()


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Owner:
    """Who holds a store: what the lock file records."""

    run_id: str
    attempt: str
    host: str
    pid: int
    since: float
    renewed: float = 0.0

    @classmethod
    def new(cls, run_id: str) -> Owner:
        now = _now()
        return cls(run_id, uuid.uuid4().hex, socket.gethostname(), os.getpid(), now, now)

    def describe(self) -> str:
        return f"run {self.run_id} (pid {self.pid} on {self.host}, since {_iso(self.since)})"

    def to_bytes(self) -> bytes:
        return json.dumps(records.to_dict(self)).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Owner | None:
        try:
            return records.from_dict(cls, json.loads(data))
        except (ValueError, RecordError):
            return None  # empty (being written) or damaged: owned by nobody we can name


@dataclass(frozen=True)
class Claim:
    """A store as one run's tasks name it: where it is, and the claim they write under."""

    url: str
    run_id: str
    attempt: str


@contextlib.contextmanager
def hold(url: str, owner: Owner, *, create: bool) -> Iterator[Claim]:
    """Own the store at ``url`` for the duration of the block.

    ``create``: the store is new, and ``url`` must not exist yet; it is made here, so a
    folder that appeared since the run was planned is never taken over.

    Raises
    ------
    RunLockedError
        Another run holds the store.
    StoreError
        ``create`` was asked and something is at ``url`` now.
    """
    fs, path = filesystem(url)
    if isinstance(fs, LocalFileSystem):
        held = _hold_local(path, owner, create=create)
    else:
        held = _hold_lease(fs, path, owner, create=create)
    with held:
        yield Claim(url, owner.run_id, owner.attempt)


@contextlib.contextmanager
def _hold_local(path: str, owner: Owner, *, create: bool) -> Iterator[None]:
    if create:
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        try:
            # Exclusive: fails if anything appeared at OUTPUT meanwhile. Never writable by
            # others, whatever the umask: see _check_owned.
            os.mkdir(path, 0o775)
        except FileExistsError:
            raise StoreError(
                f"Output {path!r} appeared while this run was getting ready; it was left "
                "alone. Run the command again."
            ) from None
    else:
        _check_owned(path)
    fd = _open_lock_file(os.path.join(path, LOCK_FILE))
    former = None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _locked(path, _read_fd(fd)) from None
        former = _hold_former(path)
        os.ftruncate(fd, 0)
        os.pwrite(fd, owner.to_bytes(), 0)
        os.fsync(fd)
        yield
    finally:
        os.close(fd)  # closing releases the flock
        if former is not None:
            os.close(former)


def _check_owned(path: str) -> None:
    """Refuse an existing OUTPUT that another user owns, or that anyone may write to:
    whoever can add entries to it can plant links where the run writes (its lock file,
    Zarr's files), and have the run overwrite what they point to."""
    info = os.stat(path)
    if info.st_uid != os.geteuid():
        raise StoreError(
            f"Output {path!r} belongs to another user (uid {info.st_uid}): a store there "
            "could be made to write through links they plant. Choose a folder of your own."
        )
    if info.st_mode & stat.S_IWOTH:
        raise StoreError(
            f"Output {path!r} can be written by anyone (mode {stat.filemode(info.st_mode)}): "
            "a store there could be made to write through links others plant. Choose "
            "another folder, or remove others' write permission (chmod o-w)."
        )


def _open_lock_file(lock: str) -> int:
    """The lock file, opened to read and write (created if absent), never through a link."""
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise StoreError(
            f"{lock!r} is a link: melpipe never writes through one, since it could point to "
            "anyone's file. Remove it, or choose another OUTPUT."
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise StoreError(f"{lock!r} is not a regular file. Remove it, or choose another OUTPUT.")
    return fd


def _hold_former(path: str) -> int | None:
    """Lock the lock file that a run of specpipe, melpipe's former name, holds in a store
    it writes, if there is one: its store is replaced only once that run has stopped.
    The descriptor, held until the run ends; None where there is no such file."""
    try:
        fd = os.open(
            os.path.join(path, FORMER_LOCK_FILE), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        )
    except OSError:  # absent, or a link: nothing of the former name's to wait for
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunLockedError(
            f"{path!r} is being written by a run of specpipe, melpipe's former name. Wait "
            "for it to finish, or stop it, and run this command again."
        ) from None
    return fd


def _read_fd(fd: int) -> Owner | None:
    return Owner.from_bytes(os.pread(fd, 1 << 16, 0))


def _locked(url: str, holder: Owner | None) -> RunLockedError:
    who = holder.describe() if holder else "another run"
    return RunLockedError(
        f"{url!r} is being written by {who}. Wait for it to finish, or stop it and run "
        "this command again: a run that has stopped releases the store by itself."
    )


@contextlib.contextmanager
def _hold_lease(
    fs: fsspec.AbstractFileSystem, path: str, owner: Owner, *, create: bool
) -> Iterator[None]:
    """The lease on object storage: created only if absent, renewed while the block runs,
    taken over once its holder has not renewed it for LEASE_SECONDS, removed at the end."""
    lock, url = f"{path}/{LOCK_FILE}", f"{fs.protocol}://{path}"
    if create and fs.exists(path) and fs.ls(path):
        raise StoreError(f"Output {url!r} appeared while this run was getting ready; left alone.")
    if not _create_exclusive(fs, lock, owner.to_bytes()):
        holder = Owner.from_bytes(fs.cat_file(lock))
        if holder is not None and _now() - holder.renewed < LEASE_SECONDS:
            raise _locked(url, holder)
        logger.info("Taking over %s from %s, silent since it stopped renewing its lease.",
                    url, holder.describe() if holder else "a damaged lock")  # fmt: skip
        fs.pipe_file(lock, owner.to_bytes())
        # Two runs taking over at once both write; the one read back is the owner.
        time.sleep(TAKEOVER_SETTLE_SECONDS)
        current = Owner.from_bytes(fs.cat_file(lock))
        if current is None or current.attempt != owner.attempt:
            raise _locked(url, current)
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(fs, lock, owner, stop), daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        # Best effort: with the storage out of reach, the lease lapses by itself, and the
        # error that ended the run is the one to report.
        with contextlib.suppress(Exception):
            current = Owner.from_bytes(fs.cat_file(lock))
            if current is not None and current.attempt == owner.attempt:
                fs.rm_file(lock)


def _create_exclusive(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> bool:
    """Write ``path`` only if it does not exist (S3's If-None-Match); False if it did."""
    try:
        with fs.open(path, "xb") as f:
            f.write(data)
    except FileExistsError:
        return False
    except (ValueError, NotImplementedError):  # a file system without exclusive writes
        if fs.exists(path):
            return False
        fs.pipe_file(path, data)
    return True


def _renew(fs: fsspec.AbstractFileSystem, lock: str, owner: Owner, stop: threading.Event) -> None:
    renewed = time.monotonic()
    while not stop.wait(RENEW_SECONDS):
        try:
            current = Owner.from_bytes(fs.cat_file(lock))
            if current is None or current.attempt != owner.attempt:
                logger.warning("Lost the lease on %s to %s.", lock, current and current.describe())
                return
            fs.pipe_file(lock, dataclasses.replace(owner, renewed=_now()).to_bytes())
            renewed = time.monotonic()
        except Exception as exc:
            if not transient(exc):
                raise
            # The storage is out of reach for now: the next renewal tries again, well
            # within the lease's LEASE_SECONDS.
            late = time.monotonic() - renewed
            logger.log(renewal_level(late), "Could not renew the lease on %s for %.0f s (%s); "
                       "trying again.", lock, late, exc)  # fmt: skip


def renewal_level(late: float) -> int:
    """How loudly to say that the lease could not be renewed for ``late`` seconds: a
    blip of the storage, which the next renewal rides out as the tasks' retries do, not
    on the terminal; once half the lease is gone, a warning there."""
    return logging.WARNING if late >= LEASE_SECONDS / 2 else logging.DEBUG


def check(claim: Claim) -> None:
    """Raise unless ``claim`` still owns its store: called before every write.

    Raises
    ------
    RunLockedError
        Another run owns the store now (or the lock file is gone): this run must stop.
    """
    fs, path = filesystem(claim.url)
    try:
        holder = Owner.from_bytes(fs.cat_file(f"{path}/{LOCK_FILE}"))
    except FileNotFoundError:
        holder = None
    if holder is None or holder.attempt != claim.attempt:
        who = holder.describe() if holder else "nobody (its lock file is gone)"
        raise RunLockedError(
            f"{claim.url!r} is now owned by {who}, not by run {claim.run_id}: this run "
            "stopped writing to it."
        )
