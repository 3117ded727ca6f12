"""What one task does with one batch of windows: analyse it, or scale and store it.

These functions run inside Dask workers (or plain loops); they take and return small,
picklable values, catch every per-file failure, and record it instead of raising. A batch
is a run of consecutive windows, given as :class:`~melpipe.analysis.segments.Piece` values: the
windows of one file each, so a short file is one piece and a long recording is spread
over many batches.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from melpipe.analysis.config import SpectrogramConfig
from melpipe.analysis.features import spectrogram
from melpipe.analysis.scaling import level_counts, levels_of, scale_with_ends
from melpipe.analysis.segments import Piece, audio_frames, loud_enough, rms_db
from melpipe.analysis.stats import LEVELS, PixelStats, Range, held
from melpipe.errors import NonFiniteFeaturesError, StoreError
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
from melpipe.store import zarrstore as store
from melpipe.store.lock import Claim
from melpipe.store.schema import WINDOW_ARRAYS, WINDOW_PREFIX, ArraySpec, Batch

logger = logging.getLogger(__name__)

MAX_REPORTED_FAILURES = 10


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
    """A survey task's files, by path relative to the input."""

    paths: tuple[str, ...]


@dataclass(frozen=True)
class AnalysisItem:
    """A pass-1 task: one batch of windows, the rows of its chunk, as pieces of files."""

    batch: Batch
    pieces: Sequence[Piece]


@dataclass(frozen=True)
class RecountItem:
    """A task that counts again the pixels of windows pass 1 analysed: their rows in the
    run, what pass 1 found of them, and their pieces (none where the scratch array holds
    their log-mels)."""

    windows: np.ndarray
    found: WindowResults
    pieces: Sequence[Piece] = ()


@dataclass(frozen=True)
class ImagesItem:
    """A pass-2 task: one batch of clips, the rows of its chunk, with the rows of their
    windows in the run, what pass 1 found of them, whether to write the batch (a resumed
    run only summarises those it wrote before) and their pieces (as for
    :class:`RecountItem`)."""

    batch: Batch
    windows: np.ndarray
    found: WindowResults
    write: bool
    pieces: Sequence[Piece] = ()


@dataclass(frozen=True)
class Analysis:
    """Consecutive windows analysed: the log-mels of those that decoded, and what pass 1
    keeps of each window."""

    logmel: np.ndarray  # (n_ok, n_mels, n_frames) float32
    windows: WindowResults


def analyse(root: str, pieces: Sequence[Piece], config: SpectrogramConfig) -> Analysis:
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
    windows = WindowResults(ok, level, lows, highs, frames, audio_max, size, modified, files)
    return Analysis(logmel, windows)


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


@dataclass(frozen=True)
class WindowResults:
    """Pass 1's findings over consecutive windows, merged in window order: per window
    whether it decoded, its level, log-mel extrema, frames that hold audio and the
    greatest value over them; per file what decoding it found; and the statistics of the
    pixels of the windows that were loud enough to be counted (:func:`statistics_batch`)."""

    ok: np.ndarray
    level: np.ndarray
    min: np.ndarray
    max: np.ndarray
    frames: np.ndarray
    audio_max: np.ndarray
    size: np.ndarray  # of the window's file, and when it was last modified, as read
    modified: np.ndarray
    files: dict[int, FileInfo] = field(default_factory=dict)
    pixels: PixelStats = field(default_factory=PixelStats)

    def counted(self, config: SpectrogramConfig) -> np.ndarray:
        """The windows whose pixels ``pixels`` counts: those that decoded in their task
        and are loud enough."""
        return self.ok & loud_enough(self.level, config)

    def window_values(self) -> dict[str, np.ndarray]:
        """The run state's window arrays, for resuming after pass 1."""
        return {spec.name: getattr(self, _field(spec)) for spec in WINDOW_ARRAYS}

    @classmethod
    def from_values(cls, values: Mapping[str, np.ndarray]) -> WindowResults:
        """What :meth:`window_values` gave, read back (without files or pixels)."""
        fields: dict[str, Any] = {_field(spec): values[spec.name] for spec in WINDOW_ARRAYS}
        return cls(**fields)

    def merge(self, other: WindowResults) -> WindowResults:
        files = dict(self.files)
        for f, record in other.files.items():
            # A file split over tasks failed if any of them failed; the first reason stays.
            if f not in files or (record.error and not files[f].error):
                files[f] = record
        joined = {name: np.concatenate([getattr(self, name), getattr(other, name)])
                  for name in _WINDOW_FIELDS}  # fmt: skip
        return WindowResults(**joined, files=files, pixels=self.pixels.merge(other.pixels))

    def take(self, rows: np.ndarray) -> WindowResults:
        """The values of the windows at ``rows`` (without files or pixels)."""
        return WindowResults(**{name: getattr(self, name)[rows] for name in _WINDOW_FIELDS})

    @classmethod
    def empty(cls) -> WindowResults:
        none: dict[str, Any] = {_field(spec): np.empty(0, spec.dtype) for spec in WINDOW_ARRAYS}
        return cls(**none)


def _field(spec: ArraySpec) -> str:
    """The field of :class:`WindowResults` that a window array of the run state holds:
    ``window_level`` holds ``level``."""
    return spec.name.removeprefix(WINDOW_PREFIX)


_WINDOW_FIELDS = tuple(_field(spec) for spec in WINDOW_ARRAYS)


@retried
def statistics_batch(item: AnalysisItem, run: RunContext) -> WindowResults:
    """Pass 1 over one batch of windows: what choosing the clips and their statistics
    need; with ``run.scratch``, the log-mels are also kept in the store for pass 2."""
    result = analyse(run.root, item.pieces, run.config)
    if run.scratch:
        store.write_scratch(run.claim, item.batch, _all_rows(result))
    windows = result.windows
    counted = windows.counted(run.config)[windows.ok]
    logmel = result.logmel if counted.all() else result.logmel[counted]
    frames = windows.frames[windows.ok][counted]
    pixels = PixelStats.of(logmel, frames, run.config.log_floor)
    return dataclasses.replace(windows, pixels=pixels)


def _all_rows(result: Analysis) -> np.ndarray:
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
    logmel = _logmels(item.pieces, item.windows, item.found, run)
    return PixelStats.of(logmel, item.found.frames, run.config.log_floor)


def _logmels(
    pieces: Sequence[Piece], windows: np.ndarray, found: WindowResults, run: RunContext
) -> np.ndarray:
    """The log-mels of windows that pass 1 analysed, from the scratch array or again; a
    file decoded again must be the one pass 1 read (:func:`_check_same`)."""
    if run.scratch:
        logmel = store.read_scratch(run.claim, windows)
        if not np.isfinite(logmel).all():
            raise StoreError(
                f"Store {run.claim.url!r} holds damaged pass-1 log-mels for windows "
                f"{windows[0]}-{windows[-1]}. Run again with `overwrite=True`."
            )
        return logmel
    result = analyse(run.root, pieces, run.config)
    if not result.windows.ok.all():
        failed = next(r for r in result.windows.files.values() if r.error)
        raise StoreError(
            f"A file that decoded in pass 1 no longer does ({failed.error}): the input "
            "changed during the run. Run again with `overwrite=True`."
        )
    _check_same(pieces, found, result.windows)
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


@dataclass(frozen=True)
class Headers:
    """What the headers of consecutive files say, in file order: the survey's results."""

    files: tuple[FileInfo, ...] = ()

    @classmethod
    def empty(cls) -> Headers:
        return cls()

    def merge(self, other: Headers) -> Headers:
        return Headers(self.files + other.files)


@retried
def survey_batch(item: SurveyItem, run: RunContext) -> Headers:
    """What the headers of some files say, for laying out their windows
    (``--segments all``): each checked to hold the length it declares."""
    return Headers(tuple(read_header(join(run.root, rel), whole=True) for rel in item.paths))


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


@dataclass(frozen=True)
class WholeFiles:
    """What reading files whole found, by row."""

    files: Mapping[int, WholeFile] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> WholeFiles:
        return cls()

    def merge(self, other: WholeFiles) -> WholeFiles:
        return WholeFiles({**self.files, **other.files})


@retried
def whole_batch(item: WholeItem, run: RunContext) -> WholeFiles:
    """Read each file of ``item`` whole for what it needs (:class:`WholeItem`); a file
    that fails is recorded, not raised."""
    found = {}
    needs = zip(item.files, item.locations, item.digest, item.samples, item.peak, strict=True)
    for row, location, digest, samples, peak in needs:
        try:
            found[row] = read_whole(location, digest, samples, peak, run.config.sample_rate)
        except Exception as exc:  # one unreadable file must never stop the run
            if transient(exc):
                raise
            found[row] = WholeFile(error=describe_error(exc))
    return WholeFiles(found)


@dataclass(frozen=True, eq=False)
class FileValues:
    """The file arrays but ``path`` and the clip counts: what the survey, pass 1 and the
    files read whole found of each file. A file decoded when its header could be read
    and all its windows decoded; otherwise ``error`` says why not."""

    decoded: np.ndarray  # bool
    error: np.ndarray  # str (object)
    duration: np.ndarray  # seconds, NaN where unknown
    frames: np.ndarray  # int64, 0 where unknown
    sample_rate: np.ndarray  # int64, 0 where unknown
    channels: np.ndarray  # int64, 0 where unknown
    size: np.ndarray  # int64 bytes, 0 where unknown
    peak: np.ndarray  # float64, NaN where not measured (without peak_normalize)
    pcm_format: np.ndarray  # str (object), "" where not PCM
    pcm_md5: np.ndarray  # str (object), "" where not known
    bytes_sha256: np.ndarray  # str (object), "" where not read
    probe: np.ndarray  # int64, what its first window gave (duplicates.probe_of); 0: none
    duplicate_of: np.ndarray  # int64, -1 where none

    @classmethod
    def of(
        cls,
        n_files: int,
        surveyed: Sequence[FileInfo] | None,
        records: Mapping[int, FileInfo],
        peaks: np.ndarray | None = None,
    ) -> FileValues:
        """What the survey (``surveyed``, each file's header, if it ran) and pass 1
        (``records``, by file) found, and the ``peaks`` measured before pass 1 (NaN for
        the files whose task measured theirs)."""
        values: dict[str, Any] = {
            "error": np.full(n_files, "", dtype=object), "duration": np.full(n_files, np.nan),
            "frames": np.zeros(n_files, np.int64), "sample_rate": np.zeros(n_files, np.int64),
            "channels": np.zeros(n_files, np.int64), "size": np.zeros(n_files, np.int64),
            "peak": np.full(n_files, np.nan), "pcm_format": np.full(n_files, "", dtype=object),
            "pcm_md5": np.full(n_files, "", dtype=object),
            "bytes_sha256": np.full(n_files, "", dtype=object),
            "probe": np.zeros(n_files, np.int64),
            "duplicate_of": np.full(n_files, -1, np.int64),
        }  # fmt: skip
        # Pass 1's findings after the survey's: its header is the later reading, and a
        # failure in either fails the file.
        for i, info in [*enumerate(surveyed or ()), *records.items()]:
            if info.readable:
                for name in ("frames", "sample_rate", "channels", "size", "pcm_format",
                             "pcm_md5"):  # fmt: skip
                    values[name][i] = getattr(info, name)
                values["duration"][i] = info.duration
            if not math.isnan(info.peak):
                values["peak"][i] = info.peak
            values["error"][i] = values["error"][i] or info.error
        if peaks is not None:
            values["peak"] = np.where(np.isnan(peaks), values["peak"], peaks)
        decoded = (values["error"] == "") & (values["sample_rate"] > 0)
        return cls(decoded=decoded, **values)

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> FileValues:
        """What :meth:`values` gave, read back from a store."""
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{name: np.asarray(values[name]) for name in names})

    def values(self) -> dict[str, np.ndarray]:
        """The store's file arrays of these names."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True, eq=False)
class WriteSummary:
    """Counts over the clips written so far: clipped pixels, and how the pixels that
    hold audio fall on the 256 levels of the ``band-moments`` scale."""

    n_clips: int = 0
    n_low: int = 0  # pixels clipped below the scale's minimum, and above its maximum
    n_high: int = 0
    n_pixels: int = 0
    band_levels: np.ndarray = field(default_factory=lambda: np.zeros(LEVELS, np.int64))

    @property
    def n_clipped(self) -> int:
        return self.n_low + self.n_high

    def merge(self, other: WriteSummary) -> WriteSummary:
        return WriteSummary(
            self.n_clips + other.n_clips,
            self.n_low + other.n_low,
            self.n_high + other.n_high,
            self.n_pixels + other.n_pixels,
            self.band_levels + other.band_levels,
        )

    @classmethod
    def empty(cls) -> WriteSummary:
        return cls()


@retried
def images_batch(item: ImagesItem, run: RunContext) -> WriteSummary:
    """Pass 2: one batch of clips, their log-mels read from the scratch array or computed
    again, scaled to images and, if ``item.write``, written as the batch's chunk of
    ``images`` and ``clipped``."""
    assert run.scale is not None and run.band_scale is not None, "pass 2 has its scales"
    logmel = _logmels(item.pieces, item.windows, item.found, run)
    frames = item.found.frames
    images, low, high = scale_with_ends(logmel, run.scale)
    clipped = low + high
    if item.write:
        store.write(run.claim, item.batch, {"images": images,
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
