"""What a dataset holds, read from file headers only: the ``specpipe scan`` report.

The reference post asks that all files share a sample rate and bit depth; the scan shows
how far a dataset is from that before any decoding starts.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

import numpy as np

from pipeline.audio import describe_error, open_audio
from pipeline.discover import SkippedFolder, join, list_audio_files, utf8_safe

# Bits per sample of libsndfile's subtypes; compressed subtypes have none.
BIT_DEPTHS = {
    "PCM_S8": 8,
    "PCM_U8": 8,
    "PCM_16": 16,
    "PCM_24": 24,
    "PCM_32": 32,
    "FLOAT": 32,
    "DOUBLE": 64,
    "ULAW": 8,
    "ALAW": 8,
    "DWVW_12": 12,
    "DWVW_16": 16,
    "DWVW_24": 24,
}
PERCENTILES = (0, 5, 25, 50, 75, 95, 100)


@dataclass(frozen=True)
class FileHeader:
    path: str
    format: str = ""
    subtype: str = ""
    sample_rate: int = 0
    channels: int = 0
    frames: int = 0
    error: str = ""

    @property
    def bit_depth(self) -> str:
        bits = BIT_DEPTHS.get(self.subtype)
        return f"{bits}-bit" if bits else "compressed"

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def read_header(root: str, rel: str) -> FileHeader:
    """The header of one file; its failure is recorded, never raised."""
    try:
        with open_audio(join(root, rel)) as f:
            return FileHeader(rel, f.format, f.subtype, f.samplerate, f.channels, f.frames)
    except Exception as exc:
        return FileHeader(rel, error=describe_error(exc))


@dataclass(frozen=True)
class ScanReport:
    root: str
    headers: list[FileHeader]
    skipped: tuple[SkippedFolder, ...] = ()

    @property
    def readable(self) -> list[FileHeader]:
        return [h for h in self.headers if not h.error]

    @property
    def unreadable(self) -> list[FileHeader]:
        return [h for h in self.headers if h.error]

    def counts(self, key: str) -> Counter[str]:
        return Counter(str(getattr(h, key)) for h in self.readable)

    def duration_percentiles(self) -> dict[int, float]:
        durations = [h.duration for h in self.readable]
        if not durations:
            return {}
        return dict(zip(PERCENTILES, np.percentile(durations, PERCENTILES).tolist(), strict=True))


def scan(root: str | os.PathLike[str]) -> ScanReport:
    """Read the header of every audio file under ``root``."""
    root = os.fspath(root)
    listing = list_audio_files(root)
    return ScanReport(root, [read_header(root, rel) for rel in listing.files], listing.skipped)


def format_report(report: ScanReport, *, max_unreadable: int = 20) -> str:
    """The scan as a plain-text table."""
    readable, unreadable = report.readable, report.unreadable
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
        lines += ["", "duration (s)"]
        lines.append("  " + "  ".join(f"p{p}={v:.3f}" for p, v in percentiles.items()))
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
        lines += [f"  {utf8_safe(h.path)}: {h.error}" for h in unreadable[:max_unreadable]]
        if len(unreadable) > max_unreadable:
            lines.append(f"  ... and {len(unreadable) - max_unreadable} more")
    return "\n".join(lines)
