"""The one error hierarchy of specpipe.

Errors raised for a whole run (bad parameters, no input, an existing store) stop it before
any work starts; errors raised for one audio file are caught per file, recorded in the
store's ``errors`` array, and never stop the run.
"""


class SpecpipeError(Exception):
    """Base class of every error specpipe raises on purpose."""


class ConfigError(SpecpipeError, ValueError):
    """A parameter is invalid, alone or in combination with another."""


class InputError(SpecpipeError):
    """The input location holds nothing to process."""


class StoreError(SpecpipeError):
    """An output or source store is missing, unfinished, foreign or in the way."""


class SchedulerError(SpecpipeError):
    """The Dask scheduler given cannot be reached, or refuses this client."""


class AudioError(SpecpipeError):
    """One audio file cannot give a clip; the run records it and goes on."""


class EmptyAudioError(AudioError):
    """The file decodes but holds no samples."""


class TruncatedAudioError(AudioError):
    """The file holds fewer samples than its header declares."""


class NonFiniteAudioError(AudioError):
    """The file holds NaN or infinite samples, which would poison the statistics."""


class StatisticsError(SpecpipeError):
    """The dataset gives no usable normalization statistics."""
