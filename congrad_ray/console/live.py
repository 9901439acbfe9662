"""The console's :class:`~congrad_ray.progress.Progress`: a thread polls the probes of the running stages (counts of
their completion records) and shows them, as rich progress bars on a terminal, or as plain periodic lines where the
output is not a terminal (``ray job submit``, CI, a pipe).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

from ..progress import Count, Progress, Stage


@dataclass
class Tracked:
    stage: Stage
    started: float
    count: Count | None = None
    ended: float | None = None
    failed: bool = False
    task: Any = None  # the rich task id

    def text(self) -> str:
        """``done/total unit · detail`` (what is known of it)."""
        c = self.count
        parts = []
        if c is not None and (c.total is not None or c.done):
            parts.append(f"{c.done:,}/{c.total:,} {c.unit}" if c.total is not None else f"{c.done:,} {c.unit}")
        detail = self.stage.detail or (c.detail if c is not None else "")
        if detail:
            parts.append(detail)
        return " · ".join(p.strip() for p in parts)

    def eta(self, now: float) -> float | None:
        c = self.count
        if c is None or not c.total or c.done <= 0 or c.done >= c.total:
            return None
        return (now - self.started) / c.done * (c.total - c.done)


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else f"{seconds // 60}:{seconds % 60:02d}"
    )


class PollingProgress(Progress):
    """Tracks the running stages and polls their probes every ``interval`` seconds in a daemon thread."""

    def __init__(self, on_plan: Callable[[dict[str, Any]], None], interval: float):
        self.on_plan, self.interval = on_plan, interval
        self.active: list[Tracked] = []
        self.lock = threading.Lock()
        self.t0 = time.monotonic()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def plan(self, plan: dict[str, Any]) -> None:
        self.on_plan(plan)

    @contextmanager
    def stage(self, name: str, probe: Any = None) -> Iterator[Stage]:
        tracked = Tracked(Stage(name, probe), time.monotonic())
        with self.lock:
            self.active.append(tracked)
            self.started(tracked)
        self._ensure_thread()
        try:
            yield tracked.stage
        except BaseException:
            tracked.failed = True
            raise
        finally:
            self._poll(tracked)
            tracked.ended = time.monotonic()
            with self.lock:
                self.active.remove(tracked)
                self.finished(tracked)

    def _poll(self, tracked: Tracked) -> None:
        if tracked.stage.probe is None:
            return
        with contextlib.suppress(Exception):  # it reads what other processes write: a miss now is read next time
            tracked.count = tracked.stage.probe()

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="congrad-progress", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.interval)
            with self.lock:
                running = list(self.active)
            for tracked in running:
                self._poll(tracked)
            with self.lock:
                self.tick([t for t in running if t in self.active])

    # what a renderer shows
    def started(self, tracked: Tracked) -> None: ...

    def tick(self, running: list[Tracked]) -> None: ...

    def finished(self, tracked: Tracked) -> None: ...

    def freeze(self) -> None:
        """Before other output: leave what is shown as it is."""


class PlainProgress(PollingProgress):
    """One line per finished stage, and every ``interval`` seconds one line with the running stages (if changed)."""

    def __init__(self, out: IO[str], on_plan: Callable[[dict[str, Any]], None], interval: float = 30.0):
        super().__init__(on_plan, interval)
        self.out = out
        self._last = ""

    def _line(self, text: str) -> None:
        self.out.write(f"[{clock(time.monotonic() - self.t0)}] {text}\n")
        self.out.flush()

    def tick(self, running: list[Tracked]) -> None:
        now = time.monotonic()
        parts = []
        for t in running:
            eta = t.eta(now)
            parts.append(f"{t.stage.name} {t.text()}".strip() + (f" (ETA {clock(eta)})" if eta is not None else ""))
        line = " | ".join(parts)
        if any(t.count is not None for t in running) and line != self._last:  # a stage with no count: its end
            self._line("… " + line)
            self._last = line

    def finished(self, tracked: Tracked) -> None:
        mark = "✗" if tracked.failed else "✔"
        text = tracked.text()
        self._line(
            f"{mark} {tracked.stage.name}{': ' + text if text else ''} ({clock(tracked.ended - tracked.started)})"
        )

    def skipped(self, name: str, why: str) -> None:
        self._line(f"– {name}: {why}")


class RichProgress(PollingProgress):
    """Rich progress bars on a terminal: one row per stage, kept on screen once the stage is done."""

    def __init__(self, console: Any, on_plan: Callable[[dict[str, Any]], None], interval: float = 1.0):
        super().__init__(on_plan, interval)
        self.console = console
        self.bars: Any = None

    def _bars(self) -> Any:
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        if self.bars is None:
            self.bars = Progress(
                SpinnerColumn(finished_text="[green]✔[/]"),
                TextColumn("{task.description:<18}"),
                BarColumn(bar_width=24),
                TextColumn("{task.fields[text]}"),
                TextColumn("{task.fields[eta]}", style="dim"),
                TimeElapsedColumn(),
                console=self.console,
                refresh_per_second=4,
            )
            self.bars.start()
        return self.bars

    def started(self, tracked: Tracked) -> None:
        tracked.task = self._bars().add_task(tracked.stage.name, total=None, text="", eta="")

    def tick(self, running: list[Tracked]) -> None:
        now = time.monotonic()
        for t in running:
            eta = t.eta(now)
            c = t.count
            self.bars.update(
                t.task,
                completed=c.done if c else 0,
                total=c.total if c else None,
                text=t.text(),
                eta=f"ETA {clock(eta)}" if eta is not None else "",
            )

    def finished(self, tracked: Tracked) -> None:
        c = tracked.count
        total = c.total if c and c.total else 1
        self.bars.update(tracked.task, total=total, completed=total, text=tracked.text(), eta="")
        if tracked.failed:
            self.bars.update(tracked.task, description=f"[red]✗ {tracked.stage.name}[/]")
        self.bars.stop_task(tracked.task)

    def skipped(self, name: str, why: str) -> None:
        self.freeze()
        self.console.print(f"[dim]– {name}: {why}[/]")

    def freeze(self) -> None:
        with self.lock:
            if self.bars is not None and not self.active:
                self.bars.stop()
                self.bars = None
