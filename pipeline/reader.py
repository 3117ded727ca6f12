"""Reading a finished store back: images by index, the inverse to log-mel, audio again.

:func:`open_store` is what training code and the ``info``/``export-png``/``preview``/
``invert`` commands use. It refuses stores that are unfinished or not specpipe's, and
reads lazily: only the arrays' metadata and the small per-clip arrays are read on opening.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import zarr
from numcodecs import Zstd
from zarr.buffer.cpu import NDBuffer
from zarr.codecs import BytesCodec, ZstdCodec
from zarr.core.metadata import ArrayV3Metadata
from zarr.storage import LocalStore

from pipeline import features
from pipeline import store as zstore
from pipeline.config import SpectrogramConfig
from pipeline.scaling import image_to_logmel
from pipeline.stats import GlobalStats, Range, StatsName

Index = int | np.integer | slice | Sequence[int] | np.ndarray


class SpectrogramStore:
    """A finished specpipe store, read-only. Open it with :func:`open_store`.

    ``store[i]`` is one uint8 image of shape (n_mels, n_frames); a slice, a sequence of
    indices or a boolean mask gives a stack of them, in the order asked for. Failed rows
    are kept (all 255, ``valid`` False) so that indices match ``paths``; iterate over
    ``valid_indices`` to skip them.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.attrs, self._arrays = zstore.open_arrays(self.path)
        self.config = SpectrogramConfig.from_dict(self.attrs["config"])
        self.stats = GlobalStats.from_dict(self.attrs["stats"])
        self.used: StatsName = self.attrs["stats"]["used"]
        self.scale: Range = self.stats.range(self.used)
        self._images = self._arrays["images"]
        self._buffers = threading.local()
        self._decode_chunk = _chunk_decoder(self._images)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # Pickled as its path: a copy opens the store again, with buffers of its own.
        return open_store, (self.path,)

    def __repr__(self) -> str:
        return (
            f"SpectrogramStore({self.path!r}: {len(self)} clips, {len(self.valid_indices)} valid, "
            f"images {self.config.n_mels}x{self.config.n_frames}, stats {self.used!r})"
        )

    def __len__(self) -> int:
        return int(self._images.shape[0])

    def __getitem__(self, index: Index) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            i = int(index)
            if not -len(self) <= i < len(self):
                raise IndexError(f"Clip {i} is out of range for a store of {len(self)} clips.")
            return np.asarray(self._images[i % len(self)])
        if isinstance(index, slice):
            return np.asarray(self._images[index])
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
            raise ValueError(f"out must be a uint8 array of shape {shape}.")
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
                raise IndexError(f"A boolean mask must have shape ({len(self)},).")
            idx = np.flatnonzero(idx)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise IndexError("Expected a 1-D sequence of clip indices or a boolean mask.")
        idx = idx.astype(np.int64)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"Clip indices must lie in [-{len(self)}, {len(self)}).")
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
        if self._decode_chunk is None:
            span = buffer[: hi - lo]
            self._images.get_basic_selection(slice(lo, hi), out=NDBuffer.from_numpy_array(span))
            return span
        chunk, start = divmod(lo, self.chunk_length)
        self._decode_chunk(chunk, buffer)
        return buffer[start : start + hi - lo]

    @property
    def chunk_length(self) -> int:
        """Clips per chunk of ``images``: clips of one chunk are read together, cheaply."""
        return int(self._images.chunks[0])

    @cached_property
    def paths(self) -> np.ndarray:
        """Each clip's path relative to the input folder, "/"-separated."""
        return np.asarray(self._arrays["paths"][:], dtype=object)

    @cached_property
    def valid(self) -> np.ndarray:
        return np.asarray(self._arrays["valid"][:], dtype=bool)

    @cached_property
    def errors(self) -> np.ndarray:
        """The reason each failed clip failed; "" for valid clips."""
        return np.asarray(self._arrays["errors"][:], dtype=object)

    @cached_property
    def valid_indices(self) -> np.ndarray:
        return np.flatnonzero(self.valid)

    @cached_property
    def file_min(self) -> np.ndarray:
        return np.asarray(self._arrays["file_min"][:])

    @cached_property
    def file_max(self) -> np.ndarray:
        return np.asarray(self._arrays["file_max"][:])

    @cached_property
    def mel_frequencies(self) -> np.ndarray:
        """Centre frequency in Hz of each image row (row 0 is the highest band)."""
        return np.asarray(self._arrays["mel"][:])

    @cached_property
    def frame_times(self) -> np.ndarray:
        """Centre time in seconds of each image column."""
        return np.asarray(self._arrays["frame"][:])

    def size_on_disk(self) -> int:
        """Bytes of every object of the store, local or remote."""
        return zstore.size_on_disk(self.path)

    def to_logmel(self, image: np.ndarray) -> np.ndarray:
        """The log-mel an image (or a stack of images) stands for, float32.

        Undoes the inversion, the flip, then the min-max scaling with the statistics the
        store used: exact to half a quantization step, ``(max - min) / 510``, wherever the
        scaling did not clip.
        """
        return image_to_logmel(image, self.scale)

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
        image = (
            self[index_or_image]
            if isinstance(index_or_image, (int, np.integer))
            else np.asarray(index_or_image)
        )
        if np.shape(image) != self.config.image_shape:
            raise ValueError(
                f"Expected one image of shape {self.config.image_shape}. "
                f"Got shape {np.shape(image)} instead."
            )
        return logmel_to_audio(self.to_logmel(image), self.config, n_iter=n_iter, seed=seed)


def logmel_to_audio(
    logmel: np.ndarray, config: SpectrogramConfig, *, n_iter: int = 32, seed: int = 0
) -> np.ndarray:
    """Griffin-Lim audio for a log-mel of ``config``'s analysis, seeded (see ``to_audio``)."""
    mel_power = np.maximum(np.exp(np.asarray(logmel, np.float64)) - config.eps, 0.0)
    stft_magnitude = librosa.feature.inverse.mel_to_stft(
        mel_power.astype(np.float32),
        sr=config.sample_rate,
        n_fft=config.n_fft,
        power=features.POWER,
        fmin=config.fmin,
        fmax=config.fmax,
        htk=features.MEL_HTK,
        norm=features.MEL_NORM,
    )
    return librosa.griffinlim(
        stft_magnitude,
        n_iter=n_iter,
        hop_length=config.hop_length,
        n_fft=config.n_fft,
        window=features.WINDOW,
        center=features.CENTER,
        pad_mode=features.PAD_MODE,
        length=config.n_samples,
        random_state=seed,
    ).astype(np.float32)


def _chunk_decoder(images: zarr.Array) -> Callable[[int, np.ndarray], None] | None:
    """A function that decodes one whole chunk of ``images`` into a buffer, or None.

    Given for a local store holding the layout specpipe writes (chunks of whole uint8
    images, encoded as bytes, then zstd):
    it reads the chunk's file and decodes it with numcodecs' Zstd, the decoder zarr's own
    ZstdCodec calls, without zarr's asynchronous machinery around it. Measured in a
    DataLoader worker that machinery cost more than the decoding, and reading through this
    function made the read benchmark 13 to 27% faster. For any other store or encoding,
    None: reads go through zarr.
    """
    metadata = images.metadata
    if (
        not isinstance(images.store, LocalStore)
        or not isinstance(metadata, ArrayV3Metadata)
        or images.dtype != np.uint8
        or images.chunks[1:] != images.shape[1:]  # a chunk is whole images
        or [type(codec) for codec in metadata.codecs] != [BytesCodec, ZstdCodec]
    ):
        return None
    directory = Path(images.store.root) / images.path
    zstd = Zstd()

    def decode(chunk: int, out: np.ndarray) -> None:
        key = metadata.encode_chunk_key((chunk, 0, 0))
        try:
            encoded = (directory / key).read_bytes()
        except FileNotFoundError:  # zarr leaves out chunks that hold only the fill value
            out.fill(metadata.fill_value)
            return
        zstd.decode(encoded, out=out)

    return decode


def open_store(path: str | os.PathLike[str]) -> SpectrogramStore:
    """Open a finished specpipe store for reading.

    Raises
    ------
    StoreError
        Nothing is at ``path``, it is not a specpipe store, or its run never finished.
    """
    return SpectrogramStore(path)
