"""Files on any pyarrow filesystem (local paths, s3://, gs://, ...): input discovery, atomic writes, listings.

Every write goes to a temporary name first and is moved into place, so a killed run never leaves a partial file
under a final name; a file's presence is its completion record.
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
import posixpath
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .errors import ConfigError


def is_local_path(uri: str) -> bool:
    """Whether ``uri`` names a path on this node's filesystem: no URL scheme, or ``file://``. ``s3://``, ``gs://``,
    ``demo://`` and ``tiny://`` are not local."""
    return "://" not in uri or uri.startswith("file://")


def has_glob(path: str) -> bool:
    """Whether ``path`` holds a glob pattern (``*``, ``?``, ``[``)."""
    return any(ch in path for ch in "*?[")


def missing_local_path(uri: str) -> bool:
    """Whether ``uri`` is a local path (not a glob) that does not exist; remote URLs are checked where read."""
    return is_local_path(uri) and not has_glob(uri) and not Location.of(uri).exists()


def output_problems(uri: str, key: str, how: str) -> list[str]:
    """What stops a run from writing its directory ``uri``, found before any work starts: a local path that is a
    file, or whose nearest existing parent is a file or cannot be written (probed by creating and removing a
    temporary directory there). Remote URLs are checked by the first write."""
    if not is_local_path(uri):
        return []
    path = Path(Location.of(uri).path)
    fix = f"choose another directory ({how})"
    if path.exists() and not path.is_dir():
        return [f"{key}: {uri} is a file, not a directory; {fix}"]
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return [f"{key}: cannot create {uri}: {parent} is a file; {fix}"]
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".congrad-probe-", dir=parent))
    except OSError as e:
        return [f"{key}: cannot write under {parent} ({e.strerror or type(e).__name__}); {fix}"]
    return []


@dataclass(frozen=True)
class Location:
    """A filesystem and a path on it; pickles (pyarrow filesystems do), so tasks and actors can use it."""

    fs: pafs.FileSystem
    path: str

    @staticmethod
    def of(uri: str) -> Location:
        if not is_local_path(uri):
            fs, path = pafs.FileSystem.from_uri(uri)
            return Location(fs, path)
        path = uri.removeprefix("file://")
        return Location(pafs.LocalFileSystem(), str(Path(path).expanduser().resolve()))

    def join(self, *parts: str) -> Location:
        return Location(self.fs, posixpath.join(self.path, *parts))

    @property
    def uri(self) -> str:
        if isinstance(self.fs, pafs.LocalFileSystem):
            return self.path
        return f"{self.fs.type_name}://{self.path}"

    def exists(self) -> bool:
        return self.fs.get_file_info(self.path).type != pafs.FileType.NotFound

    def size(self) -> int:
        """Bytes of this file."""
        return self.fs.get_file_info(self.path).size

    def mkdir(self) -> Location:
        with write_errors(self):
            self.fs.create_dir(self.path, recursive=True)
        return self

    def list(self, suffix: str = "") -> list[Location]:
        """Files directly under this directory ending in ``suffix``, sorted by name (none if it does not exist)."""
        if not self.exists():
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=False))
        names = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(suffix))
        return [Location(self.fs, n) for n in names if not posixpath.basename(n).startswith((".", "_tmp"))]

    def remove_temporaries(self) -> int:
        """Delete ``_tmp-*`` files a killed writer left anywhere below this directory; returns how many."""
        if not self.exists():
            return 0
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=True))
        stale = [
            i.path for i in infos if i.type == pafs.FileType.File and posixpath.basename(i.path).startswith("_tmp-")
        ]
        for path in stale:
            self.fs.delete_file(path)
        return len(stale)

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def read_json(self) -> Any:
        return json.loads(self.read_bytes().decode())

    def read_table(self, columns: list[str] | None = None, filter: Any = None) -> pa.Table:
        """``filter``: a ``pyarrow.compute`` expression; row groups its column statistics rule out are not read."""
        with self.fs.open_input_file(self.path) as f:
            return pq.read_table(f, columns=columns, filters=filter)

    def write_bytes(self, data: bytes) -> None:
        """Atomic: write a temporary sibling, then move it over the final name."""
        parent = posixpath.dirname(self.path)
        tmp = posixpath.join(parent, f"_tmp-{uuid.uuid4().hex}-{posixpath.basename(self.path)}")
        with write_errors(self):
            self.fs.create_dir(parent, recursive=True)
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.fs.move(tmp, self.path)

    def write_json(self, obj: Any) -> None:
        self.write_bytes(json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def write_table(self, table: pa.Table, row_group_size: int | None = None) -> None:
        buf = io.BytesIO()
        pq.write_table(table, buf, row_group_size=row_group_size)
        self.write_bytes(buf.getvalue())

    def delete_dir(self) -> None:
        if self.exists():
            self.fs.delete_dir(self.path)


@contextmanager
def write_errors(loc: Location) -> Iterator[None]:
    """A write refused by the filesystem (permissions, a file in the way, no space, credentials) as a one-line
    :class:`~congrad_ray.errors.ConfigError` naming the path, also inside a Ray worker."""
    try:
        yield
    except OSError as e:
        reason = e.strerror or " ".join(str(e).split())[:200] or type(e).__name__
        raise ConfigError([f"cannot write {loc.uri}: {reason}; check the run directory (run.output)"]) from e


RUN_DIR_FIX = "use a new run.output (--output) or pass --fresh to start over"


def claim_run_dir(
    uri: str, key: str, fingerprint: str, holds: str, fresh: bool = False, fix: str = RUN_DIR_FIX
) -> Location:
    """Create or resume a run directory that belongs to one ``fingerprint`` (of its inputs and settings).

    ``fresh`` deletes it first, all but its ``logs/`` (the console may be writing there); temporaries a killed writer
    left are removed; a directory claimed by another fingerprint under ``key`` is refused with a
    :class:`~congrad_ray.errors.ConfigError` naming ``fix``.
    """
    run = Location.of(uri)
    if fresh and run.exists():
        for info in run.fs.get_file_info(pafs.FileSelector(run.path)):
            if posixpath.basename(info.path) == "logs":
                continue
            if info.type == pafs.FileType.Directory:
                run.fs.delete_dir(info.path)
            else:
                run.fs.delete_file(info.path)
    run.mkdir()
    run.remove_temporaries()
    record = run.join("_state", "fingerprint.json")
    if record.exists() and record.read_json().get(key) != fingerprint:
        raise ConfigError([f"{run.uri} holds {holds}; {fix}"])
    record.write_json({key: fingerprint})
    return run


def expand_inputs(paths: list[str]) -> list[Location]:
    """Parquet files named by ``paths`` (files, directories searched recursively, or globs), sorted, deduplicated."""
    found: dict[str, Location] = {}
    for uri in paths:
        loc = Location.of(uri)
        if has_glob(loc.path):
            for f in _glob(loc):
                found[f.uri] = f
            continue
        info = loc.fs.get_file_info(loc.path)
        if info.type == pafs.FileType.Directory:
            infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=True))
            for i in infos:
                if i.type == pafs.FileType.File and i.path.endswith(".parquet") and not _hidden(i.path, loc.path):
                    found[Location(loc.fs, i.path).uri] = Location(loc.fs, i.path)
        elif info.type == pafs.FileType.File:
            found[loc.uri] = loc
        else:
            raise FileNotFoundError(f"input {uri} does not exist")
    return [found[k] for k in sorted(found)]


def _glob(loc: Location) -> list[Location]:
    parts = loc.path.split("/")
    fixed = "/".join(p for p in parts[: next(i for i, p in enumerate(parts) if has_glob(p))])
    infos = loc.fs.get_file_info(pafs.FileSelector(fixed or "/", recursive=True, allow_not_found=True))
    return [
        Location(loc.fs, i.path) for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path, loc.path)
    ]


def _hidden(path: str, root: str) -> bool:
    rel = posixpath.relpath(path, root)
    return any(part.startswith((".", "_")) for part in rel.split("/"))
