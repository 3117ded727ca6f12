"""The one error hierarchy of melpipe.

Every error a user can meet is a :class:`MelpipeError`, with a message that names the
thing at fault and, where there is one, the fix. The CLI prints it as one line.

Errors raised for a whole run (bad parameters, no input, an output in the way) stop it
before any work starts; errors raised for one audio file (:class:`AudioError`) are caught
per file, recorded in the store's ``error`` file array, and never stop the run.

A message names the library's parameters, never the command line's flags: a parameter in
backticks, `hop_length`, or with the value it needs, `overwrite=True`. That is what a
Python caller reads; the CLI, which knows its flags, shows ``--hop-length`` and
``--overwrite`` instead, through :meth:`MelpipeError.naming`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# `name` or `name=value`, as messages name a parameter.
PARAMETER = re.compile(r"`([a-z][a-z0-9_]*)(?:=([^`]*))?`")


class MelpipeError(Exception):
    """Base class of every error melpipe raises on purpose."""

    @property
    def parameters(self) -> tuple[str, ...]:
        """The parameters the message names, in order, each once."""
        return tuple(dict.fromkeys(m.group(1) for m in PARAMETER.finditer(str(self))))

    def naming(self, name: Callable[[str, str | None], str | None]) -> str:
        """The message with each parameter called as ``name(parameter, value)`` says (the
        value as written in the message, or None); where it says None, as it is."""
        return name_parameters(str(self), name)


def name_parameters(text: str, name: Callable[[str, str | None], str | None]) -> str:
    """``text`` with each parameter in it (see :data:`PARAMETER`) called as ``name`` says."""

    def replace(match: re.Match[str]) -> str:
        return name(match.group(1), match.group(2)) or match.group(0)

    return PARAMETER.sub(replace, text)


class ConfigError(MelpipeError, ValueError):
    """A parameter is invalid, alone or in combination with another."""


class ResourceError(ConfigError):
    """A setting would need more memory than the machine or its workers have."""


class ArgumentError(MelpipeError, ValueError):
    """A function was called with an argument it cannot use."""


class ClipIndexError(MelpipeError, IndexError):
    """A clip index or mask does not fit the store."""


class InputError(MelpipeError):
    """The input location holds nothing to process, or cannot be listed."""


class StoreError(MelpipeError):
    """An output or source store is missing, unfinished, foreign, damaged or in the way."""


class RecordError(StoreError):
    """A recorded value (a store's attributes, its lock file) lacks a key, or holds one that
    cannot be read; the message names the key."""


class StorageError(MelpipeError):
    """Storage could not be reached, after the retries of :mod:`melpipe.sources.retries`."""


class RunLockedError(StoreError):
    """Another run owns the output: it is writing it now, or took it over from this one."""


class SchedulerError(MelpipeError):
    """The Dask scheduler given cannot be reached, or refuses this client."""


class ExtraMissingError(MelpipeError):
    """An optional dependency that this feature needs is not installed."""


class ExportError(MelpipeError):
    """A picture or audio file asked for cannot be written where it was asked."""


class AudioError(MelpipeError):
    """One audio file cannot give a clip; the run records it and goes on."""


class NotRegularFileError(AudioError):
    """The path names a FIFO, a device, a socket or a folder, not a file to decode."""


class EmptyAudioError(AudioError):
    """The file decodes but holds no samples."""


class TruncatedAudioError(AudioError):
    """The file holds fewer samples than its header declares."""


class NonFiniteAudioError(AudioError):
    """The file holds NaN or infinite samples, which would poison the statistics."""


class NonFiniteFeaturesError(AudioError):
    """The file's log-mel overflows (samples far outside [-1, 1]) and cannot be scaled."""


class StatisticsError(MelpipeError):
    """The dataset gives no usable normalization statistics."""
