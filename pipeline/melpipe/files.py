"""Files melpipe writes outside a store's arrays, opened without following links.

On a shared machine anyone can plant a link where a run is about to write (a ``/tmp``
folder, an export folder, the name given to ``invert -o``); writing through it would
overwrite the file it points to with the permissions of whoever ran melpipe. Every such
file (pictures, audio, the demo's files, the lock file) is opened here, refusing a link
in the last component of its path (``O_NOFOLLOW``), so the check and the write are one
system call; folders that lead elsewhere are the callers' to refuse (``export-png``
keeps every picture inside its folder).
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

from melpipe.errors import ExportError

_WRITE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


def open_to_write(path: str | os.PathLike[str]) -> BinaryIO:
    """Open ``path`` to write it from the start, created or emptied, as a binary file.

    Raises
    ------
    ExportError
        ``path`` is a link, or something other than a regular file.
    OSError
        The file cannot be opened (permissions, a missing folder, a full disk).
    """
    try:
        fd = os.open(path, _WRITE | os.O_NONBLOCK, 0o644)  # no waiting on a FIFO's reader
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ExportError(
                f"{os.fspath(path)!r} is a link: melpipe never writes through one. Remove "
                "it, or choose another path."
            ) from None
        if exc.errno == errno.ENXIO:  # a FIFO that nobody reads
            raise _not_a_file(path) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _not_a_file(path)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "wb")


def _not_a_file(path: str | os.PathLike[str]) -> ExportError:
    return ExportError(
        f"{os.fspath(path)!r} is not a regular file: melpipe writes only files. Choose "
        "another path."
    )
