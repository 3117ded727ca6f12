"""The sources' feature functions of each preset, reimplemented from those sources for
the tests of the presets (tests/unit/analysis/test_presets.py) and of the runs that use
them (tests/scenarios/test_preset_runs.py): torch for HiFi-GAN, BigVGAN and Vocos, numpy
following ``tf.signal.stft``'s semantics for SpecGAN (TensorFlow is not needed), librosa
for audio-diffusion. They compute in float64, so that what is compared is the recipe, not
float32 rounding.

Sources read (docs/cli.md, "Presets", names the commits):
- chrisdonahue/wavegan ``train_specgan.py``: ``t_to_f`` and ``moments``;
- jik876/hifi-gan ``meldataset.py`` (``mel_spectrogram``, ``MelDataset``), ``config_v1.json``;
- NVIDIA/BigVGAN ``meldataset.py`` and ``configs/bigvgan_v2_*_256x.json``;
- gemelo-ai/vocos ``vocos/feature_extractors.py`` (``MelSpectrogramFeatures``),
  ``vocos/modules.py`` (``safe_log``), ``configs/vocos.yaml``, and torchaudio's
  ``functional.melscale_fbanks`` and ``transforms.MelSpectrogram`` that it calls;
- teticio/audio-diffusion ``audiodiffusion/mel.py`` (``Mel``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import librosa
import numpy as np
import pytest

from tests.helpers import reference_image

torch = pytest.importorskip("torch")

# --- The sources' feature functions ---------------------------------------------------


def specgan(x: np.ndarray) -> np.ndarray:
    """wavegan's ``t_to_f`` up to its normalisation: ``tf.signal.stft(x, 256, 128,
    pad_end=True)`` (frames from sample 0 while one starts inside the signal, zeros
    appended, a periodic Hann window, an FFT of the next power of two), the Nyquist bin
    dropped (``X[:, :, :-1]``), ``log(abs(X) + 1e-6)``."""
    frame_length, frame_step = 256, 128
    fft_length = 1 << (frame_length - 1).bit_length()
    n_frames = -(-len(x) // frame_step)
    padded = np.zeros((n_frames - 1) * frame_step + frame_length)
    padded[: len(x)] = x
    frames = padded[np.arange(n_frames)[:, None] * frame_step + np.arange(frame_length)]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(frame_length) / frame_length)
    spectrum = np.fft.rfft(frames * window, n=fft_length)[:, :-1]
    return np.log(np.abs(spectrum) + 1e-6).T


def hifigan(y: np.ndarray, h: dict) -> np.ndarray:
    """HiFi-GAN's ``mel_spectrogram`` (BigVGAN's is the same steps), with ``h`` the keys of
    its JSON config: ``(n_fft - hop_size) / 2`` reflected samples either side,
    ``torch.stft(..., center=False)`` with a Hann window, ``sqrt(re^2 + im^2 + 1e-9)``,
    librosa's Slaney filter bank (as float32, ``.float()``), ``log(clamp(x, 1e-5))``."""
    mel = librosa.filters.mel(sr=h["sampling_rate"], n_fft=h["n_fft"], n_mels=h["num_mels"],
                              fmin=h["fmin"], fmax=h["fmax"])  # fmt: skip
    basis = torch.from_numpy(mel).float().double()
    window = torch.hann_window(h["win_size"], dtype=torch.float64)
    signal = torch.from_numpy(y.astype(np.float64))[None]
    pad = int((h["n_fft"] - h["hop_size"]) / 2)
    signal = torch.nn.functional.pad(signal.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    spec = torch.stft(signal, h["n_fft"], hop_length=h["hop_size"], win_length=h["win_size"],
                      window=window, center=False, normalized=False, onesided=True,
                      return_complex=True)  # fmt: skip
    spec = torch.sqrt(torch.view_as_real(spec).pow(2).sum(-1) + 1e-9)
    return torch.log(torch.clamp(basis @ spec, min=1e-5))[0].numpy()


def torchaudio_htk_fbanks(n_freqs: int, f_min: float, f_max: float, n_mels: int, sr: int):
    """``torchaudio.functional.melscale_fbanks(..., norm=None, mel_scale="htk")``: HTK mel
    points by ``torch.linspace`` (float32), bins from 0 to ``sr // 2``, triangles as
    librosa draws them, no norm. Shape (n_freqs, n_mels)."""
    all_freqs = torch.linspace(0, sr // 2, n_freqs)
    m_min, m_max = (2595.0 * math.log10(1.0 + f / 700.0) for f in (f_min, f_max))
    m_pts = torch.linspace(m_min, m_max, n_mels + 2)
    f_pts = 700.0 * (10.0 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down, up = -slopes[:, :-2] / f_diff[:-1], slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0)


def vocos(y: np.ndarray) -> np.ndarray:
    """Vocos's ``MelSpectrogramFeatures`` as configs/vocos.yaml sets it (24 kHz, n_fft 1024,
    hop 256, 100 mels, padding "center"): ``torchaudio.transforms.MelSpectrogram(power=1)``
    with its defaults (``torch.stft`` centred, reflect padding, a Hann window of n_fft;
    HTK mel scale, no norm, ``f_max = sr // 2``), then ``safe_log``, ``log(clip(x, 1e-7))``."""
    sr, n_fft, hop, n_mels = 24000, 1024, 256, 100
    signal = torch.from_numpy(y.astype(np.float64))[None]
    window = torch.hann_window(n_fft, dtype=torch.float64)
    spec = torch.stft(signal, n_fft, hop_length=hop, win_length=n_fft, window=window,
                      center=True, pad_mode="reflect", normalized=False, onesided=True,
                      return_complex=True).abs()  # fmt: skip
    fb = torchaudio_htk_fbanks(n_fft // 2 + 1, 0.0, float(sr // 2), n_mels, sr).double()
    mel = (spec.transpose(-1, -2) @ fb).transpose(-1, -2)
    return torch.log(torch.clip(mel, min=1e-7))[0].numpy()


def audio_diffusion_image(y: np.ndarray) -> np.ndarray:
    """``Mel.audio_slice_to_image`` of a slice, its PIL image as an array: ``power_to_db``
    with ``ref=np.max`` and ``top_db=80``, then ``((log_S + 80) * 255 / 80).clip(0, 255)
    + 0.5`` to uint8, row 0 the lowest band, bright for loud."""
    mel = librosa.feature.melspectrogram(y=y, sr=22050, n_fft=2048, hop_length=512, n_mels=256)
    log_s = librosa.power_to_db(mel, ref=np.max, top_db=80)
    return (((log_s + 80) * 255 / 80).clip(0, 255) + 0.5).astype(np.uint8)


def audio_diffusion(y: np.ndarray) -> np.ndarray:
    """audio-diffusion's ``Mel.audio_slice_to_image`` up to its image: librosa's
    melspectrogram with n_fft 2048, hop 512 and 256 mels (``y_res``), then
    ``power_to_db``'s ``10 log10(max(S, 1e-10))``, here in natural-log units (its
    reference and ``top_db`` are the image scale, compared in the pipeline test)."""
    mel = librosa.feature.melspectrogram(y=y, sr=22050, n_fft=2048, hop_length=512, n_mels=256)
    db = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
    return db * (math.log(10.0) / 10.0)


HIFIGAN_V1 = {"n_fft": 1024, "num_mels": 80, "sampling_rate": 22050, "hop_size": 256,
              "win_size": 1024, "fmin": 0, "fmax": 8000}  # fmt: skip


def bigvgan_v2(sr: int, num_mels: int) -> dict:
    """The keys of configs/bigvgan_v2_{22,24,44}khz_*band_256x.json that the analysis
    reads; ``fmax`` null, which librosa takes as sr / 2."""
    return {"n_fft": 1024, "num_mels": num_mels, "sampling_rate": sr, "hop_size": 256,
            "win_size": 1024, "fmin": 0, "fmax": None}  # fmt: skip


REFERENCES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "specgan": specgan,
    "hifigan": lambda y: hifigan(y, HIFIGAN_V1),
    "bigvgan-22k": lambda y: hifigan(y, bigvgan_v2(22050, 80)),
    "bigvgan-24k": lambda y: hifigan(y, bigvgan_v2(24000, 100)),
    "bigvgan-44k": lambda y: hifigan(y, bigvgan_v2(44100, 128)),
    "vocos": vocos,
    "audio-diffusion": audio_diffusion,
}


def reference_image_stack(logmel: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """:func:`reference_image` of each image with its own range."""
    return np.stack([reference_image(m, a, b) for m, a, b in zip(logmel, lo, hi, strict=True)])
