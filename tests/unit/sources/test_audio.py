import librosa
import numpy as np
import pytest
import soundfile as sf

from melpipe.errors import EmptyAudioError, NonFiniteAudioError, TruncatedAudioError
from melpipe.sources.audio import BLOCK_FRAMES, describe_error, read_windows, resampled_length
from tests.helpers import synth


def read_clip(path, *, sample_rate, n_samples):
    clips, _ = read_windows(path, [0], sample_rate=sample_rate, n_samples=n_samples)
    return clips[0]


def librosa_windows(path, sample_rate, starts, n_samples):
    """The independent reference: the whole file loaded by librosa, then sliced, padded."""
    y, _ = librosa.load(path, sr=sample_rate, mono=True)
    y = np.concatenate([y, np.zeros(max(starts) + n_samples, np.float32)])
    return np.stack([y[s : s + n_samples] for s in starts])


@pytest.mark.parametrize("source_rate", [8000, 16000, 22050, 44100, 48000, 96000])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("seconds", [0.3, 1.0, 2.5])
def test_equals_librosa_load_cropped_and_padded(tmp_path, rng, source_rate, channels, seconds):
    path = tmp_path / "clip.wav"
    sf.write(path, synth(rng, source_rate, channels, seconds), source_rate, subtype="FLOAT")
    ours = read_clip(path, sample_rate=22050, n_samples=22050)
    assert ours.shape == (22050,)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, librosa_windows(path, 22050, [0], 22050)[0], rtol=0, atol=2e-6)


@pytest.mark.parametrize("source_rate", [8000, 11025, 44100, 48000, 96000])
@pytest.mark.parametrize("channels", [1, 3])
def test_windows_inside_a_file_equal_librosa_load_sliced(tmp_path, rng, source_rate, channels):
    # Long enough for several decoding blocks: windows straddle their boundaries, start
    # inside the file (after a warm-up), lie far apart (decoded apart) and past the end.
    seconds = 3 * BLOCK_FRAMES / source_rate + 1.3
    path = tmp_path / "long.wav"
    sf.write(path, synth(rng, source_rate, channels, seconds), source_rate, subtype="FLOAT")
    n = 4000
    total = resampled_length(sf.info(path).frames, source_rate, 16000)
    block = BLOCK_FRAMES * 16000 // source_rate  # a block boundary, in output samples
    starts = np.array(
        [0, 1, 2500, block - 1000, 2 * block - 7, 2 * block + 14_000, total - 3000, total + 10]
    )
    ours, header = read_windows(path, starts, sample_rate=16000, n_samples=n)
    assert (header.sample_rate, header.channels) == (source_rate, channels)
    expected = librosa_windows(path, 16000, starts, n)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-6)
    assert not ours[-1].any()  # wholly past the end: padding only


def test_consecutive_windows_are_one_signal_bit_for_bit(tmp_path, rng):
    # Windows that tile the file are decoded as one stretch: exactly the whole-file signal.
    path = tmp_path / "tiled.flac"
    sf.write(path, synth(rng, 44100, 2, 5.0), 44100, subtype="PCM_16")
    starts = np.arange(0, 5 * 22050, 1000)
    ours, _ = read_windows(path, starts, sample_rate=22050, n_samples=1000)
    y, _ = librosa.load(path, sr=22050)
    np.testing.assert_array_equal(ours.ravel()[: len(y)], y)


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
def test_integer_and_float_encodings(tmp_path, rng, subtype):
    path = tmp_path / "clip.flac" if subtype != "FLOAT" else tmp_path / "clip.wav"
    sf.write(path, synth(rng, 44100, 2, 1.2), 44100, subtype=subtype)
    ours = read_clip(path, sample_rate=16000, n_samples=16000)
    np.testing.assert_allclose(ours, librosa_windows(path, 16000, [0], 16000)[0], atol=2e-6)


def test_short_file_is_zero_padded_at_the_end(tmp_path, rng):
    path = tmp_path / "short.wav"
    sf.write(path, synth(rng, 22050, 1, 0.25), 22050, subtype="FLOAT")
    clip = read_clip(path, sample_rate=22050, n_samples=22050)
    assert np.abs(clip[: int(22050 * 0.25)]).max() > 0
    assert not clip[int(22050 * 0.25) :].any()


def test_empty_file(tmp_path):
    path = tmp_path / "header_only.wav"
    sf.write(path, np.zeros((0, 1), np.float32), 22050)
    with pytest.raises(EmptyAudioError, match="no samples"):
        read_clip(path, sample_rate=22050, n_samples=100)


@pytest.mark.parametrize("extension", ["wav", "aiff"])
def test_truncated_file(tmp_path, rng, extension):
    path = tmp_path / f"truncated.{extension}"
    sf.write(path, synth(rng, 22050, 1, 1.0), 22050, subtype="PCM_16")
    with open(path, "r+b") as f:
        f.truncate(10000)
    with pytest.raises(TruncatedAudioError, match=r"header declares 441\d\d bytes"):
        read_clip(path, sample_rate=22050, n_samples=100)


def test_truncated_flac_is_a_decoding_error(tmp_path, rng):
    path = tmp_path / "truncated.flac"
    sf.write(path, synth(rng, 22050, 1, 1.0), 22050, subtype="PCM_16")
    with open(path, "r+b") as f:
        f.truncate(10000)
    with pytest.raises(sf.LibsndfileError):
        read_clip(path, sample_rate=22050, n_samples=22050)


def test_non_finite_samples(tmp_path, rng):
    path = tmp_path / "nan.wav"
    data = synth(rng, 22050, 1, 0.5)
    data[10] = np.inf
    sf.write(path, data, 22050, subtype="FLOAT")
    with pytest.raises(NonFiniteAudioError):
        read_clip(path, sample_rate=22050, n_samples=100)


def test_undecodable_file_reason(tmp_path):
    path = tmp_path / "text.wav"
    path.write_text("hello")
    with pytest.raises(sf.LibsndfileError) as info:
        read_clip(path, sample_rate=22050, n_samples=100)
    assert describe_error(info.value) == "LibsndfileError: Format not recognised"


def test_describe_error_of_our_own_errors():
    assert describe_error(EmptyAudioError("the file holds no samples")) == (
        "EmptyAudioError: the file holds no samples"
    )


@pytest.mark.parametrize(
    ("source_rate", "frames"), [(48000, 242400), (44100, 222705), (16000, 100001)]
)
def test_the_end_of_a_file_decoded_from_inside_it_equals_librosa(
    tmp_path, rng, source_rate, frames
):
    # Lengths whose resampled length is a half: the whole file's stream rounds its end one
    # way, and one started inside the file may round it the other.
    path = tmp_path / "end.wav"
    data = rng.uniform(-0.3, 0.3, (frames, 1)).astype(np.float32)
    sf.write(path, data, source_rate, subtype="FLOAT")
    total = resampled_length(frames, source_rate, 22050)
    starts = np.array([total - 8000, total - 3000])
    ours, _ = read_windows(path, starts, sample_rate=22050, n_samples=4000)
    np.testing.assert_allclose(ours, librosa_windows(path, 22050, starts, 4000), atol=2e-6)


@pytest.mark.parametrize("source_rate", [8000, 11025, 16000, 37800, 44100, 48000, 96000])
def test_soxr_ends_a_whole_file_where_audio_expects(source_rate):
    """The rule melpipe.sources.audio relies on for where the whole file's resampled audio ends."""
    import soxr

    for frames in (1, 999, source_rate // 2 + 1, 3 * source_rate + 7, 242400, 222705):
        length = len(soxr.resample(np.zeros(frames, np.float32), source_rate, 22050, "HQ"))
        assert length == int(frames / (source_rate / 22050) + 0.5), frames


@pytest.mark.parametrize("channels", range(1, 12))
def test_the_mono_mix_is_librosas_bit_for_bit(rng, channels):
    from melpipe.sources.audio import _mono

    # As librosa.load holds them: soundfile's (frames, channels), transposed.
    samples = rng.standard_normal((5000, channels)).astype(np.float32)
    np.testing.assert_array_equal(_mono(samples), librosa.to_mono(samples.T))
