import dataclasses
import json

import pytest

from melpipe import records
from melpipe.analysis.config import SpectrogramConfig
from melpipe.errors import ConfigError, RecordError


def test_defaults_follow_the_post_and_librosa():
    config = SpectrogramConfig.from_options()
    assert config.sample_rate == 22050
    assert config.n_fft == 2 * config.hop_length == 512
    assert config.fmax == config.sample_rate / 2
    assert config.n_samples == 22050
    assert config.n_frames == 1 + 22050 // 256


@pytest.mark.parametrize("frames", [2, 64, 87, 128])
def test_frames_gives_exactly_that_many_frames(frames):
    config = SpectrogramConfig.from_options(frames=frames, hop_length=128, n_mels=40)
    assert config.n_frames == frames


def test_defaults_are_derived_for_any_sample_rate():
    config = SpectrogramConfig(sample_rate=16000, hop_length=160, n_mels=80)
    assert (config.fmax, config.n_fft, config.n_samples) == (8000.0, 320, 16000)
    assert SpectrogramConfig(sample_rate=16000).fmax == 8000.0
    assert SpectrogramConfig() == SpectrogramConfig.from_options()


def test_a_size_too_large_for_any_machine_is_refused_not_allocated():
    # A filter bank of 128 x 50,000,001 float32 would take 25.6 GB, and checking 10**8 mel
    # bands for empty ones took 2 GB: such values are refused before anything is computed.
    with pytest.raises(ConfigError, match=r"Expected `n_fft` <= 65536\. Got 100000000"):
        SpectrogramConfig.from_options(hop_length=50_000_000)
    with pytest.raises(ConfigError, match="`n_mels=100000000` is more than the 1025"):
        SpectrogramConfig(n_mels=10**8, n_fft=2048)
    # Within those bounds, a size too large for this machine is the run plan's refusal.
    assert SpectrogramConfig.from_options(hop_length=16384, frames=60000).n_fft == 32768


def test_duration_is_rounded_to_samples():
    assert SpectrogramConfig.from_options(duration=0.5, sample_rate=16000).n_samples == 8000


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"fmax": 12000.0}, "Nyquist"),
        ({"fmin": 5000.0, "fmax": 4000.0}, "`fmin` < `fmax`"),
        ({"fmin": -1.0}, "`fmin` >= 0"),
        ({"n_mels": 400}, "`n_mels=400` is more than the 257 frequency bins of `n_fft=512`"),
        ({"n_mels": 200}, "too large for `n_fft=512`.*16 mel filters would be empty"),
        ({"duration": 0.0}, "positive `duration`"),
        ({"duration": -1.0}, "positive `duration`"),
        ({"duration": 1.0, "frames": 10}, "either `duration` or `frames`"),
        ({"frames": 1}, "`frames` >= 2"),
        ({"hop_length": 0}, "`hop_length` to be a positive integer"),
        ({"sample_rate": 0}, "`sample_rate` to be a positive integer"),
        ({"n_mels": 2.5}, "`n_mels` to be a positive integer"),
        ({"fmax": float("nan")}, "finite"),
    ],
)
def test_invalid_parameters_are_named(options, message):
    with pytest.raises(ConfigError, match=message):
        SpectrogramConfig.from_options(**options)


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SpectrogramConfig().n_mels = 3  # type: ignore[misc]


def test_round_trips_through_json():
    config = SpectrogramConfig.from_options(sample_rate=16000, n_mels=80, fmin=20, fmax=7600)
    recorded = json.loads(json.dumps(records.to_dict(config)))
    assert records.from_dict(SpectrogramConfig, recorded) == config
    for key in ("n_frames", "window", "center", "mel_norm", "resampler", "crop", "pad", "eps"):
        assert key in recorded


def test_from_dict_refuses_conventions_it_does_not_implement():
    recorded = records.to_dict(SpectrogramConfig()) | {"window": "hamming"}
    with pytest.raises(RecordError, match=r"'window' is 'hamming', where this version .* 'hann'"):
        records.from_dict(SpectrogramConfig, recorded)
