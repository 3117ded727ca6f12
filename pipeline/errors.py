"""The one error hierarchy of specpipe.

Every error a user can meet is a :class:`SpecpipeError`, with a message that names the
thing at fault and, where there is one, the fix. The CLI prints it as one line.

Errors raised for a whole run (bad parameters, no input, an output in the way) stop it
before any work starts; errors raised for one audio file (:class:`AudioError`) are caught
per file, recorded in the store's ``error`` file array, and never stop the run.
"""


class SpecpipeError(Exception):
    """Base class of every error specpipe raises on purpose."""


class ConfigError(SpecpipeError, ValueError):
    """A parameter is invalid, alone or in combination with another."""


class ResourceError(ConfigError):
    """A setting would need more memory than the machine or its workers have."""


class ArgumentError(SpecpipeError, ValueError):
    """A function was called with an argument it cannot use."""


class ClipIndexError(SpecpipeError, IndexError):
    """A clip index or mask does not fit the store."""


class InputError(SpecpipeError):
    """The input location holds nothing to process, or cannot be listed."""


class StoreError(SpecpipeError):
    """An output or source store is missing, unfinished, foreign, damaged or in the way."""


class RunLockedError(StoreError):
    """Another run owns the output: it is writing it now, or took it over from this one."""


class SchedulerError(SpecpipeError):
    """The Dask scheduler given cannot be reached, or refuses this client."""


class ExtraMissingError(SpecpipeError):
    """An optional dependency that this feature needs is not installed."""


class ExportError(SpecpipeError):
    """A picture or audio file asked for cannot be written where it was asked."""


class AudioError(SpecpipeError):
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


class StatisticsError(SpecpipeError):
    """The dataset gives no usable normalization statistics."""
