import dataclasses
import itertools
import math
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from melpipe.analysis.config import SpectrogramConfig
from melpipe.analysis.stats import Range
from melpipe.errors import ConfigError, ResourceError, StoreError
from melpipe.run.plan import Found, Request, Source, batch_bytes, make_plan, plan_batches
from melpipe.run.types import Resources, tree_reduce
from melpipe.sources.discover import Listing
from melpipe.store.schema import RUN_STATE, Counts, OutputState, StatsRecord, StoreAttrs
from tests.helpers import a_source, simple_stats


@given(n_files=st.integers(1, 2000), batch_size=st.integers(1, 300))
def test_batches_cover_every_row_once_in_order(n_files, batch_size):
    batches = plan_batches(n_files, batch_size)
    assert [b.index for b in batches] == list(range(len(batches)))
    assert batches[0].start == 0 and batches[-1].stop == n_files
    for before, after in itertools.pairwise(batches):
        assert before.stop == after.start
    assert all(len(b) == batch_size for b in batches[:-1])
    assert 0 < len(batches[-1]) <= batch_size
    assert len(batches) == math.ceil(n_files / batch_size)


def test_batch_size_must_be_positive():
    with pytest.raises(ConfigError, match="positive `batch_size`"):
        plan_batches(10, 0)


@given(n=st.integers(1, 500), split_every=st.integers(2, 12))
def test_tree_reduce_keeps_order_and_bounds_fan_in(n, split_every):
    fan_ins = []

    def combine(*parts):
        fan_ins.append(len(parts))
        return "".join(parts)

    items = [f"{i}," for i in range(n)]
    assert tree_reduce(items, combine, split_every=split_every) == "".join(items)
    assert all(k <= split_every for k in fan_ins)
    assert all(k >= 2 for k in fan_ins)  # no task combines a single item
    assert len(fan_ins) <= n - 1


def test_tree_reduce_uses_the_given_submit():
    calls = []

    def submit(fn, *args):
        calls.append(len(args))
        return fn(*args)

    assert tree_reduce(list(range(20)), lambda *a: sum(a), split_every=4, submit=submit) == 190
    assert calls == [4, 4, 4, 4, 4, 4, 2]  # 20 -> 5 -> 2 (the fifth passes through) -> 1


# --- make_plan: every decision, on plain values ---------------------------------------------

CONFIG = SpectrogramConfig.from_options(n_mels=64)
LISTING = Listing("in", tuple(f"f{i:03d}.wav" for i in range(10)))
ROOMY = Resources(workers=2, memory_per_worker=8 * 10**9, in_client=False)


ABSENT = OutputState("absent")


def found(output=ABSENT, resources=ROOMY, source=None, out_key="/data/out.zarr"):
    return Found(LISTING, output, resources, "/data/in", out_key, source)


def request(**changes):
    return Request(**({"input": "in", "output": "out.zarr", "config": CONFIG} | changes))


def store_of(plan, **attrs_changes):
    """What inspecting the store a plan made would show, with some attributes changed."""
    attrs = StoreAttrs(
        status="incomplete",
        run_id="r1",
        created="2026-11-26T00:00:00+00:00",
        input=plan.request.input,
        config=plan.request.config,
        plan=plan.identity,
        versions={},
    )
    attrs = dataclasses.replace(attrs, **attrs_changes)
    entries = ("images", "path", "melpipe.lock", "zarr.json", *(a.name for a in RUN_STATE))
    return OutputState("melpipe", entries, attrs.to_dict(), written=(0, 1))


def test_a_new_output_is_created_with_both_passes():
    plan = make_plan(request(batch_size=4), found())
    assert plan.action == "create" and plan.n_passes == 2 and plan.scratch
    assert not plan.analysed and not plan.written
    assert plan.identity["files_sha256"] == LISTING.sha256()


def test_the_same_unfinished_run_is_resumed_from_its_written_batches():
    first = make_plan(request(batch_size=4), found())
    stats = simple_stats((-20.0, 1.0), (-21.0, 5.0))
    state = store_of(first, stats=StatsRecord(stats, "mean"))
    plan = make_plan(request(batch_size=4), found(state))
    assert plan.action == "resume" and plan.run_id == "r1"
    assert plan.stats == stats and plan.n_passes == 1  # pass 1 is not run again
    assert plan.analysed and plan.written == {0, 1}


def test_a_run_state_that_is_gone_is_named_and_only_overwrite_starts_over():
    first = make_plan(request(batch_size=4), found())
    stats = simple_stats((-20.0, 1.0), (-21.0, 5.0))
    state = store_of(first, stats=StatsRecord(stats, "mean"))
    state = dataclasses.replace(state, entries=tuple(e for e in state.entries if e != "scratch"))
    with pytest.raises(StoreError, match=r"lacks 'scratch'.*Pass `overwrite=True` to start over"):
        make_plan(request(batch_size=4), found(state))
    assert make_plan(request(batch_size=4, overwrite=True), found(state)).action == "replace"


def test_a_run_stopped_in_pass_1_is_resumed_from_its_start():
    first = make_plan(request(batch_size=4), found())
    plan = make_plan(request(batch_size=4), found(store_of(first)))
    assert plan.action == "resume" and plan.run_id == "r1"
    assert plan.stats is None and plan.n_passes == 2 and not plan.written


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"batch_size": 5}, "batch_size"),
        ({"statistic": "extrema"}, "used"),
        ({"scratch": False}, "scratch"),
        ({"config": SpectrogramConfig.from_options(n_mels=32)}, "n_mels (32, 64)"),
    ],
)
def test_another_run_is_not_resumed_and_the_refusal_names_the_difference(change, named):
    state = store_of(make_plan(request(batch_size=4), found()))
    changed = request(batch_size=4) if "batch_size" not in change else request()
    changed = dataclasses.replace(changed, **change)
    with pytest.raises(StoreError, match=rf"differs from this one in .*{re.escape(named)}"):
        make_plan(changed, found(state))
    assert make_plan(dataclasses.replace(changed, overwrite=True), found(state)).action == "replace"


def source(stats, run_id="s1"):
    return Source("train.zarr", run_id, CONFIG, stats, "mean")


def test_stats_from_scales_with_its_statistics_and_a_changed_source_is_not_resumed():
    stats = simple_stats((-20.0, 1.0), (-21.0, 5.0))
    plan = make_plan(request(stats_from="train.zarr"), found(source=source(stats)))
    # Pass 1 still runs: it finds which windows become clips, and which files decode.
    assert plan.stats == stats and plan.n_passes == 2 and plan.scratch
    state = store_of(plan)
    assert (
        make_plan(request(stats_from="train.zarr"), found(state, source=source(stats))).action
        == "resume"
    )
    remade = source(simple_stats((-19.0, 1.0), (-21.0, 5.0)), run_id="s2")
    with pytest.raises(StoreError, match="differs from this one in stats_from"):
        make_plan(request(stats_from="train.zarr"), found(state, source=remade))


def test_stats_from_another_analysis_is_refused():
    other = Source("train.zarr", "s1", SpectrogramConfig.from_options(n_mels=32),
                   simple_stats((0.0, 1.0), (0.0, 1.0)), "mean")  # fmt: skip
    with pytest.raises(ConfigError, match=r"n_mels \(64, 32\)"):
        make_plan(request(stats_from="train.zarr"), found(source=other))


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (OutputState("folder", ("notes.txt",)), "exists and is not a Zarr store"),
        (OutputState("zarr", ("zarr.json",)), "melpipe did not write; it is never replaced"),
        (OutputState("damaged", ("zarr.json",), problem="its zarr.json is not valid JSON"),
         "cannot tell whether it wrote it"),
    ],
)  # fmt: skip
def test_what_melpipe_did_not_write_is_never_replaced(state, message):
    for overwrite in (False, True):
        with pytest.raises(StoreError, match=message):
            make_plan(request(overwrite=overwrite), found(state))


def test_a_finished_store_needs_overwrite_and_foreign_entries_stop_it():
    first = make_plan(request(), found())
    stats = StatsRecord(simple_stats((-20.0, 1.0), (-21.0, 5.0)), "mean", None, 0.1)
    done = store_of(first, status="complete", stats=stats, counts=Counts(10, 9, 9),
                    sources=(a_source(10, 9),))  # fmt: skip
    with pytest.raises(StoreError, match=r"already exists. Pass `overwrite=True`"):
        make_plan(request(), found(done))
    assert make_plan(request(overwrite=True), found(done)).action == "replace"
    cluttered = dataclasses.replace(done, entries=(*done.entries, "my-notes.txt"))
    with pytest.raises(StoreError, match=r"'my-notes.txt', which melpipe did not write"):
        make_plan(request(overwrite=True), found(cluttered))


def test_a_failed_run_is_not_repeated_without_overwrite():
    failed = store_of(make_plan(request(), found()), status="failed", failure="All silent.")
    with pytest.raises(StoreError, match=r"this same run, which failed: All silent."):
        make_plan(request(), found(failed))


def test_a_leftover_lock_of_a_run_that_created_nothing_is_reused():
    plan = make_plan(request(), found(OutputState("leftover", ("melpipe.lock",))))
    assert plan.action == "replace"


@pytest.mark.parametrize("out_key", ["/data/in", "/data", "/"])
def test_output_may_never_be_the_input_or_hold_it(out_key):
    with pytest.raises(StoreError, match="is the input folder or holds it"):
        make_plan(request(overwrite=True), found(out_key=out_key))
    make_plan(request(), found(out_key="/data/in/../in-store.zarr"))


def test_memory_urls_need_the_tasks_in_this_process():
    with pytest.raises(ConfigError, match="worker processes cannot see"):
        make_plan(request(output="memory://out.zarr"), found())
    in_client = Resources(workers=1, memory_per_worker=None, in_client=True)
    assert make_plan(request(output="memory://out.zarr"), found(resources=in_client))


def test_a_batch_that_would_not_fit_a_worker_is_refused_with_the_figures():
    huge = SpectrogramConfig.from_options(hop_length=16384, frames=60000)
    expected = r"needs about [\d.]+ GB in a worker, which has 8.0 GB \(2 workers\)"
    with pytest.raises(ResourceError, match=expected):
        make_plan(request(config=huge), found())
    small = Resources(workers=8, memory_per_worker=30 * 10**6, in_client=False)
    with pytest.raises(ResourceError, match=r"which has 30.0 MB"):
        make_plan(request(batch_size=512), found(resources=small))
    make_plan(
        request(batch_size=512), found(resources=dataclasses.replace(small, memory_per_worker=None))
    )


def test_batch_memory_estimate_covers_what_a_batch_really_allocates(tmp_path, rng):
    """The estimate is checked against the peak traced while a real batch is decoded from
    a long stereo file at a high rate, analysed and scaled."""
    import tracemalloc

    import soundfile as sf

    from melpipe.analysis.scaling import scale_to_uint8
    from melpipe.analysis.segments import Piece
    from melpipe.run.tasks import analyse

    config = SpectrogramConfig.from_options(n_mels=64, segments="all")
    path = tmp_path / "long.wav"
    sf.write(path, rng.uniform(-0.5, 0.5, (48000 * 20, 2)).astype(np.float32), 48000)
    piece = Piece(0, "long.wav", np.arange(16) * config.n_samples)
    analyse(str(tmp_path), [Piece(0, "long.wav", np.zeros(1, np.int64))], config)  # caches
    tracemalloc.start()
    result = analyse(str(tmp_path), [piece], config)
    scale_to_uint8(result.logmel, Range(-20.0, 5.0))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert result.windows.ok.all()
    assert peak < batch_bytes(config, 16) < 4 * peak
