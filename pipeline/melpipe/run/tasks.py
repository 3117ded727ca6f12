"""What one task does with one batch of windows: analyse it, or scale and store it.

These functions run inside Dask workers (or plain loops); they take and return small,
picklable values, catch every per-file failure, and record it instead of raising. A batch
is a run of consecutive windows, given as :class:`~melpipe.analysis.segments.Pieces`: the
windows of one file each, so a short file is one piece and a long recording is spread
over many batches. A task reads its files' paths from the run's listing in the store, by
their rows, rather than receiving them.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from melpipe.analysis.config import SpectrogramConfig
from melpipe.analysis.features import spectrogram
from melpipe.analysis.pixels import LEVELS, PixelStats, held
from melpipe.analysis.scaling import level_counts, levels_of, scale_with_ends
from melpipe.analysis.segments import Piece, Pieces, audio_frames, rms_db
from melpipe.analysis.stats import Range
from melpipe.errors import NonFiniteFeaturesError, StoreError
from melpipe.run.results import FileRecords, Headers, WholeFiles, WindowResults, WriteSummary
from melpipe.sources.audio import (
    describe_error,
    read_header,
    read_windows,
    resampled_length,
)
from melpipe.sources.discover import join
from melpipe.sources.headers import FileInfo
from melpipe.sources.pcm import WholeFile, read_whole
from melpipe.sources.retries import retried, transient
from melpipe.store import writer
from melpipe.store.lock import Claim
from melpipe.store.schema import Batch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunContext:
    """What every task of one run shares: where the audio is, the analysis settings, the
    store the run owns (by its claim), and whether pass 1 keeps its log-mels in the
    store's scratch array for the passes after it to read. Pass 2's also holds the scales
    that turn log-mels into levels: the one chosen, and ``band-moments``'s."""

    root: str
    config: SpectrogramConfig
    claim: Claim
    scratch: bool
    scale: Range | None = None
    band_scale: Range | None = None


@dataclass(frozen=True)
class SurveyItem:
    """A survey task's files, by row of the run's listing."""

    files: Batch


@dataclass(frozen=True)
class AnalysisItem:
    """A pass-1 task: one batch of windows, the rows of its chunk, as pieces of files."""

    batch: Batch
    pieces: Pieces


@dataclass(frozen=True)
class RecountItem:
    """A task that counts again the pixels of windows pass 1 analysed: their rows in the
    run, what pass 1 found of them, and their pieces (none where the scratch array holds
    their log-mels)."""

    windows: np.ndarray
    results: WindowResults
    pieces: Pieces | None = None


@dataclass(frozen=True)
class ImagesItem:
    """A pass-2 task: one batch of clips, the rows of its chunk, with the rows of their
    windows in the run, their frames that hold audio, whether to write the batch (a
    resumed run only summarises those it wrote before), and, where the scratch array
    does not hold their log-mels, their pieces and what pass 1 found of them, to decode
    them again and check them (as for :class:`RecountItem`). The scheduler keeps every
    item to the pass's end: nothing more travels than the task needs."""

    batch: Batch
    windows: np.ndarray
    frames: np.ndarray
    write: bool
    pieces: Pieces | None = None
    results: WindowResults | None = None


@dataclass(frozen=True)
class WindowAnalysis:
    """Consecutive windows analysed: the log-mels of those that decoded, and what pass 1
    keeps of each window."""

    logmel: np.ndarray  # (n_ok, n_mels, n_frames) float32
    windows: WindowResults


def analyse(root: str, pieces: Sequence[Piece], config: SpectrogramConfig) -> WindowAnalysis:
    """Decode and analyse the windows of ``pieces``; failures are recorded, not raised.

    A file fails as a whole: if one of its windows cannot be decoded, or has a log-mel
    that is not finite (float samples so large that the power overflows), none of its
    windows here is kept.
    """
    sizes = [len(p.starts) for p in pieces]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    clips = np.zeros((int(offsets[-1]), config.n_samples), dtype=np.float32)
    ok = np.zeros(len(clips), dtype=bool)
    frames = np.zeros(len(clips), dtype=np.int64)
    size, modified = np.zeros(len(clips), np.int64), np.zeros(len(clips), np.float64)
    files: dict[int, FileInfo] = {}
    for piece, lo, hi in zip(pieces, offsets[:-1], offsets[1:], strict=True):
        # A file's peak comes with its windows, from one decoding of the whole file,
        # unless the run measured it before (a file whose windows span several tasks).
        measure = config.peak_normalize is not None and math.isnan(piece.peak)
        try:
            _, header = read_windows(
                join(root, piece.path),
                piece.starts,
                sample_rate=config.sample_rate,
                n_samples=config.n_samples,
                out=clips[lo:hi],
                peak=measure,
            )
            if config.peak_normalize is not None:
                peak = header.peak if measure else piece.peak
                _normalize(clips[lo:hi], peak, config.peak_normalize)
            ok[lo:hi] = True
            files[piece.file] = header
            size[lo:hi], modified[lo:hi] = header.size, header.modified
            n_audio = resampled_length(header.frames, header.sample_rate, config.sample_rate)
            frames[lo:hi] = audio_frames(n_audio, piece.starts, config)
        except Exception as exc:  # one broken file must never stop the run
            if transient(exc):  # the storage's failure, not the file's: the task retries
                raise
            clips[lo:hi] = 0.0
            files[piece.file] = FileInfo(error=describe_error(exc))
            logger.debug("Skipping %s: %s", piece.path, files[piece.file].error)
    analysed = clips if ok.all() else clips[ok]  # the common case: no copy of the batch
    logmel = spectrogram(analysed, config)
    finite = np.isfinite(logmel).all(axis=(1, 2))
    if not finite.all():
        rows = np.flatnonzero(ok)
        for i in rows[~finite]:
            _fail_overflow(pieces, offsets, clips, int(i), files, ok)
        logmel = logmel[ok[rows]]
    frames[~ok] = 0
    nan = np.full(len(ok), np.nan, dtype=np.float32)
    lows, highs, audio_max = nan.copy(), nan.copy(), nan.copy()
    if len(logmel):
        lows[ok] = logmel.min(axis=(1, 2))
        highs[ok] = logmel.max(axis=(1, 2))
        audio_max[ok] = _audio_max(logmel, frames[ok], highs[ok])
    level = np.where(ok, rms_db(clips), np.float32(np.nan)).astype(np.float32)
    windows = WindowResults(ok, level, lows, highs, frames, audio_max, size, modified,
                            FileRecords.of(files))  # fmt: skip
    return WindowAnalysis(logmel, windows)


def _normalize(clips: np.ndarray, peak: float, target: float) -> None:
    """Scale a file's windows so that its ``peak`` is ``target``, in float32 as
    ``librosa.util.normalize(y) * target`` does; a silent file stays silent."""
    if not math.isfinite(peak):
        raise ValueError("its peak could not be measured")
    if peak > 0:
        clips /= np.float32(peak)
        clips *= np.float32(target)


def _fail_overflow(
    pieces: Sequence[Piece],
    offsets: np.ndarray,
    clips: np.ndarray,
    row: int,
    files: dict[int, FileInfo],
    ok: np.ndarray,
) -> None:
    """Fail the file of window ``row``, whose log-mel is not finite, and all its windows."""
    k = int(np.searchsorted(offsets, row, side="right")) - 1
    peak = float(np.abs(clips[offsets[k] : offsets[k + 1]]).max())
    reason = describe_error(
        NonFiniteFeaturesError(
            f"the log-mel is not finite: samples reach {peak:.3g}, far outside [-1, 1], "
            "and overflow the power spectrum"
        )
    )
    files[pieces[k].file] = dataclasses.replace(files[pieces[k].file], error=reason)
    ok[offsets[k] : offsets[k + 1]] = False


def _audio_max(logmel: np.ndarray, frames: np.ndarray, highs: np.ndarray) -> np.ndarray:
    """Per clip, the greatest value over the frames that hold audio (NaN where none do)."""
    result = highs.copy()
    for i in np.flatnonzero(frames < logmel.shape[-1]).tolist():
        result[i] = logmel[i, :, : frames[i]].max() if frames[i] else np.nan
    return result


@retried
def statistics_batch(item: AnalysisItem, run: RunContext) -> PixelStats:
    """Pass 1 over one batch of windows: what choosing the clips needs, written to the
    store (:func:`melpipe.store.writer.write_pass_1`), and the statistics of its pixels,
    returned; with ``run.scratch``, the log-mels are also kept in the store for pass 2."""
    result = analyse(run.root, _named(item.pieces, run), run.config)
    if run.scratch:
        writer.write_scratch(run.claim, item.batch, _all_rows(result))
    windows = result.windows
    writer.write_pass_1(run.claim, item.batch, windows.to_bytes())
    counted = windows.counted(run.config)[windows.ok]
    logmel = result.logmel if counted.all() else result.logmel[counted]
    frames = windows.frames[windows.ok][counted]
    return PixelStats.of(logmel, frames, run.config.log_floor)


def _all_rows(result: WindowAnalysis) -> np.ndarray:
    """The log-mels with a NaN image in each window that failed, one row per window."""
    ok = result.windows.ok
    if ok.all():  # the common case: no copy of the batch's log-mels
        return result.logmel
    rows = np.full((len(ok), *result.logmel.shape[1:]), np.nan, dtype=np.float32)
    rows[ok] = result.logmel
    return rows


@retried
def pixels_batch(item: RecountItem, run: RunContext) -> PixelStats:
    """The pixel statistics of some windows whose log-mels pass 1 computed: read from the
    scratch array, or computed again. The run uses it to correct what pass 1 counted (see
    :mod:`melpipe.run.runner`)."""
    logmel = _logmels(item.pieces, item.windows, item.results, run)
    return PixelStats.of(logmel, item.results.frames, run.config.log_floor)


def _named(pieces: Pieces, run: RunContext) -> Pieces:
    """``pieces`` with their files' paths, read from the run's listing."""
    return pieces.named(writer.read_listing(run.claim, pieces.files))


def _logmels(
    pieces: Pieces | None, windows: np.ndarray, before: WindowResults | None, run: RunContext
) -> np.ndarray:
    """The log-mels of windows that pass 1 analysed, from the scratch array or again; a
    file decoded again must be the one pass 1 read (:func:`_check_same`)."""
    if run.scratch:
        logmel = writer.read_scratch(run.claim, windows)
        if not np.isfinite(logmel).all():
            raise StoreError(
                f"Store {run.claim.url!r} holds damaged pass-1 log-mels for windows "
                f"{windows[0]}-{windows[-1]}. Run again with `overwrite=True`."
            )
        return logmel
    assert pieces is not None and before is not None, "without the scratch array, a task "
    "decodes its windows again, and checks them against what pass 1 found"
    pieces = _named(pieces, run)
    result = analyse(run.root, pieces, run.config)
    if not result.windows.ok.all():
        assert result.windows.files is not None  # analyse gives every file's record
        reason = result.windows.files.first_error()
        raise StoreError(
            f"A file that decoded in pass 1 no longer does ({reason}): the input "
            "changed during the run. Run again with `overwrite=True`."
        )
    _check_same(pieces, before, result.windows)
    return result.logmel


def _check_same(pieces: Sequence[Piece], before: WindowResults, now: WindowResults) -> None:
    """Refuse windows decoded again from a file that changed since pass 1: its size or
    modification time, or what its samples gave (level and log-mel extrema, which the
    same samples reproduce bit for bit), differ. The images would come from the new audio
    and their statistics from the old: never a silent mix."""
    values = ("size", "modified", "level", "min", "max")
    same = np.logical_and.reduce([getattr(before, v) == getattr(now, v) for v in values])
    if same.all():
        return
    first = int(np.flatnonzero(~same)[0])
    bounds = np.cumsum([len(p.starts) for p in pieces])
    path = pieces[int(np.searchsorted(bounds, first, side="right"))].path
    raise StoreError(
        f"{path!r} changed after pass 1 read it (its size, time or samples differ): the "
        "input changed during the run. Run again with `overwrite=True`."
    )


@retried
def survey_batch(item: SurveyItem, run: RunContext) -> Headers:
    """What the headers of some files say, for laying out their windows
    (``--segments all``): each checked to hold the length it declares."""
    paths = writer.read_listing(run.claim, np.arange(item.files.start, item.files.stop))
    return Headers(tuple(read_header(join(run.root, rel), whole=True) for rel in paths))


@dataclass(frozen=True)
class WholeItem:
    """A task that reads some files whole: their rows in the store, where they are, and
    for each what it needs: the SHA-256 of its bytes, the MD5 of its PCM samples (for
    duplicates), its peak at the store's rate (for ``peak_normalize``)."""

    files: tuple[int, ...]
    locations: tuple[str, ...]
    digest: tuple[bool, ...]
    samples: tuple[bool, ...]
    peak: tuple[bool, ...]


@retried
def whole_batch(item: WholeItem, run: RunContext) -> WholeFiles:
    """Read each file of ``item`` whole for what it needs (:class:`WholeItem`); a file
    that fails is recorded, not raised."""
    read = {}
    needs = zip(item.files, item.locations, item.digest, item.samples, item.peak, strict=True)
    for row, location, digest, samples, peak in needs:
        try:
            read[row] = read_whole(location, digest, samples, peak, run.config.sample_rate)
        except Exception as exc:  # one unreadable file must never stop the run
            if transient(exc):
                raise
            read[row] = WholeFile(error=describe_error(exc))
    return WholeFiles(read)


@retried
def images_batch(item: ImagesItem, run: RunContext) -> WriteSummary:
    """Pass 2: one batch of clips, their log-mels read from the scratch array or computed
    again, scaled to images and, if ``item.write``, written as the batch's chunk of
    ``images`` and ``clipped``."""
    assert run.scale is not None and run.band_scale is not None, "pass 2 has its scales"
    logmel = _logmels(item.pieces, item.windows, item.results, run)
    frames = item.frames
    images, low, high = scale_with_ends(logmel, run.scale)
    clipped = low + high
    if item.write:
        writer.write(run.claim, item.batch, {"images": images,
                                            "clipped": clipped.astype(np.uint32)})  # fmt: skip
    if run.band_scale == run.scale:
        band_levels = level_counts(held(images, frames))
    else:
        band_levels = np.bincount(held(levels_of(logmel, run.band_scale), frames).ravel(),
                                  minlength=LEVELS)  # fmt: skip
    return WriteSummary(
        n_clips=len(clipped),
        n_low=int(np.sum(low, dtype=np.int64)),
        n_high=int(np.sum(high, dtype=np.int64)),
        n_pixels=len(clipped) * run.config.n_bands * run.config.n_frames,
        band_levels=band_levels.astype(np.int64),
    )
