"""Benchmarks: ``python -m benchmarks [--only GROUP ...] [--quick] [--strict] [--list]``.

A *group* is a module ``benchmarks/<group>.py`` (names starting with ``_`` are helpers, not groups) exposing

    run(quick: bool) -> Iterator[dict]

that yields one record per figure, built with :func:`benchmarks._common.figure`::

    {"bench": "count_sketch_vs_clone", "group": "core", "metric": "ratio", "value": 1.3,
     "goal": "<= 2", "met": true, "details": {...}}

``goal`` is ``"<= X"``, ``">= X"`` or ``null`` (a figure that is reported, not judged; then ``met`` is ``null``).
The runner prints each record as one JSON line on stdout as soon as it is measured; everything else goes to stderr.
Adding a group is adding a module: nothing to register. Timings use every CPU of the process (``BENCH_THREADS``
overrides) and record the 1-minute load average: on a shared machine, rerun when it is high.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable, Iterator
from types import ModuleType

RECORD_KEYS = ("bench", "group", "metric", "value", "goal", "met", "details")


def groups() -> list[str]:
    """The benchmark groups: the public modules of this package, in name order."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def load(group: str) -> ModuleType:
    """Import one group (lazily: groups import torch, transformers, Ray only when they run)."""
    if group not in groups():
        raise KeyError(f"unknown benchmark group {group!r}; available: {', '.join(groups())}")
    module = importlib.import_module(f"{__name__}.{group}")
    if not callable(getattr(module, "run", None)):
        raise TypeError(f"benchmarks.{group} has no run(quick: bool) -> Iterator[dict]")
    return module


def run_groups(names: Iterable[str], quick: bool = False) -> Iterator[dict]:
    """Run the named groups in order; every record is tagged with its group and checked for the record keys."""
    for name in names:
        for record in load(name).run(quick):
            record.setdefault("group", name)
            missing = [key for key in RECORD_KEYS if key not in record]
            if missing:
                raise ValueError(f"benchmarks.{name} yielded a record without {missing}: {record}")
            yield record
