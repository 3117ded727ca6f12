"""What one task does with one batch of files: analyse it, or scale and store it.

These functions run inside Dask workers (or plain loops); they take and return small,
picklable values, catch every per-file failure, and record it instead of raising.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline import store
from pipeline.audio import describe_error, read_clip
from pipeline.config import SpectrogramConfig
from pipeline.discover import join, utf8_safe
from pipeline.features import log_mel
from pipeline.plan import Batch
from pipeline.scaling import scale_to_uint8
from pipeline.stats import Extrema, Range

logger = logging.getLogger(__name__)

MAX_REPORTED_FAILURES = 10


def analyse(root: str, paths: list[str], config: SpectrogramConfig) -> store.Analysis:
    """Decode, fit and analyse the files ``root/paths``; failures are recorded, not raised."""
    clips = np.zeros((len(paths), config.n_samples), dtype=np.float32)
    valid = np.zeros(len(paths), dtype=bool)
    errors = [""] * len(paths)
    for i, rel in enumerate(paths):
        try:
            clips[i] = read_clip(
                join(root, rel), sample_rate=config.sample_rate, n_samples=config.n_samples
            )
            valid[i] = True
        except Exception as exc:  # one broken file must never stop the run
            errors[i] = describe_error(exc)
            logger.debug("Skipping %s: %s", rel, errors[i])
    logmel = log_mel(clips[valid], config)
    file_min = np.full(len(paths), np.nan, dtype=np.float32)
    file_max = np.full(len(paths), np.nan, dtype=np.float32)
    if len(logmel):
        file_min[valid] = logmel.min(axis=(1, 2))
        file_max[valid] = logmel.max(axis=(1, 2))
    return store.Analysis(logmel, valid, errors, file_min, file_max)


def batch_extrema(
    paths: list[str],
    batch: Batch,
    *,
    root: str,
    config: SpectrogramConfig,
    output: store.Target | None = None,
) -> Extrema:
    """First pass: the statistics of one batch; with ``output``, its log-mels and per-file
    arrays are also kept in the store's scratch array for the second pass."""
    result = analyse(root, paths, config)
    if output is not None:
        store.write_scratch(output, batch, result)
    return Extrema.from_files(result.file_min, result.file_max)


@dataclass(frozen=True)
class Failure:
    row: int
    path: str
    error: str


@dataclass(frozen=True)
class WriteSummary:
    """Counts over the batches written so far, and the first failures in row order."""

    n_files: int = 0
    n_valid: int = 0
    n_clipped: int = 0
    n_pixels: int = 0
    failures: tuple[Failure, ...] = field(default_factory=tuple)

    @property
    def n_failed(self) -> int:
        return self.n_files - self.n_valid

    def merge(self, other: WriteSummary) -> WriteSummary:
        failures = sorted(self.failures + other.failures, key=lambda f: f.row)
        return WriteSummary(
            n_files=self.n_files + other.n_files,
            n_valid=self.n_valid + other.n_valid,
            n_clipped=self.n_clipped + other.n_clipped,
            n_pixels=self.n_pixels + other.n_pixels,
            failures=tuple(failures[:MAX_REPORTED_FAILURES]),
        )

    @staticmethod
    def merge_all(*parts: WriteSummary) -> WriteSummary:
        return functools.reduce(WriteSummary.merge, parts, WriteSummary())

    @classmethod
    def of_rows(
        cls,
        start: int,
        paths: Sequence[str],
        errors: Sequence[str],
        clipped: np.ndarray,
        config: SpectrogramConfig,
    ) -> WriteSummary:
        """The summary of rows ``start, start + 1, ...``, written now or by an earlier run."""
        failures = [Failure(start + i, paths[i], e) for i, e in enumerate(errors) if e]
        n_valid = len(paths) - len(failures)
        return cls(
            n_files=len(paths),
            n_valid=n_valid,
            n_clipped=int(np.sum(clipped, dtype=np.int64)),
            n_pixels=n_valid * config.n_mels * config.n_frames,
            failures=tuple(failures[:MAX_REPORTED_FAILURES]),
        )


def write_batch(
    paths: list[str],
    batch: Batch,
    *,
    root: str,
    config: SpectrogramConfig,
    scale: Range,
    output: store.Target,
    from_scratch: bool = False,
) -> WriteSummary:
    """Second pass: one batch's log-mels, read from the scratch array or computed again,
    scaled to images and written as the batch's rows of the store."""
    result = store.read_scratch(output, batch) if from_scratch else analyse(root, paths, config)
    images = np.full((len(paths), *config.image_shape), store.FAILED_PIXEL, dtype=np.uint8)
    scaled, n_clipped = scale_to_uint8(result.logmel, scale)
    images[result.valid] = scaled
    clipped = np.zeros(len(paths), dtype=np.uint32)
    clipped[result.valid] = n_clipped
    store.write_rows(
        output,
        batch,
        store.Rows(
            images=images,
            paths=paths,
            valid=result.valid,
            errors=result.errors,
            file_min=result.file_min,
            file_max=result.file_max,
            clipped=clipped,
        ),
        after_scratch=from_scratch,
    )
    return WriteSummary.of_rows(
        batch.start, [utf8_safe(p) for p in paths], result.errors, clipped, config
    )
