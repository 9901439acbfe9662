"""Probes of the filter's stages (:mod:`congrad_ray.progress`): each counts a stage's completion records in the run
directory, so what they show is what the run has durably done, on any filesystem and with any number of nodes.

* read + validate: ``rows/<unit>.parquet``, the status file every unit writes once it is read and checked;
* sketch: ``partials/<bucket>.parquet``, whose presence marks a bucket done (its ``count`` column: pairs);
* write: ``_state/write/<unit>.json``, each unit's completion record.

Each file is read once (its counts are cached), so a poll costs one listing per stage.
"""

from __future__ import annotations

import posixpath
from typing import Any

from ..progress import Count
from ..storage import Location
from .units import Unit


def _stem(f: Location) -> str:
    return posixpath.basename(f.path).rsplit(".", 1)[0]


class _Records:
    """Counts per completion record of one directory, each file read once."""

    def __init__(self, directory: Location, suffix: str):
        self.directory, self.suffix = directory, suffix
        self.counts: dict[str, tuple[int, int]] = {}

    def read(self, f: Location) -> tuple[int, int]:
        raise NotImplementedError

    def poll(self) -> dict[str, tuple[int, int]]:
        for f in self.directory.list(self.suffix):
            if _stem(f) not in self.counts:
                self.counts[_stem(f)] = self.read(f)
        return self.counts


class RowsValidated(_Records):
    """Rows read and validated so far, and how many of them are invalid."""

    def __init__(self, run: Location, units: list[Unit]):
        super().__init__(run.join("rows"), ".parquet")
        self.sizes = {u.name: u.stop - u.start for u in units}

    def read(self, f: Location) -> tuple[int, int]:
        reasons = f.read_table(columns=["reason"]).column("reason")
        return len(reasons), len(reasons) - reasons.null_count

    def __call__(self) -> Count:
        counts = {name: c for name, c in self.poll().items() if name in self.sizes}
        invalid = sum(c[1] for c in counts.values())
        done = sum(self.sizes[name] for name in counts)
        return Count(done, sum(self.sizes.values()), "rows", f"{invalid:,} invalid")


class BucketsSketched(_Records):
    """Buckets sketched so far (of ``buckets``) and the pairs in them."""

    def __init__(self, run: Location, buckets: int):
        super().__init__(run.join("partials"), ".parquet")
        self.buckets = buckets

    def read(self, f: Location) -> tuple[int, int]:
        return 1, int(sum(f.read_table(columns=["count"]).column("count").to_pylist()))

    def __call__(self) -> Count:
        pairs = sum(c[1] for c in self.poll().values())
        return Count(len(self.counts), self.buckets, "buckets", f"{pairs:,} pairs")


class UnitsWritten(_Records):
    """Units whose kept/dropped/invalid files are written (of ``units``)."""

    def __init__(self, run: Location, units: list[Unit]):
        super().__init__(run.join("_state", "write"), ".json")
        self.total = len(units)

    def read(self, f: Location) -> tuple[int, int]:
        return 1, int(f.read_json()["rows"])

    def __call__(self) -> Count:
        rows = sum(c[1] for c in self.poll().values())
        return Count(len(self.counts), self.total, "units", f"{rows:,} rows")


def filter_plan(fr: Any, requested: list[str], cost: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a filter run is about to do, as plain data for :meth:`~congrad_ray.progress.Progress.plan`; ``cost``:
    the lines of :func:`~congrad_ray.pipeline.cost.estimate` (tokens, sketch store, cost)."""
    cfg = fr.cfg
    seen, unseen = cfg.languages.seen, cfg.languages.unseen
    selection = cfg.selection
    rule = {
        "top_rho": f"top {selection.rho:.0%} per language",
        "threshold": f"score > {selection.tau:g}",
        "global_top_k": f"top {selection.top_k:,} overall",
        "random": f"random {selection.rho:.0%} per language (baseline)",
    }[selection.rule]
    return {
        "step": "filter",
        "input": requested,
        "rows": sum(u.stop - u.start for u in fr.units),
        "files": fr.files,
        "languages": fr.languages,
        "seen": "inferred from the data" if seen == "infer" else list(seen),
        "unseen": list(unseen),
        "model": cfg.model.name_or_path + (" + LoRA" if cfg.model.lora else ""),
        "sketch": {
            "k": cfg.sketch.k,
            "buckets": fr.segments.total_buckets or cfg.sketch.buckets,
            "route": cfg.sketch.route,
        },
        "appended": [f"{len(seg)} file(s)" for seg in fr.segments.files[1:]],
        "selection": f"{cfg.surgery.method} direction, {cfg.score.kind} score, {rule}",
        "ground_truth": fr.truth_column,
        **{key: value for key, value in (cost or {}).items() if key != "estimate"},
        "output": fr.run.uri,
    }
