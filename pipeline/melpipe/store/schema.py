"""The store's layout, declared once: its arrays and its attributes.

Every array is one :class:`ArraySpec` line in :data:`ARRAYS`: its name, dimensions, dtype,
fill value and the step of a run that writes it. Creating, writing, resuming, opening and
validating a store are all driven from that list, so a new per-clip array is a new line
here plus the task that computes its values.

The group's attributes are one :class:`StoreAttrs` value, written and read by
:mod:`melpipe.records`, which refuses, with a message naming the key, anything this
version cannot read. Pure: no Zarr here (that is the job of :mod:`melpipe.store.writer`
and :mod:`melpipe.store.opened`), so both halves are tested on plain values.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from melpipe import records
from melpipe.analysis.config import SpectrogramConfig
from melpipe.analysis.pixels import histogram_grid
from melpipe.analysis.stats import Figures, GlobalStats, StatsName
from melpipe.errors import RecordError, StoreError
from melpipe.records import flat, key, not_recorded
from melpipe.sources.discover import SkippedFolder

FORMAT = "melpipe"
# 9: duplicates from PCM samples and bytes, read only where another file could be the same:
#    the file arrays frames, size, pcm_format, pcm_md5 and probe, no samples_sha256.
# 8: a table of sources (the run, then each append), each file's source and hashes, the
#    histogram per source.
# 7: every convention of the analysis a config key (presets), each file's peak.
# 6: the product's name, melpipe, in the format and lock file names; every record key required.
# 5: five statistics, a histogram of the pixels that hold audio, each clip's audio frames.
# 4: clips and files as two dimensions (many clips per file), segment options in the config.
# 3: one "stats" attribute, the plan's identity, an owner lock file, every chunk written.
# 2: one chunk per batch, coordinates, consolidated metadata, resume. 1: before coordinates.
FORMAT_VERSION = 9
LOCK_FILE = "melpipe.lock"  # beside the arrays; see melpipe.lock
# Versions 1 to 5 were written under the project's former name, with a lock file of that
# name: such a store is ours to replace, never read as it is (docs/store-format.md).
FORMER_FORMAT = "specpipe"
FORMER_LOCK_FILE = "specpipe.lock"
LOCK_FILES = frozenset({LOCK_FILE, FORMER_LOCK_FILE})
# Rows per chunk of the arrays the client writes whole (files, clips' small values, the
# windows' values): a few large objects, not one tiny object per batch.
ROW_CHUNK = 65536
# Rows per chunk of the run's listing, which each task reads its files' paths from: a
# task's files fall in one or two chunks. Measured on 2 busy cores, reading a task's 64
# paths took about 2 ms from a chunk of 4,096 and 17 ms from one of ROW_CHUNK.
LISTING_CHUNK = 4096

Status = Literal["incomplete", "complete", "failed"]
# The dimensions arrays run along, row by row. A source's row of an array is one chunk of
# its own: an append adds objects, and changes none a reader may be reading.
ROW_DIMS = ("clip", "file", "window", "source", "listed")


class Step(enum.Enum):
    """When a run writes an array, and so how it is chunked."""

    CREATE = "create"  # with the store: coordinates, known from the config alone
    ANALYSIS = "analysis"  # pass 1, per batch of windows, by its task: one chunk each
    CHOSEN = "chosen"  # once pass 1 is done and the clips chosen, by the client, whole
    IMAGES = "images"  # pass 2, per batch of clips, by its task: one chunk each
    LISTED = "listed"  # as the run starts, by the client, a chunk at a time: its listing


@dataclass(frozen=True)
class ArraySpec:
    """One array of the store."""

    name: str
    dims: tuple[str, ...]
    dtype: str  # a numpy dtype name, "str" for UTF-8 text, or "bytes" for any bytes
    fill: Any
    step: Step
    description: str
    units: str | None = None
    compressed: bool = True

    @property
    def rows(self) -> str | None:
        """The row dimension the array runs along (``clip``, ``file`` or ``window``), if
        any; a coordinate has none."""
        return self.dims[0] if self.dims[0] in ROW_DIMS else None

    @property
    def batched(self) -> bool:
        """Written by tasks, one chunk per batch; otherwise by the client, whole."""
        return self.step in (Step.ANALYSIS, Step.IMAGES)


# Clips are ordered by file path, then start time; a file's clips are consecutive.
ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec("images", ("clip", "mel", "frame"), "uint8", 255, Step.IMAGES,
              "the scaled, flipped, inverted log-mel"),
    ArraySpec("file_index", ("clip",), "int64", -1, Step.CHOSEN,
              "the file the clip comes from: its row along the file dimension"),
    ArraySpec("start", ("clip",), "float64", math.nan, Step.CHOSEN,
              "start time of the clip in its file", "s"),
    ArraySpec("start_sample", ("clip",), "int64", -1, Step.CHOSEN,
              "start of the clip in its file, in samples at the store's sample rate"),
    ArraySpec("clip_min", ("clip",), "float32", math.nan, Step.CHOSEN,
              "the clip's log-mel minimum"),
    ArraySpec("clip_max", ("clip",), "float32", math.nan, Step.CHOSEN,
              "the clip's log-mel maximum"),
    ArraySpec("level_db", ("clip",), "float32", math.nan, Step.CHOSEN,
              "RMS level of the clip's samples, 20 log10(rms)", "dBFS"),
    ArraySpec("audio_frames", ("clip",), "int64", -1, Step.CHOSEN,
              "frames of the image that hold audio, its first ones: frame t does when "
              "t * hop_length < the clip's samples of audio (the rest is zero-padding)"),
    ArraySpec("clipped", ("clip",), "uint32", 0, Step.IMAGES,
              "pixels of the image that the scaling clipped"),
    ArraySpec("path", ("file",), "str", "", Step.CHOSEN,
              'the file, relative to the input, "/"-separated'),
    ArraySpec("decoded", ("file",), "bool", False, Step.CHOSEN,
              "whether the file decoded; a file that did not has no clip"),
    ArraySpec("error", ("file",), "str", "", Step.CHOSEN,
              '"", or the reason the file did not decode'),
    ArraySpec("duration", ("file",), "float64", math.nan, Step.CHOSEN,
              "length of the file as found; NaN if its header could not be read", "s"),
    ArraySpec("frames", ("file",), "int64", 0, Step.CHOSEN,
              "length of the file in frames (samples per channel) as its header gives it; 0 "
              "if it could not be read"),
    ArraySpec("sample_rate", ("file",), "int64", 0, Step.CHOSEN,
              "sample rate of the file as found; 0 if its header could not be read", "Hz"),
    ArraySpec("channels", ("file",), "int64", 0, Step.CHOSEN,
              "channels of the file as found; 0 if its header could not be read"),
    ArraySpec("peak", ("file",), "float64", math.nan, Step.CHOSEN,
              "greatest |sample| of the file at the store's rate, which peak_normalize "
              "scaled to its value; NaN where not measured"),
    ArraySpec("source", ("file",), "int64", -1, Step.CHOSEN,
              "the run or append that added the file: its entry in the sources attribute"),
    ArraySpec("size", ("file",), "int64", 0, Step.CHOSEN,
              "size of the file as read; 0 if it could not be opened", "B"),
    ArraySpec("pcm_format", ("file",), "str", "", Step.CHOSEN,
              'the format its samples are hashed in (s8, s16le, s24le, s32le, f32le, f64le) '
              'where they are PCM; "" for a lossy or other encoding'),
    ArraySpec("pcm_md5", ("file",), "str", "", Step.CHOSEN,
              "MD5 of the PCM samples, interleaved, little-endian, as a FLAC's STREAMINFO "
              'holds it; "" where not known (read only where another file had the same '
              "pcm_format, sample rate, channels, frames and probe)"),
    ArraySpec("probe", ("file",), "int64", 0, Step.CHOSEN,
              "the file's first window as pass 1 found it (its level and log-mel extrema, "
              "folded into one integer): files with the same samples or bytes give the same; "
              "0 where it did not decode"),
    ArraySpec("bytes_sha256", ("file",), "str", "", Step.CHOSEN,
              'SHA-256 of the file\'s bytes; "" where not read (read only where another file '
              "had the same size and probe)"),
    ArraySpec("duplicate_of", ("file",), "int64", -1, Step.CHOSEN,
              "the first file (in store order) with the same PCM samples or bytes, or -1: "
              "duplicates share a side of a split"),
    ArraySpec("n_clips", ("file",), "int64", 0, Step.CHOSEN,
              "clips the file gave"),
    ArraySpec("first_clip", ("file",), "int64", 0, Step.CHOSEN,
              "the file's first clip; its clips are first_clip .. first_clip + n_clips - 1"),
    ArraySpec("histogram", ("source", "bin"), "int64", 0, Step.CHOSEN,
              "log-mel values of the pixels that hold audio of each source's clips: bin k "
              "counts (first_bin + k) / bins_per_unit <= value < (first_bin + k + 1) / "
              "bins_per_unit"),
    ArraySpec("mel", ("mel",), "float64", 0.0, Step.CREATE,
              "mel band centre frequency of each image row; row 0 is the highest", "Hz"),
    ArraySpec("frame", ("frame",), "float64", 0.0, Step.CREATE,
              "centre time of each image column", "s"),
)  # fmt: skip
# Written last by pass 2, in every batch: a batch whose chunk of it exists is complete.
MARKER = "clipped"
# While a run lasts, pass 1's results for every analysed window (see docs/design.md).
SCRATCH = ArraySpec("scratch", ("window", "mel", "frame"), "float32", math.nan, Step.ANALYSIS,
                    "pass 1's log-mels, while the run lasts", compressed=False)  # fmt: skip
WINDOW_PREFIX = "window_"  # each names a field of the task's WindowResults after it
WINDOW_ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec("window_ok", ("window",), "bool", False, Step.CHOSEN,
              "whether the window was analysed, while the run lasts"),
    ArraySpec("window_level", ("window",), "float32", math.nan, Step.CHOSEN,
              "the window's RMS level, while the run lasts", "dBFS"),
    ArraySpec("window_min", ("window",), "float32", math.nan, Step.CHOSEN,
              "the window's log-mel minimum, while the run lasts"),
    ArraySpec("window_max", ("window",), "float32", math.nan, Step.CHOSEN,
              "the window's log-mel maximum, while the run lasts"),
    ArraySpec("window_frames", ("window",), "int64", 0, Step.CHOSEN,
              "the window's frames that hold audio, while the run lasts"),
    ArraySpec("window_audio_max", ("window",), "float32", math.nan, Step.CHOSEN,
              "the window's log-mel maximum over frames that hold audio, while the run lasts"),
    ArraySpec("window_size", ("window",), "int64", 0, Step.CHOSEN,
              "the size of the window's file when pass 1 read it, while the run lasts", "B"),
    ArraySpec("window_modified", ("window",), "float64", 0.0, Step.CHOSEN,
              "when the window's file was last modified as pass 1 read it, while the run "
              "lasts", "s"),
)  # fmt: skip
# The paths of the run's files, by their row in the run (an append's first is its own
# row 0): what its tasks read their files' paths from, rather than receiving them.
# Bytes, not text: a file name that is not UTF-8 is kept as it is, to be opened by it.
LISTING = ArraySpec("listing", ("listed",), "bytes", b"", Step.LISTED,
                    "the paths of the run's files, while the run lasts")  # fmt: skip
RUN_STATE = (SCRATCH, *WINDOW_ARRAYS, LISTING)  # removed when the run finishes
# What each pass-1 task found of its windows and files, written by the task as one plain
# object, PASS_1/<batch>, which the client reads back: the values never pass through the
# scheduler, nor a tree of merges on the workers, whose last merge held every window's.
# Not a Zarr array of one chunk per batch: reading those back cost the client 0.5 ms a
# chunk (0.8 s for 100,000 files), the objects themselves 0.05 s in all.
PASS_1 = "pass_1"
BY_NAME = {spec.name: spec for spec in (*ARRAYS, *RUN_STATE)}
# Shown by xarray as coordinates of the clip dimension (CF's "coordinates" attribute).
CLIP_COORDINATES = ("file_index", "start")


def arrays_of(step: Step) -> tuple[ArraySpec, ...]:
    """The arrays a step writes, in writing order: the marker last."""
    chosen = [a for a in (*ARRAYS, *WINDOW_ARRAYS) if a.step is step]
    return tuple(sorted(chosen, key=lambda a: a.name == MARKER))


@dataclass(frozen=True)
class Sizes:
    """The lengths of a store's row dimensions."""

    clips: int
    files: int
    windows: int = 0
    sources: int = 1
    listed: int = 0  # the run's files, in its listing


def shape_of(spec: ArraySpec, sizes: Sizes, config: SpectrogramConfig) -> tuple[int, ...]:
    lengths = {
        "clip": sizes.clips,
        "file": sizes.files,
        "window": sizes.windows,
        "source": sizes.sources,
        "listed": sizes.listed,
        "mel": config.n_bands,
        "frame": config.n_frames,
        "bin": histogram_grid(config.eps)[1],
    }
    return tuple(lengths[d] for d in spec.dims)


def chunks_of(
    spec: ArraySpec, sizes: Sizes, batch_size: int, config: SpectrogramConfig
) -> tuple[int, ...]:
    """One chunk per batch for an array tasks write (fewer rows when the array has fewer),
    :data:`ROW_CHUNK` rows for one the client writes, one row for a source's,
    :data:`LISTING_CHUNK` for the listing; whole along every other dimension."""
    shape = shape_of(spec, sizes, config)
    if spec.rows is None:
        return shape
    if spec.step is Step.LISTED:
        return (LISTING_CHUNK,)
    if not spec.batched:  # fixed, so that an append's rows continue the same chunks
        return (1 if spec.rows == "source" else ROW_CHUNK, *shape[1:])
    return (max(1, min(batch_size, shape[0])), *shape[1:])


def store_entries() -> frozenset[str]:
    """Every top-level name a melpipe store may hold: what ``--overwrite`` may remove."""
    return frozenset({"zarr.json", *LOCK_FILES, *BY_NAME, PASS_1})


@dataclass(frozen=True)
class OutputState:
    """What a location holds, as far as a run must know before it touches it.

    ``kind``: ``absent``; ``leftover`` (only the lock file of a run that stopped before
    creating anything); ``folder`` (anything that is not a Zarr store, or a file);
    ``zarr`` (a Zarr store that is not melpipe's); ``melpipe``; or ``damaged`` (a
    ``zarr.json`` that cannot be read, ``problem`` says why).
    """

    kind: Literal["absent", "leftover", "folder", "zarr", "melpipe", "damaged"]
    entries: tuple[str, ...] = ()
    attrs: dict[str, Any] | None = None
    written: tuple[int, ...] = ()  # batches whose marker chunk exists, for resuming
    problem: str = ""


IMAGE_CONVENTIONS: dict[str, Any] = {
    "dtype": "uint8",
    "flipped": True,
    "inverted": True,
    "row_0": "highest mel band",
    "black": "most energy",
    "scaling": "clip(rint((logmel - min) / (max - min) * 255), 0, 255), flipped, then 255 - x",
    "band_order": "per-band lists of the stats attribute run from the lowest band up",
}


@dataclass(frozen=True)
class StatsSource:
    """The ``stats_from`` store whose statistics a store's are, and its run."""

    store: str = field(metadata=key("from"))
    run_id: str = field(metadata=key("from_run_id"))


@dataclass(frozen=True)
class StatsRecord:
    """What a store records of its statistics.

    ``values`` are every statistic, known once pass 1 is done (or taken from the
    ``stats_from`` store, named in ``source``); ``used`` names the one that scaled the
    images. ``clipped_fraction`` and ``figures`` (how each statistic spends the levels on
    this store's pixels that hold audio) are known when the run completes. The values'
    keys and the source's sit beside the others, as ``stats[stats["used"]]`` reads them.
    """

    values: GlobalStats = field(metadata=flat())
    used: StatsName
    source: StatsSource | None = field(default=None, metadata=flat())
    clipped_fraction: float | None = None
    figures: dict[str, Figures] = field(default_factory=dict)


@dataclass(frozen=True)
class Counts:
    """How many files were found and decoded, and how many clips they gave."""

    files: int
    decoded: int
    clips: int

    @property
    def failed(self) -> int:
        return self.files - self.decoded

    def derived(self) -> dict[str, int]:
        return {"failed": self.failed}


@dataclass(frozen=True)
class SourceRecord:
    """One entry of a store's table of sources: the run that made it, or one append.

    A source added the files ``first_file .. first_file + files - 1`` of ``input`` (and
    their clips, ``first_clip ..``); ``skipped`` files of that input were in the store
    already and were left out, ``duplicates`` repeat an earlier file's samples or bytes
    (``dropped`` of them gave no clip, with ``--duplicates drop``). Of its clips' pixels,
    ``clipped_low`` and ``clipped_high`` fell below and above the store's scale; ``own``
    are the statistics its clips alone give (None where they give none), which tell how
    far the frozen scale is from them.
    """

    action: Literal["run", "append"]
    run_id: str
    created: str
    input: str
    first_file: int
    files: int
    first_clip: int
    clips: int
    skipped: int
    duplicates: int
    dropped: int
    clipped_low: int
    clipped_high: int
    pixels: int
    own: GlobalStats | None


@dataclass(frozen=True)
class StoreAttrs:
    """The group attributes of a melpipe store, typed.

    ``plan`` is the identity of the run that made the store (input, list of files, batch
    size, statistics and their source): a resume must match it exactly. ``run_id`` names
    that run; ``skipped`` lists the input folders that could not be listed. Every key is
    written, null where it has no value yet; ``extra`` keeps a user's own keys as found.
    """

    status: Status
    run_id: str
    created: str
    input: str
    config: SpectrogramConfig
    plan: dict[str, Any]
    versions: dict[str, str]
    skipped: tuple[SkippedFolder, ...] = ()
    stats: StatsRecord | None = None
    counts: Counts | None = None
    failure: str | None = None
    # the run, then each append; and once one appended, every clip's statistics
    sources: tuple[SourceRecord, ...] = ()
    grown: GlobalStats | None = None
    extra: dict[str, Any] = field(default_factory=dict, metadata=not_recorded())

    def derived(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "image": IMAGE_CONVENTIONS}

    def to_dict(self) -> dict[str, Any]:
        return {**self.extra, **records.to_dict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "the store") -> StoreAttrs:
        """Parse recorded attributes; a :class:`StoreError` names what is missing or wrong."""
        if data.get("format") == FORMER_FORMAT:
            raise StoreError(
                f"{where} was written by specpipe, melpipe's former name (format "
                f"{data.get('format_version')!r}); melpipe reads format {FORMAT_VERSION}. Make it "
                f"again: preprocess its input, {data.get('input', '(not recorded)')!r}, to it "
                "with `overwrite=True` and the options its config attribute lists."
            )
        if data.get("format") != FORMAT:
            raise StoreError(
                f"{where} is a Zarr store but not a melpipe store: its 'format' attribute is "
                f"{data.get('format')!r}, not {FORMAT!r}."
            )
        if data.get("format_version") != FORMAT_VERSION:
            raise StoreError(
                f"{where} has melpipe format version {data.get('format_version')!r} (its "
                f"'format_version' attribute); this version of melpipe reads version "
                f"{FORMAT_VERSION}. Make it again: preprocess its input, "
                f"{data.get('input', '(not recorded)')!r}, to it with `overwrite=True` and the "
                "options its config attribute lists (docs/store-format.md, 'Earlier versions')."
            )
        try:
            attrs = records.from_dict(cls, data)
        except RecordError as exc:
            raise RecordError(
                f"{where} has damaged attributes ({exc}). Run preprocess again."
            ) from None
        known = {*records.keys(cls), *attrs.derived()}
        attrs = dataclasses.replace(attrs, extra={k: v for k, v in data.items() if k not in known})
        if attrs.status == "complete" and (
            attrs.stats is None
            or attrs.counts is None
            or attrs.stats.clipped_fraction is None
            or not attrs.sources
        ):
            raise StoreError(
                f"{where} is marked complete but its attributes lack stats, counts or sources."
            )
        return attrs


@dataclass(frozen=True)
class Batch:
    """Rows ``start:stop`` of the store, handled by one task: chunk ``index`` of each array."""

    index: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start
