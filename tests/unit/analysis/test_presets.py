"""Each preset's features against its source's feature function, reimplemented in
:mod:`tests.references` from that source; and what a preset sets in a config."""

from __future__ import annotations

import math

import librosa
import numpy as np
import pytest

from melpipe.analysis.config import SpectrogramConfig
from melpipe.analysis.features import spectrogram
from melpipe.analysis.presets import PRESET_NAMES, PRESETS
from tests.helpers import (
    TESTS,
)
from tests.references import REFERENCES, reference_image_stack

PLUCK = TESTS / "audio" / "pluck-pcm16.wav"


def test_every_preset_but_the_posts_has_a_reference():
    assert set(REFERENCES) == set(PRESET_NAMES) - {"post"}


def recorded(config: SpectrogramConfig) -> np.ndarray:
    """The recorded pluck at the preset's rate (librosa.load: soxr, mono), repeated at
    falling gains to fill a clip."""
    y, _ = librosa.load(PLUCK, sr=config.sample_rate, mono=True)
    reps = -(-config.n_samples // len(y))
    gains = np.repeat(0.9 ** np.arange(reps), len(y))[: config.n_samples]
    return (np.resize(y, config.n_samples) * gains).astype(np.float32)


def generated(config: SpectrogramConfig, rng: np.random.Generator) -> np.ndarray:
    """A chirp over noise, with a stretch of digital silence that reaches each log's floor
    and a loud start and end that the reflect paddings mirror."""
    n, sr = config.n_samples, config.sample_rate
    t = np.arange(n) / sr
    y = 0.4 * np.sin(2 * np.pi * (200 + 3000 * t / t[-1]) * t) + 0.05 * rng.standard_normal(n)
    y[n // 3 : n // 2] = 0.0
    return y.astype(np.float32)


@pytest.mark.parametrize("name", list(REFERENCES))
@pytest.mark.parametrize("audio", ["recorded", "generated"])
def test_a_presets_features_equal_its_sources(name, audio, rng):
    config = SpectrogramConfig.from_options(preset=name)
    y = recorded(config) if audio == "recorded" else generated(config, rng)
    ours = spectrogram(y, config)
    expected = REFERENCES[name](y)
    assert ours.shape == expected.shape == config.image_shape
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", ["hifigan", "bigvgan-24k", "vocos"])
def test_a_batch_of_clips_gives_each_clips_features(name, rng):
    config = SpectrogramConfig.from_options(preset=name)
    clips = np.stack([generated(config, rng) * g for g in (1.0, 0.1, 0.0)])
    batched = spectrogram(clips, config)
    for clip, features in zip(clips, batched, strict=True):
        np.testing.assert_array_equal(spectrogram(clip, config), features)
        np.testing.assert_allclose(features, REFERENCES[name](clip), rtol=0, atol=1e-4)


def test_presets_record_the_values_their_sources_give():
    """The figures of the table in docs/cli.md, as the configs give them."""
    shapes = {name: SpectrogramConfig.from_options(preset=name).image_shape
              for name in PRESET_NAMES}  # fmt: skip
    assert shapes == {
        "post": (128, 87),
        "specgan": (128, 128),  # 16,384 samples: 128 frames of 128 bins
        "hifigan": (80, 32),  # segment_size 8192: 32 frames
        "bigvgan-22k": (80, 256),  # segment_size 65536
        "bigvgan-24k": (100, 256),
        "bigvgan-44k": (128, 256),
        "vocos": (100, 65),  # num_samples 16384, centred: 65 frames
        "audio-diffusion": (256, 256),  # x_res * hop - 1 samples: 256 frames
    }
    assert PRESETS["specgan"].stats == "band-moments"
    assert PRESETS["specgan"].options == {"clip_std": 3.0}
    assert PRESETS["audio-diffusion"].stats == "image-top-db"
    assert PRESETS["audio-diffusion"].options == {"top_db": 80.0}


def test_an_option_given_beside_a_preset_wins():
    config = SpectrogramConfig.from_options(preset="hifigan", n_mels=128, fmax=11025)
    assert (config.n_mels, config.fmax, config.log, config.preset) == (128, 11025, "clamp",
                                                                       "hifigan")  # fmt: skip
    longer = SpectrogramConfig.from_options(preset="specgan", frames=64)
    assert longer.image_shape == (128, 64) and longer.n_samples == 64 * 128


def test_image_top_db_scales_each_image_from_its_own_maximum(rng):
    """audio-diffusion's scale: each image's maximum at the top, 80 dB below it at the
    bottom; undone from each image's maximum, which it needs."""
    from melpipe.analysis.scaling import image_to_logmel, scale_to_uint8
    from melpipe.analysis.stats import Range
    from melpipe.errors import ArgumentError

    scale = Range(-80 / (10 / math.log(10)), 0.0, relative=True)
    logmel = rng.uniform(-25, 0, (3, 4, 5)).astype(np.float32) + np.float32([[[0]], [[5]], [[-9]]])
    images, clipped = scale_to_uint8(logmel, scale)
    top = logmel.max(axis=(1, 2))
    expected = reference_image_stack(logmel, top + scale.min, top)
    np.testing.assert_array_equal(images, expected)
    assert (images.min(axis=(1, 2)) == 0).all()  # every image's maximum is black
    back = image_to_logmel(images, scale, top)
    inside = logmel >= (top + scale.min)[:, None, None]
    assert np.abs(back - logmel)[inside].max() <= scale.min / -510 + 1e-5
    assert (clipped == (~inside).sum(axis=(1, 2))).all()
    with pytest.raises(ArgumentError, match="clip_max"):
        image_to_logmel(images, scale)
