"""One serializer for every record: each one round-trips through JSON, and a record with
any one of its keys dropped, at any depth, is refused with an error that names that key."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from melpipe import records
from melpipe.analysis.config import SpectrogramConfig
from melpipe.analysis.stats import Figures, GlobalStats, PixelSummary, Range, StatsOptions
from melpipe.errors import RecordError, StoreError
from melpipe.sources.discover import SkippedFolder
from melpipe.store.lock import Owner
from melpipe.store.schema import Counts, StatsRecord, StatsSource, StoreAttrs
from tests.helpers import a_source, simple_stats

STATS = simple_stats((-15.0, 4.0), (-20.0, 6.0))
RECORD = StatsRecord(
    STATS, "band-moments", StatsSource("train.zarr", "abc"), 0.25,
    {"mean": Figures(0.1, 0.2, 120, 0.3), "band-moments": Figures(0.0, 0.0, 200, 0.5)},
)  # fmt: skip
ATTRS = StoreAttrs(
    status="complete", run_id="r1", created="2026-12-03T00:00:00+00:00", input="in",
    config=SpectrogramConfig(segments="all", max_clips_per_file=3, min_level_db=-40.0),
    plan={"input": "in", "batch_size": 64}, versions={"melpipe": "0.2.0"},
    skipped=(SkippedFolder("private", "cannot be read: [Errno 13] Permission denied"),),
    stats=RECORD, counts=Counts(3, 2, 5), failure=None, extra={"note": "a user's key"},
    sources=(a_source(2, 3), a_source(1, 2, action="append", first_file=2, first_clip=3,
                                      own=STATS)),
    grown=STATS,
)  # fmt: skip


def read_attrs(data: dict[str, Any]) -> StoreAttrs:
    return StoreAttrs.from_dict(data)


def reader(cls: type) -> Callable[[dict[str, Any]], Any]:
    return lambda data: records.from_dict(cls, data)


EXAMPLES = {
    "StoreAttrs": (ATTRS, StoreAttrs.to_dict, read_attrs),
    "StatsRecord": (RECORD, records.to_dict, reader(StatsRecord)),
    "GlobalStats": (STATS, records.to_dict, reader(GlobalStats)),
    "PixelSummary": (STATS.pixels, records.to_dict, reader(PixelSummary)),
    "StatsOptions": (StatsOptions((1.0, 99.0), 60.0, 2.5), records.to_dict, reader(StatsOptions)),
    "Range": (Range((1.0, 2.0), (3.0, 4.0)), records.to_dict, reader(Range)),
    "Figures": (Figures(0.1, 0.2, 120, 0.3), records.to_dict, reader(Figures)),
    "Counts": (Counts(3, 2, 5), records.to_dict, reader(Counts)),
    "SpectrogramConfig": (SpectrogramConfig(), records.to_dict, reader(SpectrogramConfig)),
    "Owner": (Owner("r", "a", "host", 12, 1.5, 2.5), records.to_dict, reader(Owner)),
}
# Keys a user or a run may leave out: names inside free-form mappings.
FREE = ("plan.", "versions.", "stats.figures.", "figures.", "note")


def paths(data: Any, prefix: str = "") -> Iterator[tuple[str, tuple[Any, ...]]]:
    """Every key of every mapping in ``data``, dotted as the errors name them, with the
    route to it (keys and list positions)."""
    if isinstance(data, dict):
        for k, v in data.items():
            here = f"{prefix}.{k}" if prefix else k
            yield here, (k,)
            for sub, route in paths(v, here):
                yield sub, (k, *route)
    elif isinstance(data, list):
        for i, v in enumerate(data):
            for sub, route in paths(v, f"{prefix}[{i}]"):
                yield sub, (i, *route)


def without(data: Any, route: tuple[Any, ...]) -> Any:
    copy = json.loads(json.dumps(data))
    node = copy
    for step in route[:-1]:
        node = node[step]
    del node[route[-1]]
    return copy


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_record_round_trips_through_json(name):
    record, write, read = EXAMPLES[name]
    assert read(json.loads(json.dumps(write(record)))) == record


@pytest.mark.parametrize("name", EXAMPLES)
def test_a_record_missing_any_key_is_refused_naming_it(name):
    record, write, read = EXAMPLES[name]
    data = write(record)
    checked = 0
    for path, route in paths(data):
        if path.startswith(FREE):
            continue
        with pytest.raises((RecordError, StoreError)) as caught:
            read(without(data, route))
        assert f"'{path}'" in str(caught.value), (path, str(caught.value))
        checked += 1
    assert checked >= len(data) - 1


def test_a_value_of_the_wrong_kind_is_named_with_what_it_holds():
    data = records.to_dict(ATTRS.stats)
    data["pixels"]["band_mean"][1] = "loud"
    with pytest.raises(RecordError, match=r"'pixels.band_mean\[1\]' holds str 'loud', not float"):
        records.from_dict(StatsRecord, data)
    data = records.to_dict(Counts(3, 2, 5)) | {"files": True}
    with pytest.raises(RecordError, match="'files' holds bool True, not int"):
        records.from_dict(Counts, data)
