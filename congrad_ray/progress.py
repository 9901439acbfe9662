"""Progress of a run as the run itself records it: the pipeline names its stages and says how to count their
completion records (a :data:`Probe`); an observer (the console, :mod:`congrad_ray.console`) polls the probes and
shows what they count. Nothing here parses logs, and the default observer does nothing.

A probe reads files the stage writes anyway (status files, partial sums, write records, the trainer's progress
record): it costs a directory listing per poll and never changes what the run computes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Count:
    """How far a stage is: ``done`` of ``total`` (None: unknown) ``unit``s, and a short ``detail`` (e.g. a loss)."""

    done: int
    total: int | None = None
    unit: str = ""
    detail: str = ""


Probe = Callable[[], Count]


@dataclass
class Stage:
    """A running stage; the pipeline may set ``detail`` to what the stage produced before it ends."""

    name: str
    probe: Probe | None = None
    detail: str = ""


class Progress:
    """The observer interface; this base does nothing (benchmarks, tests, library use)."""

    def plan(self, plan: dict[str, Any]) -> None:
        """What a step is about to do, as plain data (rows, languages, model, outputs): shown before the work."""

    @contextmanager
    def stage(self, name: str, probe: Probe | None = None) -> Iterator[Stage]:
        """A stage of work: entered before it starts, left when it is done (stages may overlap)."""
        yield Stage(name, probe)

    def skipped(self, name: str, why: str) -> None:
        """A stage that did not run, e.g. found done by a resumed run."""


NO_PROGRESS = Progress()
