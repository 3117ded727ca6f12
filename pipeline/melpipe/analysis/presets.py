"""Named sets of analysis parameters that reproduce the features of a model or vocoder.

A preset gives the defaults of a :class:`~melpipe.analysis.config.SpectrogramConfig` (every option
given beside it still wins) and of the statistic that scales the images. Each value was
read in its source, at the commit named in docs/cli.md, "Presets"; the tests reimplement
each source's feature function from it and compare (tests/test_presets.py).

This module holds plain values, so that the config can import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from melpipe.analysis.stats import StatsName


@dataclass(frozen=True)
class Preset:
    """A preset: its name, what it reproduces, the config's defaults under it, and the
    statistic (with its options) that scales the images unless another is asked for."""

    name: str
    source: str
    config: dict[str, Any] = field(default_factory=dict)
    stats: StatsName = "mean"
    options: dict[str, Any] = field(default_factory=dict)


# HiFi-GAN's analysis, which BigVGAN kept (its meldataset.py is adapted from HiFi-GAN's):
# magnitude sqrt(re^2 + im^2 + 1e-9), (n_fft - hop) / 2 reflected samples either side and
# frames from there, librosa's Slaney filter bank, log(clamp(x, 1e-5)), and the audio
# scaled to a peak of 0.95 first (their MelDataset when not fine-tuning).
_HIFIGAN: dict[str, Any] = {
    "n_fft": 1024,
    "hop_length": 256,
    "win_length": 1024,
    "fmin": 0.0,
    "power": 1.0,
    "stft_eps": 1e-9,
    "padding": "same",
    "log": "clamp",
    "eps": 1e-5,
    "peak_normalize": 0.95,
}

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("post", "the post melpipe grew from: log(mel power + 1e-9), librosa's defaults"),
        Preset(
            "specgan",
            "chrisdonahue/wavegan train_specgan.py (t_to_f, moments)",
            {
                "sample_rate": 16000,
                "n_samples": 16384,
                "n_fft": 256,
                "hop_length": 128,
                "padding": "end",
                "power": 1.0,
                "spectrum": "linear",
                "drop_nyquist": True,
                "eps": 1e-6,
            },
            stats="band-moments",
            options={"clip_std": 3.0},
        ),
        Preset(
            "hifigan",
            "jik876/hifi-gan meldataset.py with config_v1.json",
            {**_HIFIGAN, "sample_rate": 22050, "n_samples": 8192, "n_mels": 80, "fmax": 8000.0},
        ),
        Preset(
            "bigvgan-22k",
            "NVIDIA/BigVGAN meldataset.py with configs/bigvgan_v2_22khz_80band_256x.json",
            {**_HIFIGAN, "sample_rate": 22050, "n_samples": 65536, "n_mels": 80},
        ),
        Preset(
            "bigvgan-24k",
            "NVIDIA/BigVGAN meldataset.py with configs/bigvgan_v2_24khz_100band_256x.json",
            {**_HIFIGAN, "sample_rate": 24000, "n_samples": 65536, "n_mels": 100},
        ),
        Preset(
            "bigvgan-44k",
            "NVIDIA/BigVGAN meldataset.py with configs/bigvgan_v2_44khz_128band_256x.json",
            {**_HIFIGAN, "sample_rate": 44100, "n_samples": 65536, "n_mels": 128},
        ),
        Preset(
            "vocos",
            "gemelo-ai/vocos feature_extractors.py (MelSpectrogramFeatures) and configs/vocos.yaml",
            # torchaudio.transforms.MelSpectrogram's defaults: centred frames padded by
            # reflection, HTK's mel scale without norm; then safe_log, log(clip(x, 1e-7)).
            {
                "sample_rate": 24000,
                "n_samples": 16384,
                "n_fft": 1024,
                "hop_length": 256,
                "win_length": 1024,
                "n_mels": 100,
                "fmin": 0.0,
                "power": 1.0,
                "pad_mode": "reflect",
                "mel_htk": True,
                "mel_norm": "none",
                "log": "clamp",
                "eps": 1e-7,
            },
        ),
        Preset(
            "audio-diffusion",
            "teticio/audio-diffusion audiodiffusion/mel.py (Mel, its defaults)",
            # librosa.feature.melspectrogram's defaults on slices of x_res * hop - 1
            # samples (256 frames); power_to_db's amin of 1e-10, as a natural log.
            {
                "sample_rate": 22050,
                "n_samples": 256 * 512 - 1,
                "n_fft": 2048,
                "hop_length": 512,
                "n_mels": 256,
                "log": "clamp",
                "eps": 1e-10,
            },
            stats="image-top-db",
            options={"top_db": 80.0},
        ),
    )
}
PRESET_NAMES: tuple[str, ...] = tuple(PRESETS)
