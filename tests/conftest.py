"""Shared fixtures: seeded randomness, small generated datasets, real Dask clusters.

Helpers that are not fixtures live in tests/helpers.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from melpipe.analysis.config import SpectrogramConfig
from melpipe.run.clusters import DaskExecutor
from melpipe.run.executors import LoopExecutor
from tests.helpers import write_dataset


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261125)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten good files of mixed formats and five broken ones, shared by the whole session."""
    return write_dataset(tmp_path_factory.mktemp("dataset"), np.random.default_rng(7))


@pytest.fixture(scope="session")
def config() -> SpectrogramConfig:
    return SpectrogramConfig.from_options(n_mels=64, hop_length=256, duration=1.0)


@pytest.fixture
def loop() -> LoopExecutor:
    """Plain loops in this process: the reference every Dask run must equal."""
    return LoopExecutor()


@pytest.fixture(scope="session")
def cluster_address() -> Iterator[str]:
    """A real scheduler with two worker processes on loopback, for the whole session."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    ) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="session")
def dask_executor(cluster_address: str) -> Iterator[DaskExecutor]:
    """An executor on the session's two-worker cluster."""
    from distributed import Client

    with Client(cluster_address) as client:
        yield DaskExecutor(client)


@pytest.fixture(scope="session")
def finished_store(dataset: Path, config: SpectrogramConfig, tmp_path_factory) -> Path:
    """The session dataset preprocessed in plain loops, in chunks of 4 clips."""
    from melpipe.run.runner import preprocess

    out = tmp_path_factory.mktemp("stores") / "finished.zarr"
    preprocess(dataset, out, config, executor=LoopExecutor(), batch_size=4)
    return out
