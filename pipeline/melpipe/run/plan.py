"""The run plan: what a run will do, decided by pure functions before it touches anything.

:func:`make_plan` takes what the user asked for (:class:`Request`) and what was found (the
input listing, the state of OUTPUT, the ``--stats-from`` store, the executor's
:class:`Resources`) and returns a :class:`Plan`: create, resume or replace the store,
which batches to run, whether pass 1 is needed. Every refusal is decided here, before any
work, and is unit-tested without a cluster or a store: OUTPUT in the way or holding what
melpipe did not write, OUTPUT that is INPUT or holds it, a resume whose parameters or
statistics source changed, settings that do not fit the workers' memory, ``memory://``
with workers in other processes. :mod:`melpipe.run.runner` carries the plan out.

Also here, as arithmetic with no Dask and no Zarr: how windows and clips are grouped into
batches (one chunk of each of their arrays per batch), and the bounded tree reduction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from melpipe import records
from melpipe.analysis.config import SpectrogramConfig
from melpipe.analysis.features import ANALYSIS
from melpipe.analysis.presets import PRESETS
from melpipe.analysis.stats import SCALES, GlobalStats, StatsName, StatsOptions
from melpipe.errors import ConfigError, ResourceError, StatisticsError, StoreError
from melpipe.parameters import Option, parameter
from melpipe.run.types import Resources
from melpipe.sources.audio import BLOCK_FRAMES, WARMUP
from melpipe.sources.discover import Listing
from melpipe.sources.sorted_paths import PathsOnDisk, not_in, sort_paths
from melpipe.store.schema import (
    SCRATCH,
    WINDOW_ARRAYS,
    Batch,
    OutputState,
    Sizes,
    StoreAttrs,
    store_entries,
)

if TYPE_CHECKING:
    import numpy as np

    from melpipe.run.results import FileValues

Duplicates = Literal["keep", "drop"]
DUPLICATES: tuple[Duplicates, ...] = ("keep", "drop")

DEFAULT_BATCH_SIZE = 64
# Dask pauses a worker at 80% of its memory limit; a batch must fit well inside that.
MEMORY_BUDGET = 0.8


def plan_batches(n_rows: int, batch_size: int, offset: int = 0) -> list[Batch]:
    """Consecutive batches covering ``n_rows`` rows from row ``offset`` on, one per chunk
    of ``batch_size`` rows: the first starts at ``offset`` (inside its chunk, for an
    append), the last may be short."""
    if batch_size <= 0:
        raise ConfigError(f"Expected a positive `batch_size`. Got {batch_size} instead.")
    end = offset + n_rows
    first = offset // batch_size
    return [
        Batch(index, max(index * batch_size, offset), min((index + 1) * batch_size, end))
        for index in range(first, -(-end // batch_size))
    ]


@dataclass(frozen=True)
class Request:
    """What the user asked for: ``melpipe preprocess``'s arguments."""

    input: str
    output: str
    config: SpectrogramConfig
    files_from: str | None = parameter(None, Option(
        metavar="LIST", help="Take the files from this manifest (text, JSONL, CSV), "
        "relative to INPUT, instead of a walk of INPUT.",
    ))  # fmt: skip
    statistic: StatsName | None = parameter(None, Option(
        name="stats", kind=SCALES,
        help="Statistics that scale the images; all are computed and recorded.",
        shown="the preset's (mean for post), or --stats-from's",
    ))  # fmt: skip
    stats_from: str | None = parameter(None, Option(
        help="Scale with the statistics of this finished store."
    ))  # fmt: skip
    # --percentiles, --top-db, --clip-std as given; the others are --stats-from's or defaults
    options: dict[str, Any] = field(default_factory=dict)
    batch_size: int | None = parameter(None, Option(
        kind=int, help="Files per task, and clips per chunk of the store.",
        shown=f"{DEFAULT_BATCH_SIZE}, or the store's with --append",
    ))  # fmt: skip
    scratch: bool = parameter(True, Option(
        off="--no-scratch", shown="scratch",
        help="Keep pass 1's log-mels in OUTPUT for pass 2 (4 bytes a pixel, until the end), "
        "or compute them again.",
    ))  # fmt: skip
    overwrite: bool = parameter(False, Option(
        is_flag=True, shown="",
        help="Replace OUTPUT if it is a store that melpipe wrote (and nothing else).",
    ))  # fmt: skip
    append: bool = parameter(False, Option(
        is_flag=True, shown="", help="Add INPUT's files that OUTPUT, a finished store, lacks, "
        "scaled with its statistics and options, unchanged.",
    ))  # fmt: skip
    duplicates: Duplicates = parameter("keep", Option(
        kind=DUPLICATES, help="Files with the same samples or bytes as one "
        "before them: stored and reported, or left without clips.",
    ))  # fmt: skip

    @property
    def in_memory(self) -> str | None:
        """The input or the output if it lives in this process's memory (``memory://``),
        which only tasks run in this process can see."""
        return next((u for u in (self.input, self.output) if u.startswith("memory://")), None)


@dataclass(frozen=True)
class Source:
    """A finished store whose statistics scale this run (``--stats-from``); what the
    plan's identity records of it is its location, run and statistics."""

    url: str = field(metadata=records.key("store"))
    run_id: str = field()
    config: SpectrogramConfig = field(metadata=records.not_recorded())
    stats: GlobalStats = field()
    used: StatsName = field(metadata=records.not_recorded())
    # the store its own statistics came from, if any
    taken_from: str | None = field(default=None, metadata=records.not_recorded())


@dataclass(frozen=True)
class Found:
    """What a run found before planning: read-only observations, made by the runner.

    ``input_key`` and ``output_key`` are the two locations resolved (links followed, for
    local paths), so the plan can tell whether one holds the other.
    """

    listing: Listing
    output: OutputState
    resources: Resources
    input_key: str
    output_key: str
    source: Source | None = None
    base: Base | None = None  # the store an append adds to


@dataclass(frozen=True, eq=False)
class Base:
    """A finished store that an append adds to, as its last run or append left it: its
    attributes, lengths and chunk length, and what tells its files (each one's path and
    source, the input of each source resolved as ``Found.input_key`` is, and the file
    arrays that duplicates are found from)."""

    attrs: StoreAttrs
    sizes: Sizes
    chunk_length: int
    paths: Sequence[str]
    file_source: np.ndarray  # each file's row of the table of sources
    source_keys: tuple[str, ...]
    files: FileValues


Action = Literal["create", "resume", "replace", "append"]


@dataclass(frozen=True)
class Plan:
    """What a run will do.

    ``action``: ``create`` a new store, ``resume`` an unfinished one of this same run, or
    ``replace`` one (``--overwrite``, or a leftover of a run that created nothing).
    ``analysed``: a resumed store whose pass 1 is done, so only pass 2 runs, over the
    batches of clips not ``written`` yet. ``stats`` are the statistics known before the
    run (from ``--stats-from``, or recorded by the resumed store's pass 1); otherwise
    pass 1 computes them. ``identity`` is recorded in the store as its ``plan``
    attribute: a resume must match it.
    """

    request: Request
    action: Action
    identity: dict[str, Any]
    used: StatsName
    options: StatsOptions
    stats: GlobalStats | None = None
    source: Source | None = None
    run_id: str | None = None  # the resumed store's
    analysed: bool = False
    written: frozenset[int] = field(default=frozenset())
    files: Sequence[str] = ()  # what an append adds: the input's files not in the store
    skipped: int = 0  # the input's files that an append leaves out: in the store already

    @property
    def batch_size(self) -> int:
        """Windows per task of pass 1, and clips per task of pass 2 and chunk."""
        assert self.request.batch_size is not None  # make_plan decides it
        return self.request.batch_size

    @property
    def n_passes(self) -> int:
        return 1 if self.analysed else 2

    @property
    def scratch(self) -> bool:
        """Whether pass 1 keeps its log-mels in the store for pass 2."""
        return self.request.scratch


def make_plan(request: Request, found: Found) -> Plan:
    """Decide what a run does, or refuse it with an error that says why and what to do.

    Raises
    ------
    ConfigError, ResourceError
        A parameter is invalid, does not match ``--stats-from``'s, or a batch would not fit
        the workers' memory.
    StoreError
        OUTPUT is in the way, holds INPUT, or is a store this run cannot resume or replace.
    """
    if request.statistic is not None and request.statistic not in SCALES:
        raise ConfigError(f"Expected `stats` to be one of {SCALES}. Got {request.statistic!r}.")
    if request.duplicates not in DUPLICATES:
        raise ConfigError(
            f"Expected `duplicates` to be one of {DUPLICATES}. Got {request.duplicates!r}."
        )
    if request.batch_size is not None and request.batch_size <= 0:
        raise ConfigError(f"Expected a positive `batch_size`. Got {request.batch_size} instead.")
    _check_locations(request, found)
    if request.append:
        return _append(request, found)
    if request.batch_size is None:
        request = dataclasses.replace(request, batch_size=DEFAULT_BATCH_SIZE)
    assert request.batch_size is not None
    check_memory(request.config, request.batch_size, found.resources)
    source = found.source
    if source is not None and source.config != request.config:
        raise ConfigError(
            f"`stats_from={source.url!r}` was made with other parameters: "
            f"{request.config.differences(source.config)} (here, there). Its statistics only "
            "make sense for the same analysis."
        )
    preset = PRESETS[request.config.preset]  # its statistic, unless asked for another
    used: StatsName = request.statistic or (source.used if source else preset.stats)
    identity = {
        "input": request.input,
        "files": len(found.listing),
        "files_sha256": found.listing.sha256(),
        "batch_size": request.batch_size,
        "used": used,
        "scratch": request.scratch,
        "stats_from": records.to_dict(source) if source else None,
        "analysis": ANALYSIS,
    }
    base = source.stats.options if source else StatsOptions(**preset.options)
    options = dataclasses.replace(base, **request.options)
    identity["options"] = records.to_dict(options)
    stats = _with_options(source, options) if source else None
    if source is not None and stats is not None:
        _check_source_range(source, stats, used)
    plan = Plan(request, "create", identity, used, options, stats=stats, source=source)
    return _decide(plan, found.output)


def _append(request: Request, found: Found) -> Plan:
    """The plan of an append: the store's parameters, statistics and chunks, each one
    given that differs refused; the input's files that the store holds left out."""
    base = found.base
    assert base is not None  # looked for: _look refuses an append to anything else
    where = f"Output {request.output!r}"
    record = base.attrs.stats
    assert record is not None  # a finished store's
    config = base.attrs.config
    options = record.values.options
    given_options = dataclasses.replace(options, **request.options)
    refusals = [
        (request.config != config, lambda: f"parameters: {request.config.differences(config)} "
                                           "(here, there)"),
        (request.statistic not in (None, record.used), lambda: f"`stats` ({request.statistic!r}, "
                                                           f"{record.used!r})"),
        (given_options != options, lambda: "statistics options: "
                                           f"{_option_differences(given_options, options)}"),
        (request.batch_size not in (None, base.chunk_length),
         lambda: f"`batch_size` ({request.batch_size}, {base.chunk_length})"),
    ]  # fmt: skip
    for differs, what in refusals:
        if differs:
            raise ConfigError(
                f"{where} was made with other {what()}; an append takes every option from "
                "the store and scales with its statistics, unchanged: leave that out."
            )
    if request.stats_from is not None:
        raise ConfigError(
            f"An append scales with the statistics of {request.output!r} itself, unchanged: "
            "leave out `stats_from`."
        )
    held = sort_paths(p for p, s in zip(base.paths, base.file_source, strict=True)
                      if base.source_keys[s] == found.input_key)  # fmt: skip
    files = PathsOnDisk.of(not_in(found.listing.files, held))  # neither held in memory
    check_memory(config, base.chunk_length, found.resources)
    return Plan(
        dataclasses.replace(request, config=config, batch_size=base.chunk_length),
        "append",
        base.attrs.plan,
        record.used,
        options,
        stats=record.values,
        run_id=None,
        files=files,
        skipped=len(found.listing.files) - len(files),
    )


def _option_differences(mine: StatsOptions, theirs: StatsOptions) -> str:
    a, b = records.to_dict(mine), records.to_dict(theirs)
    return ", ".join(f"{k} ({a[k]!r}, {b[k]!r})" for k in a if a[k] != b[k])


def _check_source_range(source: Source, stats: GlobalStats, used: StatsName) -> None:
    """Refuse, before anything is made, a source whose statistics give no usable range
    for the one that would scale the images."""
    scale = stats.scale(used)
    if not scale.usable:
        raise StoreError(
            f"`stats_from={source.url!r}` records {used!r} statistics that give no usable "
            f"range ({scale.describe()}): they are damaged. Make that store again, or scale "
            "with another."
        )


def _with_options(source: Source, options: StatsOptions) -> GlobalStats:
    """The source's statistics with this run's options; other percentiles need the
    histogram they were computed from, which a store scaled from a third one lacks."""
    try:
        return source.stats.with_options(options)
    except StatisticsError:
        raise ConfigError(
            f"`stats_from={source.url!r}` was itself scaled with the statistics of "
            f"{source.taken_from!r}, so other `percentiles` cannot be computed from it: "
            f"use `stats_from={source.taken_from!r}`."
        ) from None


def _check_locations(request: Request, found: Found) -> None:
    inp, out = found.input_key.rstrip("/"), found.output_key.rstrip("/")
    if inp == out or inp.startswith(out + "/"):
        raise StoreError(
            f"Output {request.output!r} is the input folder or holds it; a store there could "
            "delete the audio. Choose an OUTPUT outside INPUT."
        )
    in_memory = request.in_memory
    if in_memory is not None and not found.resources.in_client:
        raise ConfigError(
            f"{in_memory!r} lives in this process's memory, which worker processes cannot "
            "see. Use a path or object storage, or run with `scheduler='sync'`."
        )


def batch_bytes(config: SpectrogramConfig, batch_size: int) -> int:
    """Peak memory in bytes that one task needs for a batch, a generous estimate.

    Per clip: the clip and its padded copy (float32), the STFT (complex64) and its power,
    the mel, log and image arrays and the float64 temporaries of the scaling. Once: the
    filter bank as librosa builds it (float64 ramps of every band over every bin), one
    stretch of windows resampled (float32, as long as the batch's windows laid end to
    end) and a block of decoded samples (see :mod:`melpipe.sources.audio`), in stereo at up to
    eight times the rate.
    """
    n, bins = config.n_samples, 1 + config.n_fft // 2
    pixels = config.n_bands * config.n_frames
    per_clip = 4 * (3 * n + config.n_fft) + 12 * bins * config.n_frames + 40 * pixels
    decoding = 4 * 2 * 8 * (BLOCK_FRAMES + WARMUP)
    return batch_size * per_clip + 12 * (config.n_bands + 2) * bins + decoding


def check_memory(config: SpectrogramConfig, batch_size: int, resources: Resources) -> None:
    """Refuse settings whose batch would not fit a worker, with the figures."""
    if resources.memory_per_worker is None:
        return
    need, have = batch_bytes(config, batch_size), resources.memory_per_worker
    if need > MEMORY_BUDGET * have:
        raise ResourceError(
            f"A batch of {batch_size} clips of {config.n_samples} samples with n_fft="
            f"{config.n_fft} and {config.n_bands} bands needs about {_gb(need)} in a worker, "
            f"which has {_gb(have)} ({resources.workers} worker"
            f"{'s' if resources.workers != 1 else ''}). Use a smaller `batch_size`, `n_fft`, "
            "`hop_length` or clip length (`n_samples`), or fewer `workers`."
        )


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _decide(plan: Plan, output: OutputState) -> Plan:
    """Create, resume or replace, from what is at OUTPUT."""
    where = f"Output {plan.request.output!r}"
    if output.kind == "absent":
        return plan
    if output.kind == "leftover":  # only the lock file of a run that created nothing
        return _replace(plan)
    if output.kind == "folder":
        reason = f" ({output.problem})" if output.problem else ""
        raise StoreError(
            f"{where} exists and is not a Zarr store{reason}; refusing to replace it. "
            "Choose a new path."
        )
    if output.kind == "zarr":
        raise StoreError(
            f"{where} is a Zarr store that melpipe did not write; it is never replaced, even "
            "with `overwrite=True`. Choose a new path."
        )
    if output.kind == "damaged":
        raise StoreError(
            f"{where} looks like a store, but {output.problem}: melpipe cannot tell whether "
            "it wrote it, so it is left alone. Delete it yourself, or choose a new path."
        )
    attrs, problem = _parse(output, where)
    same = attrs is not None and _differences(plan, attrs) == ""
    if attrs is not None and attrs.status == "incomplete" and same:
        lost = _lost_run_state(plan, attrs, output)
        if not lost:
            return _resume(plan, attrs, output)
        if not plan.request.overwrite:
            raise StoreError(
                f"{where} holds this same run, unfinished, but lacks {lost!r}, which the run "
                "keeps until it ends: it cannot be resumed. Pass `overwrite=True` to start over."
            )
        return _replace(plan)
    if not plan.request.overwrite:
        raise StoreError(_refusal(plan, attrs, same, problem))
    foreign = sorted(set(output.entries) - store_entries())
    if foreign:
        raise StoreError(
            f"{where} holds {', '.join(map(repr, foreign))}, which melpipe did not write. "
            "`overwrite=True` removes only what melpipe wrote: move those away first."
        )
    return _replace(plan)


def _lost_run_state(plan: Plan, attrs: StoreAttrs, output: OutputState) -> str:
    """The first array a resume after pass 1 needs that the store lacks, or ""."""
    if attrs.stats is None:
        return ""  # pass 1 runs again and writes it all
    needed = [a.name for a in WINDOW_ARRAYS] + ([SCRATCH.name] if plan.scratch else [])
    return next((name for name in needed if name not in output.entries), "")


def _parse(output: OutputState, where: str) -> tuple[StoreAttrs | None, str]:
    """The attributes of a store of melpipe's, or None and why they cannot be used: a
    store of another version (or of the former name), or damaged attributes."""
    try:
        return StoreAttrs.from_dict(output.attrs or {}, where), ""
    except StoreError as exc:  # not resumable
        return None, str(exc)


def _differences(plan: Plan, attrs: StoreAttrs) -> str:
    keys = [k for k in plan.identity if attrs.plan.get(k) != plan.identity[k]]
    if attrs.config != plan.request.config:
        keys.append(f"config: {plan.request.config.differences(attrs.config)}")
    return ", ".join(keys)


def _refusal(plan: Plan, attrs: StoreAttrs | None, same: bool, problem: str) -> str:
    where = f"Output {plan.request.output!r}"
    if attrs is None:
        return f"{problem} It cannot be resumed; pass `overwrite=True` to replace it."
    if attrs.status == "complete":
        return f"{where} already exists. Pass `overwrite=True` to replace it."
    if attrs.status == "failed" and same:
        return (
            f"{where} holds this same run, which failed: {attrs.failure} Change the input or "
            "the parameters, and pass `overwrite=True` to replace it."
        )
    return (
        f"{where} holds an unfinished run that differs from this one in "
        f"{_differences(plan, attrs)}, so it cannot be resumed. Pass `overwrite=True` to replace "
        "it, or run the command that made it."
    )


def _resume(plan: Plan, attrs: StoreAttrs, output: OutputState) -> Plan:
    if attrs.stats is None:  # pass 1 did not finish: the run starts again, as this same one
        return dataclasses.replace(plan, action="resume", run_id=attrs.run_id)
    return dataclasses.replace(
        plan,
        action="resume",
        run_id=attrs.run_id,
        stats=plan.stats or attrs.stats.values,
        analysed=True,
        written=frozenset(output.written),
    )


def _replace(plan: Plan) -> Plan:
    return dataclasses.replace(plan, action="replace")
