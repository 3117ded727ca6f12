"""Shared fixtures: seeded randomness, small generated datasets, a real local Dask cluster."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

from pipeline.config import SpectrogramConfig

# (relative path, sample rate, channels, seconds, subtype): a small dataset that mixes what
# real ones mix, with clips both shorter and longer than the default one-second clip.
GOOD_FILES = [
    ("a/tone_16k.wav", 16000, 1, 0.6, "PCM_16"),
    ("a/tone_44k_stereo.wav", 44100, 2, 1.4, "PCM_24"),
    ("a/sub/noise_48k.flac", 48000, 1, 1.1, "PCM_16"),
    ("b/chirp_22k.wav", 22050, 1, 1.0, "FLOAT"),
    ("b/chirp_32k_stereo.flac", 32000, 2, 0.3, "PCM_24"),
    ("b/vorbis_22k.ogg", 22050, 1, 0.8, "VORBIS"),
    ("c/long_8k.wav", 8000, 1, 3.0, "PCM_16"),
    ("c/quiet_22k.wav", 22050, 2, 1.7, "PCM_16"),
    ("d/pulse_44k.aiff", 44100, 1, 0.5, "PCM_16"),
    ("d/Upper_case.WAV", 22050, 1, 0.9, "PCM_16"),
]
BROKEN_FILES = [
    "bad/empty.wav",
    "bad/header_only.wav",
    "bad/not_audio.wav",
    "bad/nan.wav",
    "bad/truncated.wav",
]


def librosa_log_mel(y: np.ndarray, config: SpectrogramConfig) -> np.ndarray:
    """The independent reference: librosa's own melspectrogram, then the post's log."""
    mel = librosa.feature.melspectrogram(
        y=y,
        sr=config.sample_rate,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        n_mels=config.n_mels,
        fmin=config.fmin,
        fmax=config.fmax,
    )
    return np.log(mel + 1e-9)


def librosa_clip_log_mel(path: Path, config: SpectrogramConfig) -> np.ndarray:
    """A file's reference log-mel: librosa.load at the rate, cropped or padded, analysed."""
    y, _ = librosa.load(path, sr=config.sample_rate, mono=True)
    return librosa_log_mel(librosa.util.fix_length(y, size=config.n_samples), config)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261125)


def synth(rng: np.random.Generator, sr: int, channels: int, seconds: float) -> np.ndarray:
    """A decaying tone plus noise, distinct per channel, float32 of shape (frames, channels)."""
    n = int(sr * seconds)
    t = np.arange(n) / sr
    columns = []
    for c in range(channels):
        f0 = rng.uniform(100, min(3000, sr / 4))
        tone = np.sin(2 * np.pi * f0 * t + c) * np.exp(-rng.uniform(1, 5) * t)
        columns.append(0.5 * tone + 0.05 * rng.standard_normal(n))
    return (np.stack(columns, axis=1) * rng.uniform(0.2, 0.9)).astype(np.float32)


def write_dataset(root: Path, rng: np.random.Generator, *, broken: bool = True) -> Path:
    for rel, sr, channels, seconds, subtype in GOOD_FILES:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, synth(rng, sr, channels, seconds), sr, subtype=subtype)
    (root / "a" / "notes.txt").write_text("not audio, and not listed\n")
    (root / ".hidden.wav").write_bytes(b"hidden files are skipped")
    if broken:
        bad = root / "bad"
        bad.mkdir(parents=True, exist_ok=True)
        (bad / "empty.wav").write_bytes(b"")
        sf.write(bad / "header_only.wav", np.zeros((0, 1), np.float32), 22050)
        (bad / "not_audio.wav").write_text("this is text, not RIFF\n")
        nan = synth(rng, 22050, 1, 0.5)
        nan[100] = np.nan
        sf.write(bad / "nan.wav", nan, 22050, subtype="FLOAT")
        sf.write(bad / "truncated.wav", synth(rng, 22050, 1, 1.0), 22050, subtype="PCM_16")
        size = os.path.getsize(bad / "truncated.wav")
        os.truncate(bad / "truncated.wav", size // 3)
    return root


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten good files of mixed formats and five broken ones, shared by the whole session."""
    return write_dataset(tmp_path_factory.mktemp("dataset"), np.random.default_rng(7))


@pytest.fixture(scope="session")
def config() -> SpectrogramConfig:
    return SpectrogramConfig.from_options(n_mels=64, hop_length=256, duration=1.0)


@pytest.fixture(scope="session")
def cluster_address() -> Iterator[str]:
    """A real scheduler with two worker processes on loopback, for the whole session."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",
    ) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="session")
def finished_store(dataset: Path, config: SpectrogramConfig, tmp_path_factory) -> Path:
    """The session dataset preprocessed in plain loops, in chunks of 4 clips."""
    from pipeline.runner import SYNC, preprocess

    out = tmp_path_factory.mktemp("stores") / "finished.zarr"
    preprocess(dataset, out, config, scheduler=SYNC, batch_size=4)
    return out
