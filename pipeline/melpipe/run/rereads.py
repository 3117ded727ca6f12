"""The files a run reads apart from their clips, whole: those whose peak must be known
before pass 1 (``peak_normalize``), and those that may be duplicates of another
(:mod:`melpipe.sources.duplicates` says which). Most files are read by neither.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence

import numpy as np

from melpipe.analysis.segments import Windows
from melpipe.errors import StoreError
from melpipe.run.analysed import Added
from melpipe.run.plan import Base, Request, plan_batches
from melpipe.run.results import FileValues, WholeFiles, WindowResults
from melpipe.run.stages import Stage, Stages
from melpipe.run.tasks import WholeItem, whole_batch
from melpipe.sources import duplicates
from melpipe.sources.discover import join, utf8_safe
from melpipe.sources.pcm import WholeFile

logger = logging.getLogger(__name__)

WHOLE_BATCH = 16  # files read whole per task: a few MB at most, for most files


def read_whole(
    stages: Stages,
    title: str,
    rows: Sequence[int],
    locations: Sequence[str],
    *,
    digest: np.ndarray | None = None,
    samples: np.ndarray | None = None,
    peak: bool = False,
) -> Mapping[int, WholeFile]:
    """Read the files at ``rows`` whole, as tasks of :data:`WHOLE_BATCH` files, for the
    hashes ``digest`` and ``samples`` mark (one bool per row) or their peaks."""
    n = len(rows)
    digest, samples = (np.zeros(n, bool) if m is None else np.asarray(m, bool)
                       for m in (digest, samples))  # fmt: skip
    items = []
    for g in plan_batches(n, WHOLE_BATCH):
        part = slice(g.start, g.stop)
        items.append(WholeItem(tuple(rows[part]), tuple(locations[part]),
                               tuple(digest[part].tolist()), tuple(samples[part].tolist()),
                               (peak,) * len(g)))  # fmt: skip
    return stages(Stage(title, whole_batch, items, WholeFiles)).files


def split_files(windows: Windows, batch_size: int) -> np.ndarray:
    """The files whose windows fall in more than one batch of pass 1, ascending: their
    peak must be known before any of their windows is analysed."""
    if not len(windows):
        return np.empty(0, np.int64)
    batch = np.arange(len(windows)) // batch_size
    first = windows.first_rows()
    last = np.append(first[1:], len(windows)) - 1
    return windows.file[first][batch[first] != batch[last]]


def with_peaks(
    stages: Stages, windows: Windows, paths: Sequence[str], root: str, batch_size: int
) -> Windows:
    """The windows with the peaks of the files whose windows span several tasks of pass
    1, read whole first; NaN for the others, whose task measures their peak as it
    decodes them, once (``peak_normalize``)."""
    split = split_files(windows, batch_size).tolist()
    locations = [join(root, paths[f]) for f in split]
    read = read_whole(stages, "peaks: files that span several tasks", split, locations,
                      peak=True)  # fmt: skip
    peaks = np.full(len(paths), np.nan)
    for row, whole in read.items():
        peaks[row] = whole.peak
    return windows.with_peaks(peaks)


def probes(windows: Windows, results: WindowResults, n_files: int) -> np.ndarray:
    """Each file's :func:`melpipe.sources.duplicates.probe_of` its first window, 0 where
    that did not decode."""
    first = windows.first_rows()
    first = first[results.ok[first]]
    probe = np.zeros(n_files, np.int64)
    probe[windows.file[first]] = duplicates.probe_of(
        results.level[first], results.min[first], results.max[first]
    )
    return probe


def find_duplicates(
    stages: Stages, files: FileValues, added: Added, base: Base | None, request: Request
) -> FileValues:
    """The files with their duplicates (``duplicate_of``) among them and the store's they
    are appended to: files that share a size or a PCM shape with another, in a group that
    holds one of these, are read whole for their hashes (:mod:`melpipe.sources.duplicates`);
    the others not at all."""
    both = [files] if base is None else [base.files, files]
    n_old = added.first_file
    size = np.concatenate([np.where(f.decoded, f.size, 0) for f in both])
    shape = duplicates.shape_ids(*(np.concatenate([getattr(f, name) for f in both]) for name
                                   in ("pcm_format", "sample_rate", "channels", "frames",
                                       "decoded")))  # fmt: skip
    digests = np.concatenate([f.bytes_sha256 for f in both])
    md5s = np.concatenate([f.pcm_md5 for f in both])
    probe = np.concatenate([np.where(f.decoded, f.probe, 0) for f in both])
    new = np.arange(len(size)) >= n_old
    want_bytes, want_pcm = duplicates.wanted(size, shape, probe, digests, md5s, new)
    rows = np.flatnonzero(want_bytes | want_pcm).tolist()
    title = "duplicates: files that share a size or a length with another"
    locations = [_location(row, added.path(row, base), added, base, request) for row in rows]
    read = read_whole(stages, title, rows, locations, digest=want_bytes[rows],
                      samples=want_pcm[rows])  # fmt: skip
    for row, got in read.items():
        if row >= n_old:
            _check_unchanged_file(got, files.size[row - n_old], added.path(row, base))
        digests[row] = got.bytes_sha256 or digests[row]
        md5s[row] = got.pcm_md5 or md5s[row]
    _warn_unread([added.path(row, base) for row, got in read.items() if got.error])
    old = base.files.duplicate_of if base else np.empty(0, np.int64)
    return dataclasses.replace(
        files,
        bytes_sha256=digests[n_old:],
        pcm_md5=md5s[n_old:],
        duplicate_of=duplicates.assign(digests, shape, md5s, old),
    )


def _location(row: int, path: str, added: Added, base: Base | None, request: Request) -> str:
    """Where the file at ``row`` of the store is: under this run's input, or, for one the
    store held already, under the input of the run or append that added it."""
    if base is None or row >= added.first_file:
        return join(request.input, path)
    return join(base.attrs.sources[base.file_source[row]].input, path)


def _check_unchanged_file(got: WholeFile, size: int, path: str) -> None:
    """Refuse a file whose size changed since pass 1 read it: its clips would not be of
    what was compared."""
    if got.error or got.size == size:
        return
    raise StoreError(
        f"{utf8_safe(path)!r} changed after pass 1 read it (its size differs): the input "
        "changed during the run. Run again with `overwrite=True`."
    )


def _warn_unread(paths: Sequence[str]) -> None:
    if paths:
        logger.warning("%d files could not be read whole to compare them with files of the "
                       "same size or length, so a copy of them may go unnoticed: %s%s",
                       len(paths), ", ".join(map(utf8_safe, paths[:3])),
                       ", ..." if len(paths) > 3 else "")  # fmt: skip
