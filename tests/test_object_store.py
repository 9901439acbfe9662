"""Completion markers on an S3 server (moto, on loopback), a store without atomic rename (a move is copy + delete):
a writer killed at any moment never leaves a half-written file under a final name, and what it leaves behind is a
temporary that listings skip and a resumed run deletes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.ray_cluster import ROOT
from tests.s3_server import s3_server

pytestmark = pytest.mark.integration
SIZE = 12 * 1024 * 1024  # above pyarrow's 10 MB part size: each upload is a multipart one, killable midway
WRITER = f"""
import sys
from congrad_ray.storage import Location
root = Location.of(sys.argv[1])
for i in range(10_000):
    root.join(f"part-{{i:05d}}.bin").write_bytes(bytes([i % 251]) * {SIZE})
"""


@pytest.fixture(scope="module")
def aws():
    with s3_server() as env, pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        yield env


def _in_flight(aws: dict[str, str], bucket: str, prefix: str) -> int:
    import boto3

    s3 = boto3.client("s3", endpoint_url=aws["AWS_ENDPOINT_URL"])
    return len(s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []))


def _settled_names(root) -> list[str]:
    """The file names under ``root`` once the server has finished the requests the dead writer had in flight (a
    multipart upload it completed just before the kill lands a moment later): two equal listings 0.5 s apart."""
    import pyarrow.fs as pafs

    def names() -> list[str]:
        infos = root.fs.get_file_info(pafs.FileSelector(root.path, recursive=True))
        return sorted(i.path.rsplit("/", 1)[1] for i in infos if i.type == pafs.FileType.File)

    before, deadline = names(), time.time() + 30
    while True:
        time.sleep(0.5)
        now = names()
        if now == before or time.time() > deadline:
            return now
        before = now


def _kill_mid_write(aws: dict[str, str], prefix: str, delay_s: float) -> int:
    """Start a writer, SIGKILL it ``delay_s`` after its first file is done, check what it left; returns how many
    writes the kill interrupted (open multipart uploads, and temporaries whose copy was not yet deleted)."""

    from congrad_ray.storage import Location

    root = Location.of(f"s3://congrad/{prefix}")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, root.uri], cwd=ROOT, env={**os.environ, **aws})
    deadline = time.time() + 120
    while not root.list(".bin"):  # one file done: the writer is now in the middle of the next ones
        assert proc.poll() is None and time.time() < deadline, "the writer ended or stalled"
        time.sleep(0.05)
    time.sleep(delay_s)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    names = _settled_names(root)
    finals = [n for n in names if n.startswith("part-")]
    temporaries = [n for n in names if n.startswith("_tmp-")]
    assert [f.path.rsplit("/", 1)[1] for f in root.list(".bin")] == sorted(finals)  # listings skip temporaries
    for name in finals:  # every file under a final name is whole
        data = root.join(name).read_bytes()
        assert len(data) == SIZE and data == bytes([int(name[5:10]) % 251]) * SIZE, name
    assert root.remove_temporaries() == len(temporaries)  # what a resumed run does first
    assert sorted(f.path.rsplit("/", 1)[1] for f in root.list()) == sorted(finals)
    return len(temporaries) + _in_flight(aws, "congrad", prefix)


def test_a_writer_killed_mid_write_never_marks_a_partial_file_done(aws):
    interrupted = 0
    for attempt, delay_s in enumerate([0.3, 0.1, 0.5, 0.2, 0.7, 0.05]):
        interrupted += _kill_mid_write(aws, f"markers-{attempt}", delay_s)
        if interrupted >= 2:
            break
    assert interrupted >= 2  # the kills did land mid-write, not only between two files
