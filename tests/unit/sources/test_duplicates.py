"""Duplicates found without decoding, against references written here apart from melpipe:
the MD5 of samples packed one by one with Python's ``int.to_bytes`` (as FLAC's
format_input_ packs them), a FLAC's STREAMINFO, a WAV's data chunk found by walking its
RIFF chunks; and which files the candidates' rule reads."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from melpipe.sources import duplicates
from melpipe.sources.audio import open_audio
from melpipe.sources.headers import flac_stream_info
from melpipe.sources.pcm import pcm_md5
from tests.helpers import reference_md5

BITS = {"PCM_S8": 8, "PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32}


def integers(rng: np.random.Generator, bits: int, frames: int, channels: int) -> np.ndarray:
    """Random samples of ``bits`` bits, the loudest of each sign included."""
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    values = rng.integers(low, high + 1, (frames, channels), dtype=np.int64)
    values[0, 0], values[1, 0] = low, high
    return values


def write_integers(path: Path, values: np.ndarray, bits: int, subtype: str, rate: int) -> None:
    """Write samples of ``bits`` bits exactly: soundfile takes int32 as full scale."""
    sf.write(path, (values << (32 - bits)).astype(np.int32), rate, subtype=subtype)


def reader_of(data: bytes):
    return lambda offset, n: data[offset : offset + n]


@pytest.mark.parametrize("subtype", ["PCM_S8", "PCM_16", "PCM_24"])
def test_a_flac_header_holds_the_md5_of_its_samples_as_flac_defines_it(tmp_path, rng, subtype):
    bits = BITS[subtype]
    values = integers(rng, bits, 3001, 2)
    path = tmp_path / "a.flac"
    write_integers(path, values, bits, subtype, 16000)
    expected = reference_md5(values, bits)
    assert flac_stream_info(reader_of(path.read_bytes())) == (bits, expected)
    with open_audio(path) as (f, info):
        assert (info.pcm_format, info.pcm_md5) == (f"s{bits}" + ("le" if bits > 8 else ""),
                                                   expected)  # fmt: skip
        assert pcm_md5(f, info.pcm_format) == expected  # the decoded samples hash alike


def test_a_flac_stream_info_is_found_after_an_id3_tag_and_an_unset_md5_is_unknown(tmp_path, rng):
    path = tmp_path / "a.flac"
    write_integers(path, integers(rng, 16, 500, 1), 16, "PCM_16", 8000)
    data = path.read_bytes()
    size = 300  # synchsafe: seven bits a byte
    tag = b"ID3\x04\x00\x00" + bytes([0, 0, size >> 7, size & 0x7F]) + b"\x00" * size
    assert flac_stream_info(reader_of(tag + data)) == flac_stream_info(reader_of(data))
    unset = bytearray(data)
    unset[8 + 18 : 8 + 34] = bytes(16)  # the MD5 of the STREAMINFO block after "fLaC"
    assert flac_stream_info(reader_of(bytes(unset))) == (16, "")
    sf.write(tmp_path / "a.wav", np.zeros(10, np.float32), 8000)
    assert flac_stream_info(reader_of((tmp_path / "a.wav").read_bytes())) is None


def data_chunk(path: Path) -> bytes:
    """The bytes of a WAV's data chunk, found by walking its chunks."""
    data = path.read_bytes()
    offset = 12
    while offset < len(data):
        name, size = (
            data[offset : offset + 4],
            struct.unpack("<I", data[offset + 4 : offset + 8])[0],
        )
        if name == b"data":
            return data[offset + 8 : offset + 8 + size]
        offset += 8 + size + (size & 1)
    raise AssertionError("no data chunk")


@pytest.mark.parametrize(("container", "subtype"), [
    ("WAV", "PCM_U8"), ("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "PCM_32"),
    ("AIFF", "PCM_S8"), ("AIFF", "PCM_16"), ("AIFF", "PCM_24"), ("AIFF", "PCM_32"),
])  # fmt: skip
def test_the_pcm_hash_of_any_container_is_the_md5_flac_gives_its_samples(
    tmp_path, rng, container, subtype
):
    bits = BITS[subtype]
    values = integers(rng, bits, 2000, 3)
    path = tmp_path / f"a.{container.lower()}"
    write_integers(path, values, bits, subtype, 44100)
    with open_audio(path) as (f, info):
        assert info.pcm_md5 == ""  # only a FLAC's header holds it
        assert pcm_md5(f, info.pcm_format) == reference_md5(values, bits)
    if container == "WAV" and bits > 8:  # the data chunk is those bytes already
        assert reference_md5(values, bits) == hashlib.md5(data_chunk(path)).hexdigest()


def test_float_samples_hash_as_little_endian_floats_and_lossy_ones_not_at_all(tmp_path, rng):
    y = rng.uniform(-1, 1, (700, 2)).astype(np.float32)
    sf.write(tmp_path / "a.aiff", y, 22050, subtype="FLOAT")
    with open_audio(tmp_path / "a.aiff") as (f, info):
        assert info.pcm_format == "f32le"
        assert (
            pcm_md5(f, "f32le") == hashlib.md5(struct.pack(f"<{y.size}f", *y.ravel())).hexdigest()
        )
    sf.write(tmp_path / "b.ogg", y, 22050)
    with open_audio(tmp_path / "b.ogg") as (_, info):
        assert (info.pcm_format, info.pcm_md5) == ("", "")


def test_only_groups_with_a_new_file_and_one_probe_are_read_and_hashes_decide():
    # Two of the store's files, then seven new ones: a group of the store's alone is not
    # read again, a known hash not again either, one size with two probes is no group,
    # a size of 0 (a file that did not decode) matches nothing.
    sizes = [10, 10, 20, 20, 30, 40, 40, 0, 0]
    probes = [1, 1, 5, 5, 5, 7, 8, 3, 3]
    new = np.arange(9) >= 2
    digests = np.array(["", "", "x", *[""] * 6], dtype=object)
    no_shape, one_shape = np.zeros(9, np.int64), np.ones(9, np.int64)
    want, _ = duplicates.wanted(sizes, no_shape, probes, digests, digests.copy(), new)
    assert np.flatnonzero(want).tolist() == [3]
    _, by_shape = duplicates.wanted([0] * 9, one_shape, probes, digests, digests.copy(), new)
    assert np.flatnonzero(by_shape).tolist() == [3, 4, 7, 8]  # 2 has its MD5 already
    shapes = duplicates.shape_ids(["s16le", "", "s16le", "s16le", "f32le"],
                                  [44100, 44100, 8000, 44100, 44100], [2, 2, 1, 2, 2],
                                  [5, 5, 0, 5, 5], [True, True, True, False, True])  # fmt: skip
    shape = shapes[0]
    assert shape > 0 and shapes[1:4].tolist() == [0, 0, 0] and shapes[4] not in (0, shape)
    # The store's two files (a copy and its original), then three new ones.
    of = duplicates.assign(np.array(["b", "b", "", "b", "c"], object),
                           np.array([0, 0, shape, 0, shape]),
                           np.array(["", "", "m", "", "m"], object),
                           old_duplicate_of=[-1, 0])  # fmt: skip
    assert of.tolist() == [-1, 0, 2]


def loop_wanted(sizes, shapes, probes, digests, md5s, new):
    """The reference: a Python key per file, grouped in a dict."""

    def shared(keys):
        rows_of = {}
        for row, key in enumerate(keys):
            if key is not None:
                rows_of.setdefault(key, []).append(row)
        result = np.zeros(len(keys), bool)
        for rows in rows_of.values():
            if len(rows) > 1 and any(new[r] for r in rows):
                result[rows] = True
        return result

    by_size = [(s, p) if s and p else None for s, p in zip(sizes, probes, strict=True)]
    by_shape = [(h, p) if h and p else None for h, p in zip(shapes, probes, strict=True)]
    return shared(by_size) & (digests == ""), shared(by_shape) & (md5s == "")


def loop_assign(digests, shapes, md5s, old_duplicate_of):
    """The reference: each file's key as a string, the first of each key in a dict."""
    keys = [f"pcm:{h}:{m}" if h and m else f"bytes:{d}" if d else ""
            for d, h, m in zip(digests, shapes, md5s, strict=True)]  # fmt: skip
    n_old = len(old_duplicate_of)
    firsts = {}
    for row, (key, first) in enumerate(zip(keys[:n_old], old_duplicate_of, strict=True)):
        if key and first == -1:
            firsts.setdefault(key, row)
    result = []
    for row, key in enumerate(keys[n_old:], start=n_old):
        first = firsts.setdefault(key, row) if key else row
        result.append(-1 if first == row else first)
    return result


@pytest.mark.parametrize("seed", range(20))
def test_the_grouping_equals_a_python_key_per_file(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    n_old = int(rng.integers(0, n))
    sizes = rng.choice([0, 10, 20, 30], n)
    probes = rng.choice([0, 1, 2, -5], n)
    formats = rng.choice(["", "s16le", "f32le"], n).astype(object)
    rates, channels = rng.choice([8000, 44100], n), rng.choice([1, 2], n)
    frames, ok = rng.choice([0, 5, 9], n), rng.random(n) < 0.9
    shapes = duplicates.shape_ids(formats, rates, channels, frames, ok)
    columns = zip(formats, rates, channels, frames, ok, strict=True)
    strings = [f"{f} {r} {c} {k}" if o and f and k > 0 else "" for f, r, c, k, o in columns]
    assert [s == 0 for s in shapes] == [s == "" for s in strings]
    digests = rng.choice(["", "d1", "d2", "d3"], n).astype(object)
    md5s = rng.choice(["", "m1", "m2"], n).astype(object)
    new = np.arange(n) >= n_old
    got = duplicates.wanted(sizes, shapes, probes, digests, md5s, new)
    expected = loop_wanted(sizes.tolist(), strings, probes.tolist(), digests, md5s, new)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
    # The store's groups as a run would have left them.
    old = duplicates.assign(digests[:n_old], shapes[:n_old], md5s[:n_old])
    of = duplicates.assign(digests, shapes, md5s, old)
    assert of.tolist() == loop_assign(digests, strings, md5s, old.tolist())


@pytest.mark.parametrize("n", [0, 1, 7, 5000])
def test_columns_are_numbered_as_numpy_unique_numbers_them(n, rng):
    # Group numbers come from a lexsort; numpy's unique over columns is the reference.
    columns = rng.integers(-3, 3, size=(2, n), dtype=np.int64)
    columns[:, ::5] = np.iinfo(np.int64).min  # extremes sort as numbers, not as bytes
    _, reference = np.unique(columns, axis=1, return_inverse=True)
    np.testing.assert_array_equal(duplicates._group_ids(columns), reference.reshape(-1))
