import numpy as np
import pytest

from melpipe.analysis.scaling import image_to_logmel, scale_to_uint8
from melpipe.analysis.stats import Range


def reference_image(logmel, lo, hi):
    """The documented scaling, written as a plain loop over pixels."""
    n_mels, n_frames = logmel.shape
    image = np.zeros((n_mels, n_frames), dtype=np.uint8)
    clipped = 0
    for m in range(n_mels):
        for t in range(n_frames):
            level = round((float(logmel[m, t]) - lo) / (hi - lo) * 255)  # half to even, as rint
            clipped += level < 0 or level > 255
            level = min(max(level, 0), 255)
            image[n_mels - 1 - m, t] = 255 - level  # flipped, then inverted
    return image, clipped


def test_matches_the_plain_loop(rng):
    logmel = rng.uniform(-25, 10, size=(16, 12)).astype(np.float32)
    scale = Range(-20.0, 5.0)
    image, clipped = scale_to_uint8(logmel, scale)
    expected, expected_clipped = reference_image(logmel, scale.min, scale.max)
    np.testing.assert_array_equal(image, expected)
    assert clipped == expected_clipped > 0


def test_out_of_range_values_clip_instead_of_wrapping():
    logmel = np.array([[-1.0], [0.0], [1.0], [2.0]], dtype=np.float32)
    image, clipped = scale_to_uint8(logmel, Range(0.0, 1.0))
    # Rows flipped: row 0 holds the last band (2.0, above the range: full energy, black).
    assert image[:, 0].tolist() == [0, 0, 255, 255]
    assert clipped == 2


def test_batches_scale_like_single_images(rng):
    logmel = rng.uniform(-20, 5, size=(3, 8, 5)).astype(np.float32)
    scale = Range(-20.0, 5.0)
    batch, _ = scale_to_uint8(logmel, scale)
    for i in range(3):
        np.testing.assert_array_equal(batch[i], scale_to_uint8(logmel[i], scale)[0])


def test_inverse_is_within_half_a_step_where_not_clipped(rng):
    scale = Range(-18.5, 4.25)
    logmel = rng.uniform(-25, 10, size=(32, 20)).astype(np.float32)
    image, _ = scale_to_uint8(logmel, scale)
    restored = image_to_logmel(image, scale)
    inside = (logmel >= scale.min) & (logmel <= scale.max)
    half_step = (scale.max - scale.min) / 510
    assert np.abs(restored - logmel)[inside].max() <= half_step * (1 + 1e-6)
    assert restored.min() >= scale.min - 1e-5
    assert restored.max() <= scale.max + 1e-5


@pytest.mark.parametrize("level", [0, 1, 128, 254, 255])
def test_inverse_undoes_flip_and_inversion(level):
    scale = Range(-10.0, 0.0)
    logmel = np.full((4, 3), scale.min + level * (scale.max - scale.min) / 255, np.float32)
    logmel[0] = scale.max  # lowest band loud: bottom row of the image, black
    image, _ = scale_to_uint8(logmel, scale)
    assert (image[-1] == 0).all()
    np.testing.assert_allclose(image_to_logmel(image, scale), logmel, atol=1e-5)
