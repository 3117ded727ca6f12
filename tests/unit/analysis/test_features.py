"""Log-mel spectrograms and their inverse, against librosa itself."""

import warnings

import librosa
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from melpipe.analysis.config import SpectrogramConfig
from melpipe.analysis.features import (
    LibrosaMel,
    _mel_blocks,
    count_empty_mel_filters,
    log_mel,
    mel_filters,
    power_spectrum,
)
from melpipe.analysis.inverse import log_mel_to_audio
from tests.helpers import librosa_log_mel, reference_image

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
    ours = log_mel(clips, **config.librosa_kwargs)
    assert ours.shape == (3, config.n_mels, config.n_frames)
    assert ours.dtype == np.float32
    for clip, image in zip(clips, ours, strict=True):
        np.testing.assert_allclose(image, librosa_log_mel(clip, config), rtol=1e-5, atol=1e-5)


def test_a_pure_tone_gives_librosas_images_in_its_quietest_bins():
    """The case that decided the FFT's precision (docs/design.md, "Precision"): a pure
    tone leaves most bins of a loud frame far below it, where a float32 transform's
    rounding moved 0.14% of the pixels of this image by a level; a float64 one, none."""
    config = CONFIGS[0]
    t = np.arange(config.sample_rate // 2) / config.sample_rate
    y = np.zeros(config.n_samples, np.float32)
    y[: len(t)] = 0.5 * np.sin(2 * np.pi * 440 * t)
    expected = librosa_log_mel(y, config)
    lo, hi = float(expected.min()), float(expected.max())
    ours = log_mel(y, **config.librosa_kwargs)
    np.testing.assert_array_equal(reference_image(ours, lo, hi), reference_image(expected, lo, hi))


def test_takes_librosas_keywords_and_defaults_fmax_to_nyquist(rng):
    y = rng.standard_normal(8000).astype(np.float32)
    ours = log_mel(y, sr=8000, n_fft=256, hop_length=128, n_mels=20)
    mel = librosa.feature.melspectrogram(y=y, sr=8000, n_fft=256, hop_length=128, n_mels=20)
    np.testing.assert_allclose(ours, np.log(mel + 1e-9), rtol=1e-5, atol=1e-5)


def test_an_odd_window_gives_librosas_frames_when_the_clip_is_a_whole_number_of_hops(rng):
    y = rng.standard_normal(1024).astype(np.float32)  # 8 hops of 128
    ours = log_mel(y, sr=8000, n_fft=255, hop_length=128, n_mels=20)
    mel = librosa.feature.melspectrogram(y=y, sr=8000, n_fft=255, hop_length=128, n_mels=20)
    np.testing.assert_allclose(ours, np.log(mel + 1e-9), rtol=1e-5, atol=1e-5)
    assert ours.shape[-1] == 8
    config = SpectrogramConfig.from_options(sample_rate=8000, hop_length=128, n_fft=255,
                                            n_mels=20, frames=8)  # fmt: skip
    clip = np.zeros(config.n_samples, np.float32)
    assert config.n_frames == log_mel(clip, **config.librosa_kwargs).shape[-1] == 8


def test_batch_equals_one_at_a_time(rng):
    kwargs = CONFIGS[0].librosa_kwargs
    clips = rng.standard_normal((13, CONFIGS[0].n_samples)).astype(np.float32)
    batched = log_mel(clips, **kwargs)  # over several sub-batches of the transform
    np.testing.assert_array_equal(log_mel(clips[3:11], **kwargs), batched[3:11])
    for i in range(13):
        np.testing.assert_array_equal(batched[i], log_mel(clips[i], **kwargs))


def test_empty_batch_has_the_image_shape():
    config = CONFIGS[0]
    empty = np.zeros((0, config.n_samples), np.float32)
    assert log_mel(empty, **config.librosa_kwargs).shape == (0, 128, 87)


def test_huge_samples_give_a_non_finite_log_mel_not_a_warning():
    y = (1e20 * np.sin(np.arange(22050) * 0.1)).astype(np.float32)
    assert not np.isfinite(log_mel(y, **CONFIGS[0].librosa_kwargs)).all()


def test_filter_bank_is_built_once_and_read_only():
    kwargs = {"sr": 22050, "n_fft": 512, "n_mels": 128, "fmin": 0.0, "fmax": 11025.0}
    first = mel_filters(**kwargs)
    assert mel_filters(**kwargs) is first
    assert not first.flags.writeable
    np.testing.assert_array_equal(first, librosa.filters.mel(**kwargs))


def filter_banks(rates: list[int], max_fft: int) -> st.SearchStrategy[dict]:
    """Keyword arguments of a filter bank: any rate of ``rates``, window and band count,
    a band range from anywhere in the lower half to anywhere in the upper, either mel
    scale and either norm."""

    def bank(sr, n_fft, n_mels, fmin_share, fmax_share, htk, norm) -> dict:
        return {"sr": sr, "n_fft": n_fft, "n_mels": n_mels, "fmin": fmin_share * sr / 2,
                "fmax": fmax_share * sr / 2, "htk": htk, "norm": norm}  # fmt: skip

    return st.builds(bank, st.sampled_from(rates), st.integers(16, max_fft),
                     st.integers(1, 160), st.floats(0, 0.5), st.floats(0.55, 1.0),
                     st.booleans(), st.sampled_from(["slaney", "none"]))  # fmt: skip


def librosa_bank(kwargs: dict) -> np.ndarray:
    """``librosa.filters.mel`` of these keywords (norm "none" is librosa's None)."""
    norm = None if kwargs["norm"] == "none" else kwargs["norm"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # librosa's, for empty filters
        return librosa.filters.mel(**{**kwargs, "norm": norm}, dtype=np.float32)


@settings(max_examples=300, deadline=None)
@given(kwargs=filter_banks([8000, 16000, 22050, 44100], max_fft=1024))
def test_empty_filters_are_counted_as_librosa_builds_them(kwargs):
    """Counted without building the filter bank, which can be gigabytes: the count must be
    exactly what the real filter bank shows."""
    expected = int((mel_filters(**kwargs).max(axis=1) == 0).sum())
    counted = {k: v for k, v in kwargs.items() if k != "norm"}  # a norm empties no filter
    assert count_empty_mel_filters(**counted) == expected


ALL_RATES = [8000, 16000, 22050, 44100, 48000]


@settings(max_examples=200, deadline=None)
@given(kwargs=filter_banks(ALL_RATES, max_fft=4096))
def test_filter_bank_equals_librosas_bit_for_bit(kwargs):
    np.testing.assert_array_equal(mel_filters(**kwargs), librosa_bank(kwargs), strict=True)


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_fft=st.sampled_from([16, 255, 256, 400, 512, 1024, 2048]),
    hop_share=st.floats(0.05, 1.0),
    clips=st.integers(1, 4),
    length=st.integers(1, 6000),
)
def test_power_spectrum_is_librosas_to_float32_rounding(seed, n_fft, hop_share, clips, length):
    """Signals shorter than a frame, odd windows and hops down to a twentieth of the
    window: the same frames as librosa's, and every bin's power within float32 rounding
    of librosa's, the quietest bins of a loud frame included."""
    hop = max(1, round(hop_share * n_fft))
    y = (np.random.default_rng(seed).standard_normal((clips, length)) * 0.3).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # librosa's, for n_fft > length
        stft = librosa.stft(
            y, n_fft=n_fft, hop_length=hop, window="hann", center=True, pad_mode="constant"
        )
    expected = (np.abs(stft.astype(np.complex128)) ** 2).transpose(0, 2, 1)
    ours = power_spectrum(y, LibrosaMel(sample_rate=8000, n_fft=n_fft, hop_length=hop, n_mels=1))
    assert ours.shape == expected.shape and ours.dtype == np.float32
    # librosa rounds the real and imaginary parts to float32, melpipe the power.
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-30)


@settings(max_examples=200, deadline=None)
@given(kwargs=filter_banks(ALL_RATES, max_fft=4096))
def test_mel_blocks_hold_every_weight_of_the_filter_bank(kwargs):
    filters = mel_filters(**kwargs)
    rebuilt = np.zeros_like(filters)
    for band, lo, hi, weights in _mel_blocks(**kwargs):
        assert not weights.flags.writeable
        rebuilt[band : band + len(weights), lo:hi] = weights
    np.testing.assert_array_equal(rebuilt, filters)


def test_log_mel_of_a_batch_is_the_dense_product_in_float32(rng):
    """Blocks and sub-batches change which zeros are multiplied, never the sums."""
    kwargs = CONFIGS[1].librosa_kwargs
    clips = (rng.standard_normal((13, CONFIGS[1].n_samples)) * 0.3).astype(np.float32)
    power = power_spectrum(clips, CONFIGS[1])
    filters = mel_filters(sr=16000, n_fft=400, n_mels=80, fmin=20, fmax=7600)
    dense = np.log(np.einsum("mb,cfb->cmf", filters.astype(np.float64), power) + 1e-9)
    np.testing.assert_allclose(log_mel(clips, **kwargs), dense, rtol=1e-6, atol=1e-6)


def test_inverse_is_librosas_mel_to_audio_with_a_seeded_phase(rng):
    config = CONFIGS[1]
    y = (0.3 * np.sin(2 * np.pi * 440 * np.arange(config.n_samples) / 16000)).astype(np.float32)
    logmel = log_mel(y, **config.librosa_kwargs)
    kwargs = config.librosa_kwargs | {"length": config.n_samples, "n_iter": 8}
    audio = log_mel_to_audio(logmel, **kwargs)
    assert audio.shape == (config.n_samples,) and audio.dtype == np.float32
    np.testing.assert_array_equal(audio, log_mel_to_audio(logmel, **kwargs))  # seeded
    # librosa's mel_to_audio, written out, since it takes no seed for the initial phase.
    mel = np.maximum(np.exp(logmel.astype(np.float64)) - 1e-9, 0).astype(np.float32)
    magnitude = librosa.feature.inverse.mel_to_stft(mel, sr=16000, n_fft=400, fmin=20, fmax=7600)
    expected = librosa.griffinlim(
        magnitude, n_iter=8, hop_length=160, n_fft=400, length=config.n_samples, random_state=0
    )
    np.testing.assert_allclose(audio, expected, atol=1e-5)
