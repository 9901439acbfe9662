"""Units of input: contiguous row ranges of one Parquet file, planned from the files' footers on the driver.

A row's key ``_row = "<file index>:<row in file>"`` names it for the whole run, whatever the block layout; it is how
outputs are joined back to the original rows and how duplicates pick a deterministic winner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import InputError
from ..storage import Location

REQUIRED_COLUMNS = ("prompt", "chosen", "rejected")


@dataclass(frozen=True)
class Unit:
    index: int
    file_index: int
    file: Location
    start: int
    stop: int
    segment: int = 0  # the input segment (pipeline/segments.py): 0 the original input, s >= 1 the s-th append

    @property
    def name(self) -> str:
        return f"unit-{self.index:06d}"


def row_key(file_index: int, row: int) -> str:
    return f"{file_index:06d}:{row:012d}"


def plan_units(
    files: list[Location], rows_per_unit: int, lang_column: str, segment_of: list[int] | None = None
) -> tuple[list[Unit], pa.Schema | None]:
    """Read every footer (a corrupt file or a missing column fails here, before any work) and cut row ranges;
    ``segment_of``: each file's input segment (default 0)."""
    units: list[Unit] = []
    schema = None
    for fi, loc in enumerate(files):
        try:
            with loc.fs.open_input_file(loc.path) as f:
                meta = pq.ParquetFile(f).metadata
                file_schema = meta.schema.to_arrow_schema()
        except (OSError, pa.ArrowInvalid) as e:
            raise InputError(f"{loc.uri} is not a readable Parquet file ({_first_line(e)}); fix or remove it") from None
        missing = [c for c in (*REQUIRED_COLUMNS, lang_column) if c not in file_schema.names]
        if missing:
            hint = " (or set input.lang_column)" if lang_column in missing else ""
            raise InputError(
                f"{loc.uri} lacks column(s) {', '.join(missing)}{hint}; every input needs "
                f"prompt, chosen, rejected and {lang_column}"
            )
        schema = schema or file_schema
        for start in range(0, meta.num_rows, rows_per_unit):
            segment = segment_of[fi] if segment_of else 0
            units.append(Unit(len(units), fi, loc, start, min(meta.num_rows, start + rows_per_unit), segment))
    return units, schema


def language_counts(files: list[Location], lang_column: str) -> dict[str, int]:
    """Rows per language over ``files`` (their language column only; null counts as ``(none)``), sorted."""
    import pyarrow.compute as pc

    counts: dict[str, int] = {}
    for loc in files:
        with loc.fs.open_input_file(loc.path) as f:
            column = pq.ParquetFile(f).read(columns=[lang_column]).column(lang_column)
        try:
            values = pc.value_counts(column.cast(pa.string())).to_pylist()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            values = []  # not strings: validation reports those rows (wrong_type_lang)
        for item in values:
            key = item["values"] if item["values"] is not None else "(none)"
            counts[key] = counts.get(key, 0) + item["counts"]
    return dict(sorted(counts.items()))


def read_unit(unit: Unit) -> pa.Table:
    """The unit's rows with every column, plus ``_row``."""
    with unit.file.fs.open_input_file(unit.file.path) as f:
        pf = pq.ParquetFile(f)
        table = _read_range(pf, unit.start, unit.stop)
    keys = [row_key(unit.file_index, r) for r in range(unit.start, unit.stop)]
    return table.append_column("_row", pa.array(keys, pa.string()))


READ_BATCH_ROWS = 4096  # rows decoded at a time when a unit is cut out of a row group


def _read_range(pf: pq.ParquetFile, start: int, stop: int) -> pa.Table:
    """Rows ``[start, stop)`` of the file, decoded a batch at a time: a unit of a file written as one huge row
    group (a 1M-row file often is) holds its own rows, never the whole group."""
    pieces, offset = [], 0
    for rg in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(rg).num_rows
        if offset + n > start and offset < stop:
            at = offset
            for batch in pf.iter_batches(batch_size=READ_BATCH_ROWS, row_groups=[rg]):
                lo, hi = max(at, start), min(at + batch.num_rows, stop)
                if hi > lo:
                    pieces.append(batch.slice(lo - at, hi - lo))
                at += batch.num_rows
                if at >= stop:
                    break
        offset += n
        if offset >= stop:
            break
    if not pieces:
        return pf.schema_arrow.empty_table()
    return pa.Table.from_batches(pieces).combine_chunks()


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def units_to_items(units: list[Unit]) -> list[dict[str, Any]]:
    return [
        {
            "index": u.index,
            "file_index": u.file_index,
            "uri": u.file.uri,
            "start": u.start,
            "stop": u.stop,
            "segment": u.segment,
        }
        for u in units
    ]


def unit_from_item(item: dict[str, Any]) -> Unit:
    return Unit(
        int(item["index"]),
        int(item["file_index"]),
        Location.of(str(item["uri"])),
        int(item["start"]),
        int(item["stop"]),
        int(item.get("segment", 0)),
    )
