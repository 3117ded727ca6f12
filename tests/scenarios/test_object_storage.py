"""Audio in and store out on object storage: a real S3-compatible server (moto) on loopback,
credentials from the environment as boto finds them, worker processes reading and writing."""

import dataclasses
import gzip
import os
import subprocess
import sys

import numpy as np
import pytest

from melpipe.errors import RunLockedError, StoreError
from melpipe.read.reader import open_store
from melpipe.run.executors import LoopExecutor
from melpipe.run.runner import preprocess
from melpipe.sources.audio import URL_BLOCK
from melpipe.sources.discover import list_audio_files
from tests.helpers import (
    Interrupted,
    interrupt_images_after,
    long_and_short,
    run_cli,
    write_dataset,
)
from tests.processes import Processes, start_s3_server

pytestmark = pytest.mark.s3

SECRET = "not-a-real-secret-but-it-must-not-leak"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """An S3 server with a bucket holding the test dataset under audio/."""
    logs = tmp_path_factory.mktemp("s3")
    procs = Processes(logs)
    endpoint = start_s3_server(procs)
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "melpipe-test",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    fs.mkdir("bucket")
    local = write_dataset(logs / "audio", np.random.default_rng(7))
    fs.put(f"{local}/", "bucket/audio/", recursive=True)
    yield {"fs": fs, "env": env, "local": local}
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    s3fs.S3FileSystem.clear_instance_cache()
    procs.stop_all()


def test_two_workers_read_audio_from_s3_and_write_the_store_there(s3, config, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "melpipe",
            "preprocess",
            "s3://bucket/audio",
            "s3://bucket/out.zarr",
            "--workers",
            "2",
            "--n-mels",
            "64",
            "--batch-size",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **s3["env"]},
    )
    assert result.returncode == 0, result.stderr
    assert "Wrote 10 clips to s3://bucket/out.zarr, from 15 files: 10 decoded" in result.stdout
    assert SECRET not in result.stdout + result.stderr

    local = tmp_path / "local.zarr"
    preprocess(s3["local"], local, config, executor=LoopExecutor(), batch_size=4)
    remote, reference = open_store("s3://bucket/out.zarr"), open_store(local)
    np.testing.assert_array_equal(remote[:], reference[:])
    assert remote.paths.tolist() == reference.paths.tolist()
    assert remote.file_errors.tolist() == reference.file_errors.tolist()
    assert remote.attrs.stats == reference.attrs.stats
    # Object for object, the same bytes as the local store's files.
    fs = s3["fs"]
    fs.invalidate_cache()
    objects = {
        key.removeprefix("bucket/out.zarr/")
        for key in fs.find("bucket/out.zarr")
        if key != "bucket/out.zarr/zarr.json"
    }
    files = {
        p.relative_to(local).as_posix()
        for p in local.rglob("*")
        if p.is_file() and p not in (local / "zarr.json", local / "melpipe.lock")
    }
    assert objects == files
    for key in sorted(objects):
        assert fs.cat(f"bucket/out.zarr/{key}") == (local / key).read_bytes(), key


def test_an_unfinished_remote_store_is_refused_and_resumed(s3, config, tmp_path):
    url = "s3://bucket/resume.zarr"
    with pytest.raises(Interrupted):
        preprocess(
            "s3://bucket/audio",
            url,
            config,
            executor=LoopExecutor(),
            batch_size=4,
            progress=interrupt_images_after(2),
        )
    with pytest.raises(StoreError, match="unfinished"):
        open_store(url)
    report = preprocess("s3://bucket/audio", url, config, executor=LoopExecutor(), batch_size=4)
    assert "statistics" not in report.seconds  # resumed after pass 1
    assert report.counts.files == 15 and report.counts.failed == 5
    reference = tmp_path / "reference.zarr"
    preprocess(s3["local"], reference, config, executor=LoopExecutor(), batch_size=4)
    np.testing.assert_array_equal(open_store(url)[:], open_store(reference)[:])
    assert not s3["fs"].exists("bucket/resume.zarr/scratch")


def test_unreachable_storage_is_a_clear_error_that_does_not_show_credentials(s3, tmp_path):
    # Port 9 (discard) on loopback refuses the connection at once.
    env = {**os.environ, **s3["env"], "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    result = subprocess.run(
        [sys.executable, "-m", "melpipe", "preprocess", "s3://bucket/audio", tmp_path / "x"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 1
    assert "Cannot list input 's3://bucket/audio'" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_a_lease_on_object_storage_refuses_a_second_run_and_expires_when_abandoned(s3, config):
    from melpipe.store import lock

    url = "s3://bucket/leased.zarr"
    s3["fs"].invalidate_cache()
    with lock.hold(url, lock.Owner.new("first"), create=True) as claim:
        lock.check(claim)
        with (
            pytest.raises(RunLockedError, match="being written by run first"),
            lock.hold(url, lock.Owner.new("second"), create=False),
        ):
            pass
    assert not s3["fs"].exists("bucket/leased.zarr/melpipe.lock")  # released on the way out
    # A client that died leaves its lease behind, no longer renewed: it is taken over.
    stale = lock.Owner.new("dead")
    stale = dataclasses.replace(stale, renewed=stale.renewed - lock.LEASE_SECONDS - 1)
    s3["fs"].pipe_file("bucket/leased.zarr/melpipe.lock", stale.to_bytes())
    with lock.hold(url, lock.Owner.new("third"), create=False) as claim:
        lock.check(claim)
        dead = lock.Claim(url, "dead", stale.attempt)
        with pytest.raises(RunLockedError, match="now owned by run third"):
            lock.check(dead)


def test_pass_2_decodes_objects_again_and_refuses_one_replaced_since_pass_1(s3, config, tmp_path):
    fs = s3["fs"]
    fs.copy("bucket/audio/", "bucket/changing/", recursive=True)
    url = "s3://bucket/noscratch.zarr"
    report = preprocess("s3://bucket/changing", url, config, executor=LoopExecutor(),
                        batch_size=4, scratch=False)  # fmt: skip
    assert report.counts.clips == 10  # the objects' sizes and times agree across the passes
    reference = tmp_path / "reference.zarr"
    preprocess(s3["local"], reference, config, executor=LoopExecutor(), batch_size=4)
    np.testing.assert_array_equal(open_store(url)[:], open_store(reference)[:])

    victim = "bucket/changing/c/quiet_22k.wav"
    original = fs.cat(victim)

    class ReplaceAtPass2:
        def __call__(self, description, total):
            if description.startswith("pass 2"):
                fs.pipe(victim, original[:44] + bytes(reversed(original[44:])))
            return self

        def update(self, n=1):
            pass

        def close(self):
            pass

    with pytest.raises(StoreError, match=r"'c/quiet_22k.wav' changed after pass 1 read it"):
        preprocess("s3://bucket/changing", "s3://bucket/replaced.zarr", config,
                   executor=LoopExecutor(), batch_size=4, scratch=False,
                   progress=ReplaceAtPass2())  # fmt: skip


def test_an_append_to_a_store_on_object_storage_equals_one_on_local_disk(s3, tmp_path):
    from tests.helpers import tones

    fs, env = s3["fs"], {**os.environ, **s3["env"]}
    later = tones(tmp_path / "later", 5, seed=12)
    fs.put(f"{later}/", "bucket/later/", recursive=True)
    options = ["--scheduler", "sync", "--n-mels", "64", "--batch-size", "4"]
    run_cli("preprocess", "s3://bucket/audio", "s3://bucket/grow.zarr", *options, env=env)
    before = open_store("s3://bucket/grow.zarr")
    appended = run_cli("preprocess", "s3://bucket/later", "s3://bucket/grow.zarr", "--append",
                       "--scheduler", "sync", env=env)  # fmt: skip
    assert "Appended 5 clips from 5 files" in appended.stdout
    local = tmp_path / "local.zarr"
    run_cli("preprocess", s3["local"], local, *options)
    run_cli("preprocess", later, local, "--append", "--scheduler", "sync")
    remote, reference = open_store("s3://bucket/grow.zarr"), open_store(local)
    np.testing.assert_array_equal(remote[:], reference[:])
    assert remote.file_paths.tolist() == reference.file_paths.tolist()
    assert remote.attrs.grown == reference.attrs.grown
    assert len(before) == 10 and np.array_equal(before[:], reference[:10])


@pytest.fixture
def counted_s3(s3, tmp_path, monkeypatch):
    """The S3 server reached through a relay that counts the bytes it sends, with the
    recordings of :func:`long_and_short` under long/ and short/."""
    import s3fs

    from tests.processes import Outage

    relay = Outage(int(s3["env"]["AWS_ENDPOINT_URL"].rsplit(":", 1)[1]))
    folders = long_and_short(tmp_path)
    for name, (folder, _) in folders.items():
        s3["fs"].put(f"{folder}/", f"bucket/{name}/", recursive=True)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{relay.port}")
    s3fs.S3FileSystem.clear_instance_cache()
    yield relay, folders["long"][1]
    relay.cut()
    s3fs.S3FileSystem.clear_instance_cache()


def test_a_default_run_fetches_of_each_object_its_header_and_clip(counted_s3, config, tmp_path):
    """Objects are fetched in blocks of URL_BLOCK (with s3fs's default, 50 MiB, every
    object was fetched whole): two recordings of a minute, 20 MB, cost a block each."""
    relay, size = counted_s3
    received = {}
    for name in ("long", "short"):
        before = relay.received
        preprocess(f"s3://bucket/{name}", tmp_path / f"{name}.zarr", config,
                   executor=LoopExecutor())  # fmt: skip
        received[name] = relay.received - before
    # The listing, the responses' headers: a few kB. The short files: whole, under a block.
    assert received["long"] <= 2 * URL_BLOCK + 128 * 1024, received
    assert received["long"] < 0.25 * size and received["short"] < received["long"], received


def test_a_manifest_on_object_storage_names_files_of_an_input_there(s3, config, tmp_path):
    s3["fs"].pipe("bucket/lists/train.txt.gz",
                  gzip.compress(b"b/chirp_22k.wav\na/tone_16k.wav\nnot/there.wav\n"))  # fmt: skip
    out = tmp_path / "listed.zarr"
    preprocess("s3://bucket/audio", out, config, files_from="s3://bucket/lists/train.txt.gz",
               executor=LoopExecutor())  # fmt: skip
    store = open_store(out)
    assert store.file_paths.tolist() == ["a/tone_16k.wav", "b/chirp_22k.wav", "not/there.wav"]
    assert store.decoded.tolist() == [True, True, False]
    assert "not/there.wav" in store.file_errors[2] or "NotFound" in store.file_errors[2]
    assert len(store) == 2


def test_a_listing_by_prefix_finds_what_a_local_walk_finds(s3, tmp_path):
    local = tmp_path / "tree"
    names = ["top.wav", "a/one.wav", "a/deep/two.flac", "b/three.ogg", ".hidden/no.wav",
             "c/.hidden/no.wav", "c/notes.txt", "c/four.WAV"]  # fmt: skip
    for name in names:
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_bytes(b"x")
    s3["fs"].put(f"{local}/", "bucket/tree/", recursive=True)
    s3["fs"].invalidate_cache()
    listed = tuple(list_audio_files("s3://bucket/tree").files)
    assert listed == tuple(list_audio_files(local).files)
    assert listed == ("a/deep/two.flac", "a/one.wav", "b/three.ogg", "c/four.WAV", "top.wav")
