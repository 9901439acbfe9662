"""Where the libraries' output goes: a log file, while the console keeps the terminal.

The process's stdout and stderr are redirected at the file-descriptor level (``dup2``), so everything lands in the
log: Python prints and warnings, the ``logging`` records of Ray, Ray Data, Ray Train, transformers and TRL, the C++
core worker's lines, and the workers' output that Ray streams to the driver (``log_to_driver``). The console writes
to duplicates of the original descriptors. A run directory on object storage gets the log uploaded when the command
ends; a local one has it there from the start (``RUN/logs/COMMAND.log``, appended run after run).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

from ..storage import Location, is_local_path

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_location(run_uri: str, command: str) -> Location:
    return Location.of(run_uri).join("logs", f"{command}.log")


class Capture:
    """While open: fd 1 and 2 write to ``target``'s log; ``terminal`` / ``terminal_err`` are the originals."""

    def __init__(self, target: Location):
        self.target = target
        self.local = is_local_path(target.uri)
        self.path = Path(target.path) if self.local else Path(tempfile.mkdtemp(prefix="congrad-log-")) / "run.log"
        self.terminal: IO[str] | None = None
        self.terminal_err: IO[str] | None = None
        self._saved: tuple[int, int] | None = None

    def open(self) -> Capture:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush(), sys.stderr.flush()
        self._saved = os.dup(1), os.dup(2)
        self.terminal = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")
        self.terminal_err = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
        log = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1), os.dup2(log, 2)
        os.close(log)
        print(f"\n===== congrad-ray {' '.join(sys.argv[1:])} at {time.strftime('%Y-%m-%d %H:%M:%S')} =====", flush=True)
        _route_python_logging()
        return self

    def close(self) -> None:
        if self._saved is None:
            return
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(self._saved[0], 1), os.dup2(self._saved[1], 2)
        for fd in self._saved:
            os.close(fd)
        self._saved = None
        for stream in (self.terminal, self.terminal_err):
            if stream is not None:
                stream.flush()
        if not self.local:
            stamped = self.target.path.removesuffix(".log") + time.strftime("-%Y%m%d-%H%M%S.log")
            try:
                Location(self.target.fs, stamped).write_bytes(self.path.read_bytes())
            except OSError as e:  # the run's own outputs are written; a lost log is said, not fatal
                print(f"warning: could not upload the log to {stamped} ({e}); it is at {self.path}", file=sys.stderr)

    @property
    def where(self) -> str:
        """The log's path as the user will find it (object storage: where it is uploaded at the end)."""
        return str(self.path) if self.local else self.target.uri.removesuffix(".log") + "-<time>.log"


def _route_python_logging() -> None:
    """Python warnings and log records (INFO and up) to stderr, which is now the log, with a time stamp."""
    logging.captureWarnings(True)
    root = logging.getLogger()
    if not any(getattr(h, "_congrad_log", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler._congrad_log = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(min(root.level or logging.INFO, logging.INFO))
