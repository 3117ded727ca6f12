"""How an error reaches a person: one line, in the command line's words.

Every error a user can meet ends the command with one line that names the thing and the
fix, never a traceback (``MELPIPE_TRACEBACK=1`` shows one for a bug report). The library's
messages name its parameters (`hop_length`, `overwrite=True`); :func:`as_flags` names
this command line's options instead.
"""

from __future__ import annotations

import ast
import errno
import shlex
from typing import Any

import click

from melpipe.errors import MelpipeError, name_parameters
from melpipe.sources.retries import transient, unreachable

_FIXES = {
    errno.ENOSPC: "Free some space or choose another location; an unfinished store is marked "
    "so, and the same command resumes it.",
    errno.EACCES: "Check the permissions of that path.",
    errno.EROFS: "That file system is read-only: choose another location.",
    errno.ENAMETOOLONG: "Choose a shorter path.",
}


def one_line(exc: BaseException) -> str:
    """The message a person sees for an error, on one line, in the command line's words."""
    if isinstance(exc, MelpipeError):
        return as_flags(str(exc))
    if transient(exc):  # storage out of reach in this process, where nothing retries
        return str(unreachable("INPUT or OUTPUT", exc))
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        fix = _FIXES.get(exc.errno or 0, "")
        return f"{exc.strerror or exc}{where}. {fix}".strip()
    return (
        f"internal error: {type(exc).__name__}: {exc}. This is a bug in melpipe: run again "
        "with MELPIPE_TRACEBACK=1 to see where it happened, and report it."
    )


# Library parameters that the command line sets through options of other names.
_SPELLED = {"n_samples": "--duration", "tls": "--tls-ca-file, --tls-cert and --tls-key"}


def as_flags(text: str) -> str:
    """``text`` with the library's parameters, as messages name them (`hop_length`,
    `overwrite=True`, `segments='all'`), named by this command line's options instead
    (--hop-length, --overwrite, --segments all). An option of the same name means the same
    in every command, so any command's will do: a reading command's message may name
    preprocess's."""
    ctx = click.get_current_context(silent=True)
    options: dict[str, click.Option] = {}
    if ctx is not None:
        root = ctx.find_root().command
        commands = list(root.commands.values()) if isinstance(root, click.Group) else []
        for command in [*commands, ctx.command]:
            options.update((p.name, p) for p in command.params if isinstance(p, click.Option))

    def flag(name: str, value: str | None) -> str | None:
        option = options.get(name)
        if name in _SPELLED or option is None or option.name is None:
            return _SPELLED.get(name)
        long = max(option.opts, key=len)
        if value is None:
            return long
        given = _literal(value)
        if option.is_flag:
            off = given is False and option.secondary_opts
            return max(option.secondary_opts, key=len) if off else long
        return f"{long} {shlex.quote(str(given))}"

    return name_parameters(text, flag)


def _literal(value: str) -> Any:
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value
