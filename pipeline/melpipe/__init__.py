"""melpipe: audio datasets to normalized uint8 log-mel spectrogram images in one Zarr store."""

from importlib.metadata import version as _version

from melpipe.config import SpectrogramConfig
from melpipe.errors import (
    ArgumentError,
    AudioError,
    ClipIndexError,
    ConfigError,
    EmptyAudioError,
    ExportError,
    ExtraMissingError,
    InputError,
    MelpipeError,
    NonFiniteAudioError,
    NonFiniteFeaturesError,
    NotRegularFileError,
    RecordError,
    ResourceError,
    RunLockedError,
    SchedulerError,
    StatisticsError,
    StorageError,
    StoreError,
    TruncatedAudioError,
)
from melpipe.executors import DaskExecutor, LoopExecutor, open_executor
from melpipe.reader import SpectrogramStore, open_store
from melpipe.runner import RunReport, preprocess
from melpipe.stats import GlobalStats, Range

# Written once, in pyproject.toml; read from the installed distribution's metadata.
__version__ = _version("melpipe")

__all__ = [
    "ArgumentError",
    "AudioError",
    "ClipIndexError",
    "ConfigError",
    "DaskExecutor",
    "EmptyAudioError",
    "ExportError",
    "ExtraMissingError",
    "GlobalStats",
    "InputError",
    "LoopExecutor",
    "MelpipeError",
    "NonFiniteAudioError",
    "NonFiniteFeaturesError",
    "NotRegularFileError",
    "Range",
    "RecordError",
    "ResourceError",
    "RunLockedError",
    "RunReport",
    "SchedulerError",
    "SpectrogramConfig",
    "SpectrogramStore",
    "StatisticsError",
    "StorageError",
    "StoreError",
    "TruncatedAudioError",
    "__version__",
    "open_executor",
    "open_store",
    "preprocess",
]
