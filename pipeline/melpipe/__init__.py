"""melpipe: audio datasets to normalized uint8 log-mel spectrogram images in one Zarr store.

The names below load their modules when first used, so that ``import melpipe`` costs
milliseconds, not the half second that numpy, Zarr and Dask take: the ``melpipe`` command
sets its signal handlers before those imports (:mod:`melpipe.launch`).
"""

from __future__ import annotations

import importlib
from importlib.metadata import version as _version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from melpipe.analysis.config import SpectrogramConfig
    from melpipe.analysis.stats import GlobalStats, Range
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
    from melpipe.read.reader import SpectrogramStore, open_store
    from melpipe.run.clusters import DaskExecutor
    from melpipe.run.executors import LoopExecutor, open_executor
    from melpipe.run.runner import RunReport, preprocess

# Written once, in pyproject.toml; read from the installed distribution's metadata.
__version__ = _version("melpipe")

_MODULES = {
    "melpipe.analysis.config": ("SpectrogramConfig",),
    "melpipe.run.clusters": ("DaskExecutor",),
    "melpipe.run.executors": ("LoopExecutor", "open_executor"),
    "melpipe.read.reader": ("SpectrogramStore", "open_store"),
    "melpipe.run.runner": ("RunReport", "preprocess"),
    "melpipe.analysis.stats": ("GlobalStats", "Range"),
}


def __getattr__(name: str) -> Any:
    """A public name, imported from its module the first time it is asked for."""
    module = next((m for m, names in _MODULES.items() if name in names), None)
    if module is None and name.endswith("Error"):
        module = "melpipe.errors"
    if module is None:
        raise AttributeError(f"module 'melpipe' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
