import numpy as np
import soundfile as sf

from melpipe.sources.demo import generate_demo


def test_demo_is_deterministic_and_varied(tmp_path):
    first = generate_demo(tmp_path / "one", count=24, seed=3)
    second = generate_demo(tmp_path / "two", count=24, seed=3)
    assert [p.relative_to(tmp_path / "one") for p in first] == [
        p.relative_to(tmp_path / "two") for p in second
    ]
    # The audio, not the bytes: float WAVs carry a write time, OGG streams a random serial.
    for a, b in zip(first[:24], second[:24], strict=True):
        np.testing.assert_array_equal(sf.read(a)[0], sf.read(b)[0])
    infos = [sf.info(p) for p in first[:24]]
    assert len({i.samplerate for i in infos}) >= 3
    assert {i.channels for i in infos} == {1, 2}
    assert len({i.subtype for i in infos}) >= 3
    assert len({p.parent.name for p in first[:24]}) == 4
