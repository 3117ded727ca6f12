import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import ConfigError
from pipeline.plan import plan_batches, tree_reduce


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
    with pytest.raises(ConfigError, match="positive batch size"):
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
