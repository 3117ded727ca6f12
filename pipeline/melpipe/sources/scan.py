"""What a dataset holds, read from file headers: the ``melpipe scan`` report.

The reference post asks that all files share a sample rate and bit depth; the scan shows
how far a dataset is from that before any decoding starts, how long its audio is, and how
many clips ``preprocess`` would make of it with the given clip length and segment options.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from melpipe.analysis.config import SpectrogramConfig
from melpipe.analysis.segments import Windows, covered_seconds
from melpipe.sources import duplicates
from melpipe.sources.audio import read_header, resampled_length
from melpipe.sources.discover import SkippedFolder, join, list_audio_files, utf8_safe
from melpipe.sources.headers import FileInfo
from melpipe.sources.pcm import read_whole
from melpipe.sources.retries import transient

PERCENTILES = (0, 5, 25, 50, 75, 95, 100)


@dataclass(frozen=True)
class ClipEstimate:
    """What ``preprocess`` would make of the readable files with one config."""

    config: SpectrogramConfig
    clips: int
    covered: float  # seconds of audio the clips hold
    total: float  # seconds of audio, resampled

    @classmethod
    def of(cls, headers: list[FileInfo], config: SpectrogramConfig) -> ClipEstimate:
        rate = config.sample_rate
        lengths = [resampled_length(h.frames, h.sample_rate, rate) for h in headers]
        windows = Windows.layout(lengths, config)  # as preprocess lays them out
        durations = np.asarray(lengths, dtype=np.float64) / rate
        starts = windows.start / rate
        covered = covered_seconds(windows.file, starts, durations, config.n_samples / rate)
        return cls(config, len(windows), covered, float(durations.sum()))


@dataclass(frozen=True)
class ScanReport:
    """The header of every audio file under ``root``, by path in store order."""

    root: str
    headers: dict[str, FileInfo]
    skipped: tuple[SkippedFolder, ...] = ()
    estimate: ClipEstimate | None = None

    @property
    def total_duration(self) -> float:
        return float(sum(h.duration for h in self.readable.values()))

    @property
    def readable(self) -> dict[str, FileInfo]:
        return {path: h for path, h in self.headers.items() if not h.error}

    @property
    def unreadable(self) -> dict[str, FileInfo]:
        return {path: h for path, h in self.headers.items() if h.error}

    def counts(self, key: str) -> Counter[str]:
        return Counter(str(getattr(h, key)) for h in self.readable.values())

    def duration_percentiles(self) -> dict[int, float]:
        durations = [h.duration for h in self.readable.values()]
        if not durations:
            return {}
        return dict(zip(PERCENTILES, np.percentile(durations, PERCENTILES).tolist(), strict=True))


def scan(root: str | os.PathLike[str], config: SpectrogramConfig | None = None) -> ScanReport:
    """Read the header of every audio file under ``root``; with ``config``, estimate the
    clips ``preprocess`` would make of them."""
    root = os.fspath(root)
    listing = list_audio_files(root)
    whole = config is not None and config.segments == "all"  # as the run's survey reads them
    headers = {rel: read_header(join(root, rel), whole=whole) for rel in listing.files}
    readable = [h for h in headers.values() if not h.error]
    estimate = None if config is None else ClipEstimate.of(readable, config)
    return ScanReport(root, headers, listing.skipped, estimate)


@dataclass(frozen=True)
class DuplicateScan:
    """Groups of files under a folder with the same bytes or PCM samples, by path (first
    first), and what finding them cost: every header read, and the files that another
    shares a size or a length with read whole."""

    groups: tuple[tuple[str, ...], ...]
    files: int
    read_whole: int
    bytes_read: int
    seconds: float


def find_duplicates(root: str | os.PathLike[str]) -> DuplicateScan:
    """The files under ``root`` whose bytes or PCM samples are the same, as a run finds
    them (:mod:`melpipe.sources.duplicates`): from each file's header, and the hashes of the few
    that could be the same."""
    root = os.fspath(root)
    started = time.perf_counter()
    listing = list_audio_files(root)
    headers = [read_header(join(root, rel)) for rel in listing.files]
    ok = np.array([h.readable and not h.error for h in headers], bool)
    sizes = np.where(ok, [h.size for h in headers], 0).astype(np.int64)
    names = ("pcm_format", "sample_rate", "channels", "frames")
    formats, rates, channels, frames = ([getattr(h, n) for h in headers] for n in names)
    shapes = duplicates.shape_ids(formats, rates, channels, frames, ok)
    digests = np.full(len(headers), "", dtype=object)
    md5s = np.array([h.pcm_md5 for h in headers], dtype=object)
    # No file is decoded here, so none has a probe to tell it from others of its size or
    # length: those are all read whole.
    new, probes = np.ones(len(headers), bool), np.ones(len(headers), np.int64)
    want_bytes, want_pcm = duplicates.wanted(sizes, shapes, probes, digests, md5s, new)
    rows = np.flatnonzero(want_bytes | want_pcm).tolist()
    for i in rows:
        try:
            got = read_whole(join(root, listing.files[i]), bool(want_bytes[i]),
                             bool(want_pcm[i]), peak=False, rate=0)  # fmt: skip
        except Exception as exc:  # one unreadable file is not compared, not a reason to stop
            if transient(exc):
                raise
            continue
        digests[i], md5s[i] = got.bytes_sha256 or digests[i], got.pcm_md5 or md5s[i]
    groups = duplicates.groups(duplicates.assign(digests, shapes, md5s))
    return DuplicateScan(
        tuple(tuple(listing.files[i] for i in g) for g in groups),
        len(listing.files),
        len(rows),
        int(sizes[rows].sum()),
        time.perf_counter() - started,
    )


def format_duplicates(report: DuplicateScan, *, max_groups: int = 20) -> str:
    n_files = sum(len(g) - 1 for g in report.groups)
    lines = [
        f"duplicates: {n_files} files repeat the bytes or PCM samples of an earlier one, in "
        f"{len(report.groups)} groups ({report.files} headers read; {report.read_whole} files "
        f"that share a size or a length with another read whole, "
        f"{report.bytes_read / 1e6:.1f} MB, in {report.seconds:.2f} s)"
    ]
    lines += ["  " + " = ".join(utf8_safe(p) for p in g) for g in report.groups[:max_groups]]
    if len(report.groups) > max_groups:
        lines.append(f"  ... and {len(report.groups) - max_groups} more groups")
    return "\n".join(lines)


def _hours(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 3600 else f"{seconds / 3600:.2f} hours"


def _estimate_lines(estimate: ClipEstimate) -> list[str]:
    config = estimate.config
    length = config.n_samples / config.sample_rate
    how = f"`segments={config.segments!r}`, clips of {length:.4g} s"
    if config.segments == "all":
        how += f", hop {config.segment_hop / config.sample_rate:.4g} s, tail {config.tail}"
        if config.max_clips_per_file is not None:
            how += f", at most {config.max_clips_per_file} per file ({config.select})"
    share = estimate.covered / estimate.total if estimate.total else 0.0
    lines = [
        f"clips with {how}",
        f"  {estimate.clips} clips, holding {_hours(estimate.covered)} of the "
        f"{_hours(estimate.total)} of audio ({share:.1%})",
    ]
    if config.needs_levels:
        lines.append(
            "  at most: `min_level_db` and `select='loudest'` choose by level, which only "
            "decoding tells"
        )
    return lines


def format_report(report: ScanReport, *, max_unreadable: int = 20) -> str:
    """The scan as a plain-text table."""
    readable, unreadable = list(report.readable.values()), report.unreadable
    lines = [
        f"{len(report.headers)} audio files under {report.root}: "
        f"{len(readable)} readable, {len(unreadable)} unreadable",
    ]
    sections = [
        ("container / subtype", Counter(f"{h.format} / {h.subtype}" for h in readable)),
        ("sample rate (Hz)", report.counts("sample_rate")),
        ("channels", report.counts("channels")),
        ("bit depth", report.counts("bit_depth")),
    ]
    for title, counter in sections:
        lines += ["", f"{title:<28}{'files':>8}"]
        lines += [f"  {value:<26}{n:>8}" for value, n in sorted(counter.items())]
    if percentiles := report.duration_percentiles():
        lines += ["", f"duration (s), {_hours(report.total_duration)} in all"]
        lines.append("  " + "  ".join(f"p{p}={v:.3f}" for p, v in percentiles.items()))
    if report.estimate is not None:
        lines += ["", *_estimate_lines(report.estimate)]
    for title, counter in (sections[1], sections[3]):
        if len(counter) > 1:
            lines += [
                "",
                f"note: {len(counter)} different values of {title}; preprocess "
                "brings every file to one sample rate, mono, float samples.",
            ]
    if report.skipped:
        lines += ["", "folders skipped"]
        lines += [f"  {utf8_safe(s.path)}: {s.reason}" for s in report.skipped]
    if unreadable:
        lines += ["", "unreadable files"]
        shown = list(unreadable.items())[:max_unreadable]
        lines += [f"  {utf8_safe(path)}: {h.error}" for path, h in shown]
        if len(unreadable) > max_unreadable:
            lines.append(f"  ... and {len(unreadable) - max_unreadable} more")
    return "\n".join(lines)
