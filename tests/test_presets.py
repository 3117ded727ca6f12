"""Each preset's features against its source's feature function, reimplemented here from
that source: torch for HiFi-GAN, BigVGAN and Vocos, numpy following ``tf.signal.stft``'s
semantics for SpecGAN (TensorFlow is not needed), librosa for audio-diffusion. The
references compute in float64, so that what is compared is the recipe, not float32
rounding; they agree with melpipe's to 1e-4 in log units, frame count and alignment
included, on a real recording and on generated audio.

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
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

from melpipe.analysis.config import SpectrogramConfig
from melpipe.analysis.features import spectrogram
from melpipe.analysis.presets import PRESET_NAMES, PRESETS
from melpipe.read.reader import SpectrogramStore, open_store
from melpipe.run.executors import LoopExecutor
from melpipe.run.runner import preprocess
from tests.helpers import (
    Interrupted,
    assert_images_match,
    assert_one_line_error,
    assert_same_arrays,
    interrupt_images_after,
    librosa_log_mel,
    read_all,
    reference_image,
    run_cli,
    synth,
)

torch = pytest.importorskip("torch")

PLUCK = Path(__file__).parent / "audio" / "pluck-pcm16.wav"


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


def test_every_preset_but_the_posts_has_a_reference():
    assert set(REFERENCES) == set(PRESET_NAMES) - {"post"}


# --- Audio to compare on --------------------------------------------------------------


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


# --- Every preset through the whole pipeline ------------------------------------------


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> Path:
    """The recorded pluck (shorter than every preset's clip), two generated files longer
    than the longest clip (three seconds at 22,050 Hz) at other rates and channel counts,
    and a broken file."""
    root = tmp_path_factory.mktemp("recordings")
    rng = np.random.default_rng(22)
    (root / "pluck.wav").write_bytes(PLUCK.read_bytes())
    sf.write(root / "tone_48k.flac", synth(rng, 48000, 2, 3.2), 48000, subtype="PCM_24")
    sf.write(root / "noise_16k.wav", synth(rng, 16000, 1, 3.5), 16000, subtype="FLOAT")
    (root / "broken.wav").write_bytes(b"RIFF, but nothing after it")
    return root


def source_images(store: SpectrogramStore, root: Path, name: str) -> tuple[list, np.ndarray]:
    """Each clip's features by the preset's source, from ``librosa.load`` of its file at
    the store's rate (with HiFi-GAN's and BigVGAN's ``normalize(audio) * 0.95`` where the
    preset has it), and their images: on the store's scale, or for audio-diffusion its
    own image of the slice, flipped and inverted as melpipe's are."""
    config, found, images = store.config, [], []
    relative = store.scale.relative
    lo, hi = store.scale.bounds() if not relative else (None, None)
    for i in range(len(store)):
        y, _ = librosa.load(root / store.paths[i], sr=config.sample_rate, mono=True)
        if config.peak_normalize is not None:
            y = librosa.util.normalize(y) * config.peak_normalize
        start = int(store.start_sample[i])
        clip = librosa.util.fix_length(y[start : start + config.n_samples], size=config.n_samples)
        found.append(REFERENCES.get(name, lambda y: librosa_log_mel(y, config))(clip))
        if relative:
            assert name == "audio-diffusion", "only its preset scales each image by its own"
            images.append(255 - np.flipud(audio_diffusion_image(clip)))
        else:
            images.append(reference_image(found[-1], lo, hi))
    return found, np.stack(images)


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_a_preset_through_the_whole_pipeline(name, recordings, tmp_path):
    """Made by the command line; the images within one level of the source's features on
    the store's scale and ``to_features`` within half a level of them; the preset's
    statistic; every convention recorded; resumed and ``--stats-from`` runs equal; another
    preset's statistics refused."""
    out = tmp_path / f"{name}.zarr"
    args = ["--preset", name, "--segments", "all", "--batch-size", "2"]
    run_cli("preprocess", recordings, out, *args)
    store = open_store(out)
    config = store.config
    assert config == SpectrogramConfig.from_options(preset=name, segments="all")
    assert store.used == PRESETS[name].stats
    recorded_config = read_all(out)[1]["config"]
    assert {k: recorded_config[k] for k in PRESETS[name].config} == PRESETS[name].config
    assert list(store.file_errors != "") == [True, False, False, False]  # broken.wav only

    features, expected = source_images(store, recordings, name)
    images = store[:]
    assert_images_match(images, expected, f"{name} images")
    source = np.stack(features)
    lo, hi = store.scale.bounds(store.array("clip_max") if store.scale.relative else None)
    inside = (source >= lo) & (source <= hi)
    error = np.abs(store.features(slice(None)) - source) - (hi - lo) / 510
    assert (error[inside] <= 1e-4).all(), name  # 1e-4: float32 and the source's rounding

    resumed = tmp_path / "resumed.zarr"
    with pytest.raises(Interrupted):
        preprocess(recordings, resumed, config, batch_size=2, executor=LoopExecutor(),
                   progress=interrupt_images_after(1))  # fmt: skip
    preprocess(recordings, resumed, config, batch_size=2, executor=LoopExecutor())
    assert_same_arrays(resumed, out)

    scaled = tmp_path / "scaled.zarr"
    preprocess(recordings, scaled, config, batch_size=2, stats_from=out, executor=LoopExecutor())
    np.testing.assert_array_equal(open_store(scaled)[:], images)
    other = "vocos" if name != "vocos" else "hifigan"
    refused = run_cli("preprocess", recordings, tmp_path / "other.zarr", "--preset", other,
                      "--segments", "all", "--stats-from", out, check=False)  # fmt: skip
    assert_one_line_error(refused, "--stats-from", f"preset ('{other}', '{name}')")


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


def reference_image_stack(logmel: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """:func:`reference_image` of each image with its own range."""
    return np.stack([reference_image(m, a, b) for m, a, b in zip(logmel, lo, hi, strict=True)])


@pytest.mark.cluster
@pytest.mark.parametrize("name", ["hifigan", "specgan"])
def test_a_preset_gives_the_same_bits_on_a_dask_cluster(name, recordings, tmp_path, dask_executor):
    """Every step on worker processes: the store equals the one plain loops make, bit
    for bit, with another batch size and without scratch. With batches of 3 windows,
    the longer files' peaks are read before pass 1; in batches of 64, their tasks
    measure them as they decode their windows."""
    config = SpectrogramConfig.from_options(preset=name, segments="all")
    loops, cluster = tmp_path / "loops.zarr", tmp_path / "cluster.zarr"
    preprocess(recordings, loops, config, batch_size=64, executor=LoopExecutor())
    preprocess(recordings, cluster, config, batch_size=3, scratch=False, executor=dask_executor)
    assert_same_arrays(cluster, loops)
    if config.peak_normalize is not None:
        peaks = open_store(cluster).array("peak")
        assert np.isnan(peaks[0]) and (peaks[1:] > 0).all()  # broken.wav has none
