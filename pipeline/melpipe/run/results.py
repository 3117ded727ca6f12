"""What a run's tasks return: values of one mergeable kind per pass, which the executor
reduces as a tree in item order (:mod:`melpipe.analysis.stats`' ``Mergeable``), and what
the run makes of them per file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from melpipe.analysis.config import SpectrogramConfig
from melpipe.analysis.pixels import LEVELS, PixelStats
from melpipe.analysis.segments import loud_enough
from melpipe.sources.headers import FileInfo
from melpipe.sources.pcm import WholeFile
from melpipe.store.schema import WINDOW_ARRAYS, WINDOW_PREFIX, ArraySpec

MAX_REPORTED_FAILURES = 10


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
    # None where the values were taken apart from the files (:meth:`take`): a task's
    # arguments carry no empty columns
    files: FileRecords | None = None
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
        joined = {name: np.concatenate([getattr(self, name), getattr(other, name)])
                  for name in _WINDOW_FIELDS}  # fmt: skip
        files = _merged(self.files, other.files)
        return WindowResults(**joined, files=files, pixels=self.pixels.merge(other.pixels))

    def take(self, rows: np.ndarray) -> WindowResults:
        """The values of the windows at ``rows`` (without files or pixels)."""
        return WindowResults(**{name: getattr(self, name)[rows] for name in _WINDOW_FIELDS})

    @classmethod
    def empty(cls) -> WindowResults:
        none: dict[str, Any] = {_field(spec): np.empty(0, spec.dtype) for spec in WINDOW_ARRAYS}
        return cls(**none)

    def to_bytes(self) -> bytes:
        """The windows' and files' values (not the pixels) as one object for the store:
        a JSON header of each column's dtype and length, then the columns' bytes. Nothing
        is unpickled reading it back, and it reads back in tens of microseconds (NumPy's
        ``.npz`` took 1.3 ms per batch: 2 s of the client's time for 100,000 files)."""
        files = self.files if self.files is not None else FileRecords.empty()
        columns = [getattr(self, name) for name in _WINDOW_FIELDS]
        columns += [getattr(files, name) for name in _FILE_FIELDS[:-1]]
        columns.append(np.array(files.error.tolist(), dtype=str))  # text, not objects
        columns = [np.ascontiguousarray(c) for c in columns]
        header = json.dumps([[c.dtype.str, len(c)] for c in columns]).encode()
        return b"".join([len(header).to_bytes(4, "little"), header,
                         *(c.tobytes() for c in columns)])  # fmt: skip

    @classmethod
    def from_bytes(cls, found: bytes) -> WindowResults:
        """What :meth:`to_bytes` gave, read back (without pixels)."""
        size = int.from_bytes(found[:4], "little")
        offset, columns = 4 + size, []
        for dtype, length in json.loads(found[4 : 4 + size]):
            column = np.frombuffer(found, np.dtype(dtype), length, offset)
            offset += column.nbytes
            columns.append(column)
        windows: dict[str, Any] = dict(zip(_WINDOW_FIELDS, columns, strict=False))
        files = dict(zip(_FILE_FIELDS, columns[len(_WINDOW_FIELDS) :], strict=True))
        files["error"] = files["error"].astype(object)
        return cls(**windows, files=FileRecords(**files))

    @classmethod
    def joined(cls, parts: Sequence[WindowResults], pixels: PixelStats) -> WindowResults:
        """Consecutive parts as one, in order, with the pixel statistics of them all: what
        merging them gives, with one concatenation per column."""
        if not parts:
            return dataclasses.replace(cls.empty(), pixels=pixels)
        columns = {name: np.concatenate([getattr(p, name) for p in parts])
                   for name in _WINDOW_FIELDS}  # fmt: skip
        records = [p.files for p in parts if p.files is not None]
        files = FileRecords.concatenated(records) if records else None
        return cls(**columns, files=files, pixels=pixels)


@dataclass(frozen=True, eq=False)
class FileRecords:
    """What pass 1's tasks read of their files, as columns: one row per file and task, in
    window order (a file whose windows span tasks has a row from each task).

    Columns rather than a record per file: with 100,000 files a dict of slotted
    ``FileInfo`` took 270 bytes per file in the client and 69 pickled on its way there;
    these arrays take about 90, and merging them is a concatenation.
    """

    file: np.ndarray  # int64
    frames: np.ndarray  # int64, and the next three: 0 where the header was not read
    sample_rate: np.ndarray
    channels: np.ndarray
    size: np.ndarray
    peak: np.ndarray  # float64, NaN where not measured
    pcm_format: np.ndarray  # bytes (numpy "S"): a handful of names, b"" for none
    pcm_md5: np.ndarray  # bytes (numpy "S"): hex, b"" where not known
    error: np.ndarray  # object: str, "" for a file that decoded

    @classmethod
    def of(cls, records: Mapping[int, FileInfo]) -> FileRecords:
        """One task's records, by file."""
        infos = list(records.values())

        def column(name: str, dtype: Any) -> np.ndarray:
            return np.array([getattr(r, name) for r in infos], dtype=dtype)

        return cls(
            np.fromiter(records, np.int64, len(infos)), column("frames", np.int64),
            column("sample_rate", np.int64), column("channels", np.int64),
            column("size", np.int64), column("peak", np.float64),
            np.array([r.pcm_format.encode() for r in infos], dtype=bytes),
            np.array([r.pcm_md5.encode() for r in infos], dtype=bytes),
            column("error", object),
        )  # fmt: skip

    @classmethod
    def empty(cls) -> FileRecords:
        return cls.of({})

    def __len__(self) -> int:
        return len(self.file)

    def merge(self, other: FileRecords) -> FileRecords:
        return FileRecords.concatenated([self, other])

    @classmethod
    def concatenated(cls, records: Sequence[FileRecords]) -> FileRecords:
        """Consecutive records as one: each column concatenated once."""
        # numpy's bytes of different widths concatenate to the wider
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{n: np.concatenate([getattr(r, n) for r in records]) for n in names})

    def standing(self) -> np.ndarray:
        """The row that stands for each file, by file: a file split over tasks failed if
        any of them failed, and the first reason stays; else its first row."""
        failed = self.error != ""
        order = np.lexsort((np.arange(len(self)), ~failed, self.file))
        firsts = np.flatnonzero(np.diff(self.file[order], prepend=-1))
        return order[firsts]

    def first_error(self) -> str:
        """The first reason a file failed, or ""."""
        return next((str(e) for e in self.error if e), "")


def _merged(a: FileRecords | None, b: FileRecords | None) -> FileRecords | None:
    return b if a is None else a if b is None else a.merge(b)


def _field(spec: ArraySpec) -> str:
    """The field of :class:`WindowResults` that a window array of the run state holds:
    ``window_level`` holds ``level``."""
    return spec.name.removeprefix(WINDOW_PREFIX)


_WINDOW_FIELDS = tuple(_field(spec) for spec in WINDOW_ARRAYS)
_FILE_FIELDS = tuple(f.name for f in dataclasses.fields(FileRecords))
assert _FILE_FIELDS[-1] == "error", "to_bytes writes the errors last, as text"


@dataclass(frozen=True)
class Headers:
    """What the headers of consecutive files say, in file order: the survey's results."""

    files: tuple[FileInfo, ...] = ()

    @classmethod
    def empty(cls) -> Headers:
        return cls()

    def merge(self, other: Headers) -> Headers:
        return Headers(self.files + other.files)


@dataclass(frozen=True)
class WholeFiles:
    """What reading files whole found, by row."""

    files: Mapping[int, WholeFile] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> WholeFiles:
        return cls()

    def merge(self, other: WholeFiles) -> WholeFiles:
        return WholeFiles({**self.files, **other.files})


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
        records: FileRecords,
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
        for i, info in enumerate(surveyed or ()):
            if info.readable:
                for name in (*_COUNTS, "pcm_format", "pcm_md5"):
                    values[name][i] = getattr(info, name)
                values["duration"][i] = info.duration
            if not math.isnan(info.peak):
                values["peak"][i] = info.peak
            values["error"][i] = values["error"][i] or info.error
        _take_records(values, records)
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


_COUNTS = ("frames", "sample_rate", "channels", "size")


def _take_records(values: dict[str, Any], records: FileRecords) -> None:
    """Set what pass 1's ``records`` say of their files in the file arrays ``values``."""
    rows = records.standing()
    files = records.file[rows]
    readable = records.sample_rate[rows] > 0
    at, read = files[readable], rows[readable]
    for name in _COUNTS:
        values[name][at] = getattr(records, name)[read]
    values["duration"][at] = records.frames[read] / records.sample_rate[read]
    for name in ("pcm_format", "pcm_md5"):  # one str per distinct name, as FileInfo's
        names, which = np.unique(getattr(records, name)[read], return_inverse=True)
        values[name][at] = np.array([sys.intern(n.decode()) for n in names], object)[which]
    peak = records.peak[rows]
    measured = ~np.isnan(peak)
    values["peak"][files[measured]] = peak[measured]
    before = values["error"][files]
    values["error"][files] = np.where(before != "", before, records.error[rows])


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
