"""Inputs and stores made to mislead, by accident or by a neighbour: damaged statistics,
chunks of the wrong size or cut short, headers that lie, metadata that claims absurd
sizes, and links where melpipe writes. Each is refused in one line naming the thing, and
nothing is allocated, written or followed on its word."""

from __future__ import annotations

import math

import pytest

from tests.helpers import assert_one_line_error, copy_of, edit_attrs, run_cli


@pytest.mark.parametrize(
    ("change", "stats", "expected"),
    [
        (lambda s: s["mean"].update(min=math.nan), "mean", "records 'mean' statistics that "
         "cannot have scaled its images (min=nan"),
        (lambda s: s["extrema"].update(min=5.0, max=-5.0), "extrema", "records 'extrema' "
         "statistics that give no usable range (min=5.0, max=-5.0): they are damaged"),
    ],
    ids=["nan-in-the-used", "min-above-max-in-another"],
)  # fmt: skip
def test_stats_from_a_store_with_damaged_statistics_is_refused_naming_it(
    finished_store, dataset, tmp_path, change, stats, expected
):
    source = copy_of(finished_store, tmp_path, "source.zarr")
    edit_attrs(source, lambda a: change(a["stats"]))
    out = tmp_path / "out.zarr"
    result = run_cli("preprocess", dataset, out, "--scheduler", "sync", "--n-mels", 64,
                     "--stats-from", source, "--stats", stats, check=False)  # fmt: skip
    assert_one_line_error(result, str(source), expected)
    assert not out.exists()  # refused while planning: nothing made, no pass run
