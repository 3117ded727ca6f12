"""What one task does with one batch of files: analyse it, or scale and store it.

These functions run inside Dask workers (or plain loops); they take and return small,
picklable values, catch every per-file failure, and record it instead of raising. What a
batch writes is a dict of per-clip values named after the arrays of
:mod:`pipeline.schema`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline import store
from pipeline.audio import describe_error, read_clip
from pipeline.config import SpectrogramConfig
from pipeline.discover import join, utf8_safe
from pipeline.errors import NonFiniteFeaturesError, StoreError
from pipeline.features import log_mel
from pipeline.lock import Claim
from pipeline.plan import Batch
from pipeline.scaling import scale_to_uint8
from pipeline.schema import FAILED_PIXEL, Step
from pipeline.stats import Extrema, Range

logger = logging.getLogger(__name__)

MAX_REPORTED_FAILURES = 10


@dataclass(frozen=True)
class Analysis:
    """One batch analysed: the log-mels of the files that gave a clip, and the values of
    the arrays written once files are analysed (``valid``, ``errors``, ``file_min``,
    ``file_max``)."""

    logmel: np.ndarray  # (n_valid, n_mels, n_frames) float32
    values: dict[str, Any]

    def all_rows(self) -> np.ndarray:
        """The log-mels with a NaN image in each failed row, one row per file."""
        valid = self.values["valid"]
        if valid.all():  # the common case: no copy of the batch's log-mels
            return self.logmel
        rows = np.full((len(valid), *self.logmel.shape[1:]), np.nan, dtype=np.float32)
        rows[valid] = self.logmel
        return rows


def analyse(root: str, paths: Sequence[str], config: SpectrogramConfig) -> Analysis:
    """Decode, fit and analyse the files ``root/paths``; failures are recorded, not raised.

    A file whose log-mel is not finite (float samples so large that the power overflows)
    fails too: its values would otherwise turn into NaN statistics and blank images.
    """
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
    logmel = log_mel(clips[valid], **config.librosa_kwargs, eps=config.eps)
    finite = np.isfinite(logmel).all(axis=(1, 2))
    if not finite.all():
        overflowing = np.flatnonzero(valid)[~finite]
        for i in overflowing:
            peak = float(np.abs(clips[i]).max())
            errors[i] = describe_error(
                NonFiniteFeaturesError(
                    f"the log-mel is not finite: samples reach {peak:.3g}, far outside "
                    "[-1, 1], and overflow the power spectrum"
                )
            )
        valid[overflowing] = False
        logmel = logmel[finite]
    file_min = np.full(len(paths), np.nan, dtype=np.float32)
    file_max = np.full(len(paths), np.nan, dtype=np.float32)
    if len(logmel):
        file_min[valid] = logmel.min(axis=(1, 2))
        file_max[valid] = logmel.max(axis=(1, 2))
    values = {"valid": valid, "errors": errors, "file_min": file_min, "file_max": file_max}
    return Analysis(logmel, values)


def statistics_batch(
    paths: Sequence[str],
    batch: Batch,
    *,
    root: str,
    config: SpectrogramConfig,
    claim: Claim | None = None,
) -> Extrema:
    """Pass 1: the statistics of one batch; with ``claim``, its log-mels and analysed
    values are also kept in the store's scratch array for pass 2."""
    result = analyse(root, paths, config)
    if claim is not None:
        store.write_scratch(claim, batch, result.all_rows(), result.values)
    return Extrema.from_files(result.values["file_min"], result.values["file_max"])


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
        cls, start: int, values: Mapping[str, Any], config: SpectrogramConfig
    ) -> WriteSummary:
        """The summary of rows ``start, start + 1, ...``, written now or by an earlier run."""
        paths, errors = values["paths"], values["errors"]
        failures = [Failure(start + i, utf8_safe(paths[i]), e) for i, e in enumerate(errors) if e]
        n_valid = len(paths) - len(failures)
        return cls(
            n_files=len(paths),
            n_valid=n_valid,
            n_clipped=int(np.sum(values["clipped"], dtype=np.int64)),
            n_pixels=n_valid * config.n_mels * config.n_frames,
            failures=tuple(failures[:MAX_REPORTED_FAILURES]),
        )


def images_batch(
    paths: Sequence[str],
    batch: Batch,
    *,
    root: str,
    config: SpectrogramConfig,
    scale: Range,
    claim: Claim,
    from_scratch: bool = False,
) -> WriteSummary:
    """Pass 2: one batch's log-mels, read from the scratch array or computed again,
    scaled to images and written as the batch's rows of the store."""
    if from_scratch:
        rows, values = store.read_scratch(claim, batch)
        logmel = rows[values["valid"]]
        if not np.isfinite(logmel).all():
            raise StoreError(
                f"Store {claim.url!r} holds damaged pass-1 log-mels for rows {batch.start}-"
                f"{batch.stop - 1}. Run again with --overwrite."
            )
        steps = [Step.IMAGES]
    else:
        result = analyse(root, paths, config)
        logmel, values = result.logmel, result.values
        steps = [Step.ANALYSIS, Step.IMAGES]
    valid = values["valid"]
    images = np.full((len(paths), *config.image_shape), FAILED_PIXEL, dtype=np.uint8)
    scaled, n_clipped = scale_to_uint8(logmel, scale)
    images[valid] = scaled
    clipped = np.zeros(len(paths), dtype=np.uint32)
    clipped[valid] = n_clipped
    values = {**values, "images": images, "clipped": clipped, "paths": np.asarray(paths, object)}
    store.write(claim, batch, values, steps)
    return WriteSummary.of_rows(batch.start, values, config)
