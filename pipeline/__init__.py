"""specpipe: audio datasets to normalized uint8 log-mel spectrogram images in one Zarr store."""

from pipeline.config import SpectrogramConfig
from pipeline.errors import (
    AudioError,
    ConfigError,
    InputError,
    RunLockedError,
    SpecpipeError,
    StatisticsError,
    StoreError,
)
from pipeline.executors import DaskExecutor, LoopExecutor, open_executor
from pipeline.reader import SpectrogramStore, open_store
from pipeline.runner import RunReport, preprocess
from pipeline.stats import GlobalStats, Range

__all__ = [
    "AudioError",
    "ConfigError",
    "DaskExecutor",
    "GlobalStats",
    "InputError",
    "LoopExecutor",
    "Range",
    "RunLockedError",
    "RunReport",
    "SpecpipeError",
    "SpectrogramConfig",
    "SpectrogramStore",
    "StatisticsError",
    "StoreError",
    "open_executor",
    "open_store",
    "preprocess",
]
