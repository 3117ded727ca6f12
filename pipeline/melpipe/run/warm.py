"""What a worker process of a local cluster loads before its first task.

The process that a local cluster's workers are forked from imports this module once
(:func:`melpipe.run.executors.prepare_local_workers`), so that every worker starts with it
loaded; each worker imports it again as a Dask preload, which costs nothing then, and
warms a worker that was started another way. Importing it limits BLAS to one thread in
this process (one per worker, as Dask's nanny asks through the environment) and runs one
tiny analysis, so that the imports and the default filter bank are done; it writes
nothing. Not for a process that runs anything else.
"""

import os
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from melpipe.analysis.config import SpectrogramConfig
from melpipe.analysis.features import spectrogram
from melpipe.run import tasks  # noqa: F401  (decoding, the store, the statistics)
from melpipe.run.clusters import WORKER_LOG, send_dask_logs

threadpool_limits(limits=1, user_api="blas")
spectrogram(np.zeros((1, 4096), np.float32), SpectrogramConfig.from_options())


def dask_setup(worker: object) -> None:
    """Dask's preload hook, called as a worker starts: a local cluster's workers send
    Dask's messages and melpipe's (a task's retries) to the run's log file
    (:func:`melpipe.run.executors.send_dask_logs`), so that neither a failing task's traceback
    nor a warning reaches the terminal."""
    path = os.environ.get(WORKER_LOG)
    if path:
        for name in ("distributed", "melpipe"):
            send_dask_logs(Path(path), name)
