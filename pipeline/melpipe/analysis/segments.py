"""Which windows of a recording become clips: pure arithmetic on sample counts and levels.

A file of ``n_audio`` samples (at the target rate, after resampling) is cut into windows of
``n_samples`` samples starting every ``segment_hop`` samples (``--segments all``), or gives
one window at its start (``--segments first``, the default). Windows that reach past the
end are zero-padded; with ``--tail drop`` only the windows that lie wholly inside the audio
are kept, except that a file shorter than one clip always gives one padded clip.

Then, per file, the windows quieter than ``--min-level-db`` are dropped, and at most
``--max-clips-per-file`` of the rest are kept: the first ones, the loudest ones (ties to
the earlier window), or ones spread evenly from the first to the last. Kept windows stay
in time order. When the choice does not depend on levels it is made from the file's
length alone, before any audio is decoded (:func:`candidate_starts`); otherwise every
window is analysed and :func:`choose` picks from their levels.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from melpipe.analysis import features
from melpipe.analysis.config import SpectrogramConfig

SILENCE_DB = -200.0  # the level recorded for digital silence, whose RMS is 0


def window_starts(n_audio: int, config: SpectrogramConfig) -> np.ndarray:
    """Start samples of every window of a file of ``n_audio`` samples, int64."""
    n, hop = config.n_samples, config.segment_hop
    if config.segments == "first" or n_audio <= n:
        return np.zeros(1, dtype=np.int64)
    whole = (n_audio - n) // hop + 1  # windows that end inside the audio
    starts = np.arange(whole, dtype=np.int64) * hop
    following = whole * hop  # the first window that would reach past the end
    if config.tail == "pad" and starts[-1] + n < n_audio and following < n_audio:
        starts = np.append(starts, following)
    return starts


def spread(count: int, keep: int) -> np.ndarray:
    """Indices of ``keep`` of ``count`` items, evenly spaced from the first to the last."""
    if keep >= count:
        return np.arange(count)
    return np.round(np.linspace(0, count - 1, keep)).astype(np.int64)


def candidate_starts(n_audio: int, config: SpectrogramConfig) -> np.ndarray:
    """The windows of a file that are analysed: all of them, or, when the choice of
    clips does not depend on levels, only the ones that will be kept."""
    starts = window_starts(n_audio, config)
    k = config.max_clips_per_file
    if k is None or config.needs_levels:
        return starts
    return starts[:k] if config.select == "first" else starts[spread(len(starts), k)]


def choose(levels: np.ndarray, config: SpectrogramConfig) -> np.ndarray:
    """Indices, in time order, of the windows of one file that become clips, given the
    RMS levels in dB of its candidate windows (in time order)."""
    kept = np.arange(len(levels))
    if config.min_level_db is not None:
        kept = kept[levels >= config.min_level_db]
    k = config.max_clips_per_file
    if k is None or len(kept) <= k:
        return kept
    if config.select == "loudest":
        # A stable sort on minus the level: of equal levels, the earlier window wins.
        loudest = np.argsort(-levels[kept], kind="stable")[:k]
        return np.sort(kept[loudest])
    if config.select == "spread":
        return kept[spread(len(kept), k)]
    return kept[:k]


def loud_enough(levels: np.ndarray, config: SpectrogramConfig) -> np.ndarray:
    """Which windows are at least ``--min-level-db`` loud (all, without it)."""
    if config.min_level_db is None:
        return np.ones(len(levels), dtype=bool)
    return np.asarray(levels) >= config.min_level_db


def audio_frames(n_audio: int, starts: np.ndarray, config: SpectrogramConfig) -> np.ndarray:
    """How many frames of each window hold audio, int64: frame ``t`` of a window does when
    its centre, sample ``t * hop_length`` of the window for centred frames (later by
    ``Analysis.centre_offset`` for the other paddings), lies inside the ``n_audio``
    samples of the file, before any zero-padding. They are always the window's first
    frames."""
    inside = np.clip(n_audio - np.asarray(starts, np.int64), 0, config.n_samples)
    offset = features.centre_offset(config)
    if offset == 0:
        return np.minimum(-(-inside // config.hop_length), config.n_frames)
    count = np.ceil((inside - offset) / config.hop_length).astype(np.int64)
    return np.clip(count, 0, config.n_frames)


def rms_db(clips: np.ndarray) -> np.ndarray:
    """RMS level in dB relative to full scale, ``20 log10(rms)``, of each row of ``clips``
    (padding included): 0 dB for a full-scale square wave, -3 dB for a full-scale sine,
    :data:`SILENCE_DB` for digital silence."""
    power = np.mean(np.square(clips, dtype=np.float64), axis=-1)
    with np.errstate(divide="ignore"):
        level = 10.0 * np.log10(power)
    return np.maximum(level, SILENCE_DB).astype(np.float32)


def covered_seconds(
    files: np.ndarray, starts: np.ndarray, durations: np.ndarray, length: float
) -> float:
    """Seconds of audio that at least one clip holds, for clips ordered by file, then
    start: clip ``i`` starts ``starts[i]`` seconds into file ``files[i]``, which lasts
    ``durations[files[i]]`` seconds, and holds ``length`` seconds of it (less at the end)."""
    if len(files) == 0:
        return 0.0
    ends = np.minimum(starts + length, durations[files])
    # Within a file, clips are in time order and so are their ends: each clip adds what
    # lies past the end of the one before it.
    same = np.concatenate([[False], files[1:] == files[:-1]])
    previous = np.where(same, np.concatenate([[0.0], ends[:-1]]), 0.0)
    return float(np.sum(np.maximum(ends - np.maximum(starts, previous), 0.0)))


# --- A dataset's windows ------------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """The windows of one file that one task decodes: its row along ``file``, its path
    relative to the input, the windows' start samples, ascending, and the file's peak
    where its samples are to be scaled to ``peak_normalize`` (NaN where not)."""

    file: int
    path: str
    starts: np.ndarray
    peak: float = math.nan


@dataclass(frozen=True)
class Windows:
    """Every window a run analyses, in store order (file, then start): for each, the row
    of its file and its start sample at the target rate; and, with ``peak_normalize``,
    each file's peak where known before its windows are decoded (NaN: measured by the task
    that decodes them)."""

    file: np.ndarray  # int64
    start: np.ndarray  # int64
    peaks: np.ndarray | None = None  # float64, per file

    def __len__(self) -> int:
        return len(self.file)

    @classmethod
    def layout(cls, lengths: Sequence[int | None], config: SpectrogramConfig) -> Windows:
        """The candidate windows of files of ``lengths`` samples at the target rate; a
        file whose length is None (its header could not be read) has none."""
        starts = [
            np.empty(0, np.int64) if n is None else candidate_starts(n, config) for n in lengths
        ]
        counts = np.array([len(s) for s in starts], dtype=np.int64)
        file = np.repeat(np.arange(len(lengths), dtype=np.int64), counts)
        return cls(file, np.concatenate(starts) if starts else np.empty(0, np.int64))

    @classmethod
    def first_of_each(cls, n_files: int) -> Windows:
        """One window at the start of each file: ``--segments first``, no header needed."""
        return cls(np.arange(n_files, dtype=np.int64), np.zeros(n_files, dtype=np.int64))

    def first_rows(self) -> np.ndarray:
        """The row of each file's first window, in file order (files with none left out)."""
        return np.flatnonzero(np.diff(self.file, prepend=-1))

    def with_peaks(self, peaks: np.ndarray) -> Windows:
        return Windows(self.file, self.start, np.asarray(peaks, np.float64))

    def pieces(self, rows: np.ndarray) -> Pieces:
        """The windows at ``rows`` (ascending), grouped by file, without the files' paths
        (:meth:`Pieces.named`)."""
        files = self.file[rows]
        firsts = np.flatnonzero(np.diff(files, prepend=-1)) if len(rows) else np.empty(0, int)
        piece_files = files[firsts].astype(np.int64)
        return Pieces(
            piece_files,
            self.start[rows].astype(np.int64),
            np.append(firsts, len(rows)).astype(np.int64),
            None if self.peaks is None else self.peaks[piece_files],
        )


@dataclass(frozen=True, eq=False)
class Pieces(Sequence[Piece]):
    """The windows of consecutive files that one task decodes, one :class:`Piece` per file,
    kept as a few arrays. A task's pieces travel without their paths, which the task reads
    from the run's listing by file row (:meth:`named`): the client and the scheduler then
    hold no path for it. (As arrays, with 100,000 one-window files: 3.8 MiB in the client
    with the paths, where a list of ``Piece`` objects took 24.5 MiB, and as much again in
    the scheduler, which keeps every task's arguments.)"""

    files: np.ndarray  # int64, the file of each piece
    starts: np.ndarray  # int64, the start samples of every window, piece after piece
    bounds: np.ndarray  # int64, piece i's windows are starts[bounds[i]:bounds[i + 1]]
    peaks: np.ndarray | None = None  # float64, the peak of each piece's file
    paths: tuple[str, ...] = ()  # the path of each piece, once named

    def named(self, paths: Sequence[str]) -> Pieces:
        """These pieces with their files' ``paths``, one per piece."""
        if len(paths) != len(self):
            raise ValueError(f"Expected {len(self)} paths, one per piece. Got {len(paths)}.")
        return dataclasses.replace(self, paths=tuple(paths))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Piece:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        if len(self.paths) != len(self):
            raise ValueError("These pieces have no paths yet: name them first (Pieces.named).")
        i %= len(self)
        peak = math.nan if self.peaks is None else float(self.peaks[i])
        return Piece(int(self.files[i]), self.paths[i],
                     self.starts[self.bounds[i] : self.bounds[i + 1]], peak)  # fmt: skip


def choose_clips(
    windows: Windows, ok: np.ndarray, levels: np.ndarray, config: SpectrogramConfig
) -> np.ndarray:
    """Rows of ``windows`` that become clips, ascending: windows of files that decoded
    (``ok`` is False for every window of a file that did not), chosen by :func:`choose`
    from their levels."""
    keep = ok & loud_enough(levels, config)
    if config.max_clips_per_file is None or not config.needs_levels:
        return np.flatnonzero(keep)  # the layout already kept at most K of each file
    rows = np.flatnonzero(ok)
    bounds = np.flatnonzero(np.diff(windows.file[rows])) + 1
    chosen = [group[choose(levels[group], config)] for group in np.split(rows, bounds)]
    return np.concatenate(chosen) if chosen else np.empty(0, np.int64)
