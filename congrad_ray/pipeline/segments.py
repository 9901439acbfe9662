"""Segments: a run's input as its original paths plus each batch of rows appended later (``congrad-ray filter
--append NEW --run-dir R``), so a corpus that grows is sketched once, row by row, never again.

Segment 0 is ``input.paths``; segment ``s >= 1`` is ``input.appended[s - 1]``. Files are numbered across segments in
order, so ``_row`` keys stay unique and, for an id seen in an earlier segment, the earlier row wins (``duplicate_id``),
as in a fresh run over the union whose files sort in that order. Each segment has buckets of its own,
``[first_s, first_s + B_s)`` with ``B_0 = sketch.buckets`` and ``B_s = ceil(rows_s / sketch.rows_per_bucket)``: an
append never changes a sketched bucket's content, so every earlier sketch and partial sum stays valid; only the new
buckets are sketched, and the per-language sums merge exactly as a single run's do (in bucket order).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from ..config import FilterConfig
from ..errors import ConfigError, InputError
from ..inputs import materialize_inputs
from ..storage import Location, expand_inputs
from .units import Unit


@dataclass(frozen=True)
class Segments:
    files: tuple[tuple[Location, ...], ...]  # per segment, each sorted
    ranges: tuple[tuple[int, int], ...] = ()  # (first bucket, bucket count) per segment

    @property
    def count(self) -> int:
        return len(self.files)

    @property
    def total_buckets(self) -> int:
        return sum(n for _, n in self.ranges)

    def of_file(self) -> list[int]:
        """The segment of each file, in file-index order."""
        return [s for s, files in enumerate(self.files) for _ in files]

    def buckets(self, segment: int) -> range:
        first, n = self.ranges[segment]
        return range(first, first + n)


def segment_files(cfg: FilterConfig) -> Segments:
    """Every segment's Parquet files; a file named by two segments is refused (append only new files)."""
    groups, seen = [], {}
    for s, paths in enumerate([cfg.input.paths, *cfg.input.appended]):
        try:
            files = expand_inputs(materialize_inputs(list(paths)))
        except FileNotFoundError as e:
            raise InputError(f"{e}; check {'input.paths' if s == 0 else '--append'}") from None
        if not files:
            raise InputError(f"no .parquet files under {list(paths)}; check {'input.paths' if s == 0 else '--append'}")
        for f in files:
            if f.uri in seen:
                raise InputError(f"{f.uri} is already in the run (input segment {seen[f.uri]}); append only new files")
            seen[f.uri] = s
        groups.append(tuple(files))
    return Segments(tuple(groups))


def with_bucket_ranges(segments: Segments, units: list[Unit], cfg: FilterConfig) -> Segments:
    """``segments`` with each one's bucket range: segment 0 has ``sketch.buckets`` (resolved), a later one as many
    as its rows need at ``sketch.rows_per_bucket``."""
    ranges, first = [], 0
    for s in range(segments.count):
        rows = sum(u.stop - u.start for u in units if u.segment == s)
        n = int(cfg.sketch.buckets) if s == 0 else max(1, -(-rows // cfg.sketch.rows_per_bucket))
        ranges.append((first, n))
        first += n
    return Segments(segments.files, tuple(ranges))


def check_recorded(run: Location, segments: Segments) -> None:
    """A run's appended segments may only grow: the ones it recorded must be the first ones given now, file for file
    (then the new ones are recorded)."""
    record = run.join("_state", "segments.json")
    given = [[(f.uri, f.size()) for f in files] for files in segments.files[1:]]
    recorded = record.read_json() if record.exists() else []
    if [list(map(list, seg)) for seg in given[: len(recorded)]] != recorded:
        raise ConfigError(
            [
                f"{run.uri}: the inputs appended to it before changed (or were given in another order); append only "
                "new files, or start a new run with --fresh"
            ]
        )
    if len(given) > len(recorded):
        record.write_json(given)


def earlier_ids(run: Location, units: list[Unit]) -> pa.Array:
    """The ids of the valid rows of ``units`` (earlier segments), from their status files: a later row with one of
    them is a duplicate."""
    ids = []
    for u in units:
        t = run.join("rows", f"{u.name}.parquet").read_table(["id", "reason"])
        ids.append(t.filter(pc.is_null(t["reason"]))["id"].combine_chunks())
    return pa.concat_arrays(ids) if ids else pa.array([], pa.string())
