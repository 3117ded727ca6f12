"""Log-mel values to uint8 images and back.

An image is the log-mel min-max scaled to 0..255 with the dataset statistics, rounded to
nearest and clipped (never wrapped), flipped so that row 0 is the highest mel band (low
frequencies at the bottom of a picture), and inverted so that black means more energy.
With ``band-moments`` statistics each mel band has its own min and max; with
``image-top-db`` each image its own, from its maximum.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from melpipe.analysis.pixels import LEVELS
from melpipe.analysis.stats import Range
from melpipe.errors import ArgumentError


def scale_to_uint8(logmel: np.ndarray, scale: Range) -> tuple[np.ndarray, np.ndarray]:
    """Images of log-mel spectrograms, and how many pixels of each the clipping changed.

    The one function that makes images: the pipeline's tasks call it, and so do the tests.

    Parameters
    ----------
    logmel : np.ndarray [shape=(..., n_mels, n_frames)]
    scale : Range
        The log-mel values that map to 0 and 255 before the inversion (per band, or one
        pair for all, or relative to each image's maximum).

    Returns
    -------
    image : np.ndarray [shape=(..., n_mels, n_frames)], uint8
    n_clipped : np.ndarray [shape=(...)], int64
        Per image, the pixels whose rounded value fell outside 0..255.
    """
    image, low, high = scale_with_ends(logmel, scale)
    return image, low + high


def scale_with_ends(logmel: np.ndarray, scale: Range) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As :func:`scale_to_uint8`, with the clipped pixels of each image counted at each
    end of the scale apart: below its minimum (white), and above its maximum (black)."""
    levels = _rounded(logmel, scale)
    low = np.count_nonzero((levels < 0).reshape(*levels.shape[:-2], -1), axis=-1)
    high = np.count_nonzero((levels > 255).reshape(*levels.shape[:-2], -1), axis=-1)
    return 255 - _clipped(levels)[..., ::-1, :], low, high


def levels_of(logmel: np.ndarray, scale: Range) -> np.ndarray:
    """The levels 0..255 of log-mel values on a scale, before the flip and the inversion."""
    return _clipped(_rounded(logmel, scale))


def level_counts(images: np.ndarray) -> np.ndarray:
    """How many pixels of uint8 ``images`` (any shape) stand for each level 0..255 of the
    scale: the counts of their values, read back through the inversion."""
    return np.bincount(np.asarray(images).ravel(), minlength=LEVELS)[::-1]


def _clipped(levels: np.ndarray) -> np.ndarray:
    return np.clip(levels, 0, 255, out=levels).astype(np.uint8)


def _rounded(logmel: np.ndarray, scale: Range) -> np.ndarray:
    # In float64, so that a value's rounding does not depend on the dtype it came in; in
    # place, because fresh temporaries of a batch's size cost more than the arithmetic.
    logmel = np.asarray(logmel)
    # An image's maximum as pass 1 records it (clip_max): the same reduction, in float32.
    lo, hi = scale.bounds(logmel.max(axis=(-2, -1)) if scale.relative else None)
    levels = logmel.astype(np.float64)
    levels -= lo
    levels /= hi - lo
    levels *= 255.0
    return np.rint(levels, out=levels)


def image_to_logmel(image: np.ndarray, scale: Range, clip_max: Any = None) -> np.ndarray:
    """The log-mel values an image stands for: undo the inversion, the flip, the scaling
    (for a relative scale, from each image's ``clip_max``, shape (...)).

    Exact up to half a quantization step, ``(max - min) / 510`` (of the pixel's band, per
    band), where nothing was clipped.
    """
    if scale.relative and clip_max is None:
        raise ArgumentError(
            "Images scaled from their own maximum (`image-top-db`) are undone with each "
            "one's `clip_max`: give the clips' indices (`store.features(index)`)."
        )
    lo, hi = scale.bounds(clip_max)
    levels = 255.0 - np.asarray(image, np.float64)[..., ::-1, :]
    return (levels * ((hi - lo) / 255.0) + lo).astype(np.float32)
