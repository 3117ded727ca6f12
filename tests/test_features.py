import librosa
import numpy as np
import pytest

from pipeline.config import SpectrogramConfig
from pipeline.features import log_mel, mel_filters
from tests.conftest import librosa_log_mel

CONFIGS = [
    SpectrogramConfig.from_options(),
    SpectrogramConfig.from_options(
        sample_rate=16000, hop_length=160, n_fft=400, n_mels=80, fmin=20, fmax=7600, duration=0.75
    ),
    SpectrogramConfig.from_options(sample_rate=44100, hop_length=512, n_mels=64, frames=40),
]


@pytest.mark.parametrize("config", CONFIGS, ids=["default", "speech", "44k"])
def test_matches_librosa_melspectrogram(config, rng):
    clips = (rng.standard_normal((3, config.n_samples)) * 0.3).astype(np.float32)
    clips[1, config.n_samples // 2 :] = 0  # silence reaches log(eps)
    ours = log_mel(clips, config)
    assert ours.shape == (3, config.n_mels, config.n_frames)
    assert ours.dtype == np.float32
    for clip, image in zip(clips, ours, strict=True):
        np.testing.assert_allclose(image, librosa_log_mel(clip, config), rtol=1e-5, atol=1e-5)


def test_batch_equals_one_at_a_time(rng):
    config = CONFIGS[0]
    clips = rng.standard_normal((5, config.n_samples)).astype(np.float32)
    batched = log_mel(clips, config)
    for i in range(5):
        np.testing.assert_array_equal(batched[i], log_mel(clips[i], config))


def test_empty_batch_has_the_image_shape():
    config = CONFIGS[0]
    assert log_mel(np.zeros((0, config.n_samples), np.float32), config).shape == (0, 128, 87)


def test_filter_bank_is_built_once_and_read_only():
    kwargs = {"sr": 22050, "n_fft": 512, "n_mels": 128, "fmin": 0.0, "fmax": 11025.0}
    first = mel_filters(**kwargs)
    assert mel_filters(**kwargs) is first
    assert not first.flags.writeable
    np.testing.assert_array_equal(first, librosa.filters.mel(**kwargs))
