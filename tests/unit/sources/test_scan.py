from collections import Counter

from melpipe.sources.scan import format_report, scan
from tests.helpers import BROKEN_FILES, GOOD_FILES


def test_headers_of_the_dataset(dataset):
    report = scan(dataset)
    assert len(report.headers) == len(GOOD_FILES) + len(BROKEN_FILES)
    # bad/nan.wav has a sound header (22050 Hz, mono): only decoding finds its NaN.
    assert report.counts("sample_rate") == Counter(str(sr) for _, sr, *_ in GOOD_FILES) + Counter(
        ["22050"]
    )
    assert report.counts("channels") == Counter(str(ch) for _, _, ch, *_ in GOOD_FILES) + Counter(
        ["1"]
    )
    by_path = report.readable
    assert by_path["c/long_8k.wav"].duration == 3.0
    assert by_path["a/tone_44k_stereo.wav"].bit_depth == "24-bit"
    assert by_path["b/vorbis_22k.ogg"].bit_depth == "compressed"
    assert set(report.unreadable) == set(BROKEN_FILES) - {"bad/nan.wav"}
    percentiles = report.duration_percentiles()
    assert percentiles[0] == min(s for *_, s, _ in GOOD_FILES)
    assert percentiles[100] == max(s for *_, s, _ in GOOD_FILES)


def test_report_flags_mixed_rates(dataset):
    text = format_report(scan(dataset))
    assert "different values of sample rate" in text
