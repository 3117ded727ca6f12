"""One run owns a store at a time; a run that dies releases it; stale claims write nothing."""

import logging
import multiprocessing
import os
import signal

import pytest

from melpipe.errors import RunLockedError, StoreError
from melpipe.store import lock


def hold_until_killed(url: str, ready) -> None:
    with lock.hold(url, lock.Owner.new("held-by-child"), create=True):
        ready.set()
        signal.pause()


def test_a_second_holder_is_refused_by_name_and_a_killed_holder_releases_at_once(tmp_path):
    url = str(tmp_path / "out.zarr")
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    child = context.Process(target=hold_until_killed, args=(url, ready))
    child.start()
    try:
        assert ready.wait(30)
        expected = rf"being written by run held-by-child \(pid {child.pid} on "
        with (
            pytest.raises(RunLockedError, match=expected),
            lock.hold(url, lock.Owner.new("second"), create=False),
        ):
            pass
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join()
    # The kernel dropped the dead run's lock: no waiting, no stale lock to remove by hand.
    with lock.hold(url, lock.Owner.new("third"), create=False) as claim:
        lock.check(claim)


def test_create_refuses_a_location_that_appeared(tmp_path):
    (tmp_path / "out.zarr").mkdir()
    (tmp_path / "out.zarr" / "mine.txt").write_text("keep me")
    with (
        pytest.raises(StoreError, match="appeared while this run was getting ready"),
        lock.hold(str(tmp_path / "out.zarr"), lock.Owner.new("x"), create=True),
    ):
        pass
    assert (tmp_path / "out.zarr" / "mine.txt").read_text() == "keep me"


def test_a_claim_taken_over_is_refused(tmp_path):
    url = str(tmp_path / "out.zarr")
    with lock.hold(url, lock.Owner.new("first"), create=True) as first:
        lock.check(first)
    with lock.hold(url, lock.Owner.new("second"), create=False) as second:
        lock.check(second)
        with pytest.raises(RunLockedError, match=r"now owned by run second .* not by run first"):
            lock.check(first)  # a task left running by the first run's dead client


def test_a_renewal_missed_in_a_blip_stays_off_the_terminal_and_a_long_outage_does_not():
    # A storage outage of a few seconds costs at most one renewal, which the next one
    # makes up: like the tasks' retries it stays off the terminal. Once half
    # the lease has gone unrenewed, the person running it should hear of it.
    assert lock.renewal_level(lock.RENEW_SECONDS) == logging.DEBUG
    assert lock.renewal_level(2 * lock.RENEW_SECONDS) == logging.DEBUG
    assert lock.renewal_level(lock.LEASE_SECONDS / 2) == logging.WARNING
    assert lock.LEASE_SECONDS / 2 > 2 * lock.RENEW_SECONDS  # two renewals may fail unheard
