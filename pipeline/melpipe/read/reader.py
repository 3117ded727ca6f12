"""Reading a finished store back: images by index, the inverse to log-mel, audio again.

:func:`open_store` is what training code and the ``info``/``export-png``/``preview``/
``invert`` commands use. It refuses stores that are unfinished, not melpipe's, or altered
since their run (see :class:`melpipe.store.opened.ReadableStore`), and reads lazily: only the
metadata and the small per-clip arrays are read on opening. Zarr stays behind
:mod:`melpipe.store.opened`.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np

from melpipe.analysis import inverse
from melpipe.analysis.config import SpectrogramConfig
from melpipe.analysis.pixels import Histogram
from melpipe.analysis.scaling import image_to_logmel
from melpipe.analysis.segments import covered_seconds
from melpipe.analysis.stats import Figures, GlobalStats, Range, StatsName
from melpipe.errors import ArgumentError, ClipIndexError
from melpipe.sources import duplicates
from melpipe.store.opened import ReadableStore
from melpipe.store.schema import StatsRecord, StoreAttrs

Index = int | np.integer | slice | Sequence[int] | np.ndarray


class SpectrogramStore:
    """A finished melpipe store, read-only. Open it with :func:`open_store`.

    ``store[i]`` is one uint8 image of shape (n_mels, n_frames); a slice, a sequence of
    indices or a boolean mask gives a stack of them, in the order asked for.

    Clips are ordered by file, then start time. Each clip knows its file
    (``file_index``, ``paths``) and where in it it starts (``start``, in seconds); each
    file knows its clips (:meth:`clips_of`), and files that did not decode keep their
    reason (``file_errors``) and have no clip.
    """

    def __init__(self, path: str | os.PathLike[str], *, check_chunks: bool = True) -> None:
        self.path = os.fspath(path)
        self._store = ReadableStore(self.path, check_chunks=check_chunks)
        self._buffers = threading.local()
        self._arrays_read: dict[str, np.ndarray] = {}

    # --- What the store records ----------------------------------------------------------

    @property
    def attrs(self) -> StoreAttrs:
        """The store's attributes, as recorded and checked on opening."""
        return self._store.attrs

    @property
    def config(self) -> SpectrogramConfig:
        """Every parameter that shaped the images."""
        return self._store.attrs.config

    @property
    def _record(self) -> StatsRecord:
        record = self._store.attrs.stats
        assert record is not None  # a complete store's statistics are checked on opening
        return record

    @property
    def stats(self) -> GlobalStats:
        """The five statistics of the store's clips (or of its ``stats_from`` store)."""
        return self._record.values

    @property
    def used(self) -> StatsName:
        """The statistic that scaled the images."""
        return self._record.used

    @property
    def clipped_fraction(self) -> float | None:
        """The share of all pixels that the scaling clipped."""
        return self._record.clipped_fraction

    @property
    def figures(self) -> dict[str, Figures]:
        """How each statistic spends the 256 levels on the pixels that hold audio."""
        return self._record.figures

    @cached_property
    def scale(self) -> Range:
        """The range that scaled the images: what :meth:`to_features` undoes."""
        return self.stats.range(self.used)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # Pickled as its path: a copy opens the store again, with buffers of its own, and
        # trusts the chunk listing this one checked.
        return _reopen, (self.path,)

    def __repr__(self) -> str:
        return (
            f"SpectrogramStore({self.path!r}: {len(self)} clips of {len(self.file_paths)} files, "
            f"images {self.config.n_bands}x{self.config.n_frames}, stats {self.used!r})"
        )

    def __len__(self) -> int:
        return self._store.n_clips

    def __getitem__(self, index: Index) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            i = int(index)
            if not -len(self) <= i < len(self):
                raise ClipIndexError(f"Clip {i} is out of range for a store of {len(self)} clips.")
            return self.read_many([i])[0]
        if isinstance(index, slice):
            return self.read_many(np.arange(len(self))[index])
        return self.read_many(index)

    def read_many(
        self, indices: Sequence[int] | np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Images at ``indices`` (any order, repeats allowed, or a boolean mask), stacked.

        Reads each chunk that holds a requested clip once, so a batch drawn from few
        chunks costs few reads. ``out``, a uint8 array of shape ``(n, n_mels, n_frames)``,
        receives the images instead of a new array.
        """
        idx = self._clip_indices(indices)
        shape = (idx.size, *self.config.image_shape)
        if out is None:
            out = np.empty(shape, dtype=np.uint8)
        elif out.shape != shape or out.dtype != np.uint8:
            raise ArgumentError(f"out must be a uint8 array of shape {shape}.")
        if idx.size == 0:
            return out
        order = np.argsort(idx, kind="stable")
        sorted_idx = idx[order]
        # Group the sorted indices by chunk; each group is read as one contiguous span.
        breaks = np.flatnonzero(np.diff(sorted_idx // self.chunk_length)) + 1
        if breaks.size == 0:  # one chunk, the usual batch: gather straight into out
            lo = int(sorted_idx[0])
            span = self._read_span(lo, int(sorted_idx[-1]) + 1)
            # mode="clip" only because the indices are checked: "raise" buffers the output.
            np.take(span, idx - lo, axis=0, out=out, mode="clip")
            return out
        for group, positions in zip(
            np.split(sorted_idx, breaks), np.split(order, breaks), strict=True
        ):
            lo = int(group[0])
            out[positions] = self._read_span(lo, int(group[-1]) + 1)[group - lo]
        return out

    def _clip_indices(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """``indices`` checked, as non-negative int64 clip indices."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ClipIndexError(f"A boolean mask must have shape ({len(self)},).")
            idx = np.flatnonzero(idx)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise ClipIndexError("Expected a 1-D sequence of clip indices or a boolean mask.")
        idx = idx.astype(np.int64)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise ClipIndexError(f"Clip indices must lie in [-{len(self)}, {len(self)}).")
        return idx % max(len(self), 1)

    def _read_span(self, lo: int, hi: int) -> np.ndarray:
        """Clips ``lo:hi``, all within one chunk, decoded into this thread's chunk buffer.

        The view is valid until this thread's next read. A buffer kept for reuse, rather
        than a new array per read, is what makes batches cheap: measured in a DataLoader
        worker, first writes to freshly allocated memory cost more than the decoding.
        """
        buffer = getattr(self._buffers, "chunk", None)
        if buffer is None:
            buffer = np.empty((self.chunk_length, *self.config.image_shape), dtype=np.uint8)
            self._buffers.chunk = buffer
        chunk, start = divmod(lo, self.chunk_length)
        if self._store.read_chunk(chunk, buffer):
            return buffer[start : start + hi - lo]
        span = buffer[: hi - lo]
        self._store.read_images(lo, hi, span)
        return span

    @property
    def chunk_length(self) -> int:
        """Clips per chunk of ``images``: clips of one chunk are read together, cheaply."""
        return self._store.chunk_length

    def array(self, name: str) -> np.ndarray:
        """A whole clip, file or coordinate array of the store, by name (see
        docs/store-format.md); strings as Python objects."""
        if name not in self._arrays_read:
            self._arrays_read[name] = self._store.read(name)
        return self._arrays_read[name]

    # --- Clips --------------------------------------------------------------------------

    @property
    def file_index(self) -> np.ndarray:
        """Each clip's file: its index into ``file_paths`` and the other file arrays."""
        return self.array("file_index")

    @property
    def start(self) -> np.ndarray:
        """Each clip's start time in its file, in seconds."""
        return self.array("start")

    @property
    def start_sample(self) -> np.ndarray:
        """Each clip's start in its file, in samples at the store's sample rate."""
        return self.array("start_sample")

    @property
    def level_db(self) -> np.ndarray:
        """Each clip's RMS level in dB relative to full scale."""
        return self.array("level_db")

    @property
    def audio_frames(self) -> np.ndarray:
        """How many frames of each clip's image hold audio: its first ones (the rest, if
        any, are the zero-padding past the end of its file)."""
        return self.array("audio_frames")

    def histogram(self) -> Histogram:
        """The histogram of the log-mel values of every pixel that holds audio, in bins of
        ``1 / BINS_PER_UNIT``: ``counts[k]`` values lie in ``[(first + k) / 128,
        (first + k + 1) / 128)``."""
        return self._store.histogram()

    @cached_property
    def paths(self) -> np.ndarray:
        """Each clip's file path relative to the input folder, "/"-separated."""
        return self.file_paths[self.file_index]

    def label(self, index: int) -> str:
        """A clip's file and start time, as ``a/b.wav@12.000s``."""
        return f"{self.paths[index]}@{self.start[index]:.3f}s"

    @property
    def mel_frequencies(self) -> np.ndarray:
        """Centre frequency in Hz of each image row (row 0 is the highest band)."""
        return self.array("mel")

    @property
    def frame_times(self) -> np.ndarray:
        """Centre time in seconds of each image column, from the clip's start."""
        return self.array("frame")

    # --- Files --------------------------------------------------------------------------

    @property
    def file_paths(self) -> np.ndarray:
        """Every file found under the input, relative to it, in store order."""
        return self.array("path")

    @property
    def decoded(self) -> np.ndarray:
        """Whether each file decoded; one that did not has no clip."""
        return self.array("decoded")

    @property
    def file_errors(self) -> np.ndarray:
        """Why each file did not decode; "" for those that did."""
        return self.array("error")

    @property
    def failed_files(self) -> np.ndarray:
        """Indices of the files that did not decode."""
        return np.flatnonzero(~self.decoded)

    @property
    def quiet_files(self) -> np.ndarray:
        """Indices of the files that decoded but gave no clip, every window too quiet (a
        duplicate left out gives none either, and is not among them)."""
        unique = self.array("duplicate_of") < 0
        return np.flatnonzero(self.decoded & (self.array("n_clips") == 0) & unique)

    @property
    def decoded_hours(self) -> float:
        """Hours of audio in the files that decoded."""
        return float(np.nansum(self.array("duration")[self.decoded])) / 3600

    @property
    def coverage(self) -> float:
        """The share of the decoded audio that the clips hold."""
        durations = np.nan_to_num(self.array("duration"))
        length = self.config.n_samples / self.config.sample_rate
        held = covered_seconds(self.file_index, self.start, durations, length)
        total = float(durations[self.decoded].sum())
        return held / total if total else 0.0

    def clips_of(self, file: int | str) -> np.ndarray:
        """The clips of one file, given by its index or its path, in time order."""
        if isinstance(file, str):
            matches = np.flatnonzero(self.file_paths == file)
            if not len(matches):
                raise ArgumentError(f"No file {file!r} in store {self.path!r}.")
            file = int(matches[0])
        first, n = self.array("first_clip")[file], self.array("n_clips")[file]
        return np.arange(first, first + n, dtype=np.int64)

    def split_by_file(
        self, fraction: float = 0.1, *, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Clip indices of a train and a validation split that never share a file, nor
        two files with the same audio.

        Windows of one recording overlap or sound alike, so a split drawn by clip puts
        near-copies on both sides and flatters the validation loss; so does a file stored
        twice (a WAV and a FLAC of it, a copy under another name). Here each group of
        duplicates (``duplicate_of``; a file of its own otherwise) goes to validation when
        a hash of its first file's path and ``seed`` falls below ``fraction``: about
        ``fraction`` of them (at least one of two or more groups), all their clips there,
        the rest to train. A group's side depends only on that path, the seed and the
        fraction, so the same store and seed give the same split, and an append never
        moves a file that was there before from one side to the other.
        """
        if not 0 <= fraction <= 1:
            raise ArgumentError(f"Expected a fraction between 0 and 1. Got {fraction}.")
        group = duplicates.group_of(self.array("duplicate_of"))
        has_clips = np.zeros(len(group), bool)
        has_clips[group[self.array("n_clips") > 0]] = True
        groups = np.flatnonzero(has_clips)
        draws = np.array([_draw(seed, self._identity(int(g))) for g in groups])
        val_groups = groups[draws < fraction]
        if len(groups) > 1:  # a side left empty is no split, unless the fraction asks for it
            if fraction > 0 and not len(val_groups):
                val_groups = groups[np.argsort(draws, kind="stable")[:1]]
            elif fraction < 1 and len(val_groups) == len(groups):
                val_groups = groups[np.argsort(draws, kind="stable")[:-1]]
        val = np.isin(group[self.file_index], val_groups)
        return np.flatnonzero(~val), np.flatnonzero(val)

    def _identity(self, file: int) -> str:
        """What a file's side of a split is drawn from: its path, which never changes
        (its hashes are known only where another file could have been its copy)."""
        return str(self.file_paths[file])

    def size_on_disk(self) -> int:
        """Bytes of every object of the store, local or remote."""
        return self._store.size_on_disk()

    def features(self, index: Index) -> np.ndarray:
        """The features of the clips at ``index`` (as for ``store[index]``): their images
        read and :meth:`to_features` of them, whatever scaled them."""
        return self.to_features(self[index], clips=index)

    def to_features(self, images: np.ndarray, clips: Index | None = None) -> np.ndarray:
        """The features images stand for, float32, as the model or vocoder of the store's
        preset takes them: shape (..., n_bands, n_frames), lowest band first, in the
        preset's log (``log(x + eps)`` or ``log(max(x, eps))`` of mel or linear magnitude
        or power, natural logarithms).

        Undoes the inversion, the flip, then the min-max scaling with the statistics the
        store used: exact to half a quantization step, ``(max - min) / 510`` (of the
        pixel's band, for ``band-moments``), wherever the scaling did not clip. A vocoder
        takes ``torch.from_numpy(store.to_features(store[i:j]))`` as its batch of mels
        (docs/reading.md, "Back to sound"). Images scaled from their own maximum
        (``image-top-db``) need ``clips``, the index they were read with, for each one's
        ``clip_max``.
        """
        clip_max = None
        if self.scale.relative and clips is not None:
            clip_max = self.array("clip_max")[clips]
        return image_to_logmel(images, self.scale, clip_max)

    def to_logmel(self, image: np.ndarray) -> np.ndarray:
        """:meth:`to_features`, by its earlier name: the log-mel of an image or images."""
        return self.to_features(image)

    def to_audio(
        self, index_or_image: int | np.ndarray, *, n_iter: int = 32, seed: int = 0
    ) -> np.ndarray:
        """A waveform at the store's sample rate, estimated from one image by Griffin-Lim.

        This is ``librosa.feature.inverse.mel_to_audio`` with the store's STFT and mel
        parameters, except that the random initial phase is drawn from ``seed``, so the same
        call gives the same audio.

        Returns
        -------
        np.ndarray [shape=(n_samples,)], float32
        """
        index = index_or_image if isinstance(index_or_image, (int, np.integer)) else None
        image = self[index] if index is not None else np.asarray(index_or_image)
        if np.shape(image) != self.config.image_shape:
            raise ArgumentError(
                f"Expected one image of shape {self.config.image_shape}. "
                f"Got shape {np.shape(image)} instead."
            )
        return inverse.to_audio(
            self.to_features(image, clips=index),
            self.config,
            length=self.config.n_samples,
            n_iter=n_iter,
            seed=seed,
        )


def _draw(seed: int, identity: str) -> float:
    """A number in [0, 1) fixed by the seed and a file's identity."""
    digest = hashlib.sha256(f"{seed}:{identity}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64


def open_store(path: str | os.PathLike[str], *, check_chunks: bool = True) -> SpectrogramStore:
    """Open a finished melpipe store for reading, after checking it against its schema.

    ``check_chunks=False`` skips listing every chunk, for a process that opens a store
    another one has checked already (a DataLoader worker); a missing chunk of a local
    store is still an error when it is read.

    Raises
    ------
    StoreError
        Nothing is at ``path``, it is not a melpipe store, its run never finished, or it
        was altered since (an array's shape or dtype, its counts, a missing chunk).
    """
    return SpectrogramStore(path, check_chunks=check_chunks)


def _reopen(path: str) -> SpectrogramStore:
    return SpectrogramStore(path, check_chunks=False)
