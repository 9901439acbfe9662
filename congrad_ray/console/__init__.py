"""The command line's screen: the plan, live progress of each stage, the summary tables and where the outputs are.

A :class:`Session` sends everything the libraries print (Ray, Ray Data, Ray Train, transformers, TRL, the workers'
streams) to a log file in the run directory and keeps the terminal for the screen (:mod:`.capture`); ``verbose``
leaves their output on the terminal as it is and shows progress as plain lines between it. Progress comes from the
run's own completion records (:mod:`congrad_ray.progress`, :mod:`.live`): rich bars on a terminal, plain periodic
lines elsewhere (``ray job submit``, CI, a pipe).
"""

from __future__ import annotations

import os
import sys
from typing import IO, Any

from rich.console import Console, RenderableType
from rich.text import Text

from ..storage import Location
from .capture import Capture, log_location
from .live import PlainProgress, PollingProgress, RichProgress
from .screens import plan_view

VERBOSE_ENV = "CONGRAD_RAY_VERBOSE"  # read by ray_env (Ray Data's own progress bars) and the workers (it propagates)

__all__ = ["Session", "log_location", "verbose"]


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


class Session:
    """``with Session("run", log=Location, verbose=False) as ui:`` ... ``ui.progress`` goes to the pipeline."""

    def __init__(self, command: str, log: Location | None, verbose: bool = False, interval: float | None = None):
        self.command, self.verbose, self.interval = command, verbose, interval
        self.capture = Capture(log) if log is not None and not verbose else None
        self.progress: PollingProgress
        self.console: Console
        self.err: IO[str]

    def __enter__(self) -> Session:
        if self.verbose:
            os.environ[VERBOSE_ENV] = "1"
        out, self.err = sys.stdout, sys.stderr
        if self.capture is not None:
            self.capture.open()
            out, self.err = self.capture.terminal, self.capture.terminal_err
        terminal = out.isatty()
        self.console = Console(file=out, width=None if terminal else 120, highlight=False, emoji=False)
        if terminal and not self.verbose:
            self.progress = RichProgress(self.console, self._plan, self.interval or 1.0)
        else:
            self.progress = PlainProgress(out, self._plan, self.interval or (10.0 if self.verbose else 30.0))
        self.console.rule(f"congrad-ray {self.command}", style="cyan")
        if self.capture is not None:
            self.line(f"log: {self.capture.where} (Ray's and the libraries' output; --verbose shows it here)")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.freeze()
        self.console.file.flush()
        if self.capture is not None:
            # Ray streams its workers' last lines to this process until it is shut down: into the log, not after it
            ray = sys.modules.get("ray")
            if ray is not None and ray.is_initialized():
                ray.shutdown()
            self.capture.close()

    def _plan(self, plan: dict[str, Any]) -> None:
        self.show(Text(f"{plan.get('step', 'plan')}:", style="bold"), plan_view(plan))

    def show(self, *renderables: RenderableType) -> None:
        self.progress.freeze()
        self.console.print(*renderables)

    def line(self, text: str) -> None:
        """A line printed whole (paths stay copyable whatever the terminal's width)."""
        self.progress.freeze()
        self.console.print(text, soft_wrap=True, markup=False)

    def error(self, text: str) -> None:
        self.progress.freeze()
        self.err.write(f"error: {text}\n")
        self.err.flush()
