"""Stage A (CPU tasks): read a unit, validate every row, tokenise the valid ones, record every row's status.

The status file ``rows/<unit>.parquet`` (``_row, id, lang, reason, lang_input``) is written atomically for every
unit; ``lang`` is the canonical code and ``lang_input`` the value as the input wrote it, where they differ. The
valid, tokenised rows flow on to the sketch actors, grouped by id-hash bucket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..core.rows import RowRules, bucket_of, check_row, check_tokens, decode_rows
from ..storage import Location
from ..tokenization import TokenizedPair, tokenize_pairs
from .units import Unit, read_unit, unit_from_item

TOKENS = pa.list_(pa.int32())
STATUS_SCHEMA = pa.schema(
    [
        ("_row", pa.string()),
        ("id", pa.string()),
        ("lang", pa.string()),
        ("reason", pa.string()),
        ("lang_input", pa.string()),
    ]
)
PREPARED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("_row", pa.string()),
        ("lang", pa.string()),
        ("bucket", pa.int64()),
        ("prompt_ids", TOKENS),
        ("chosen_ids", TOKENS),
        ("rejected_ids", TOKENS),
        ("ref_chosen", pa.float64()),
        ("ref_rejected", pa.float64()),
    ]
)

_TOKENIZERS: dict[str, Any] = {}
_EARLIER: dict[str, pa.Array] = {}  # per worker process: the ids of the earlier segments, fetched once


@dataclass(frozen=True)
class PrepareSpec:
    rules: RowRules
    tokenizer_path: str
    max_length: int | None
    truncation_mode: str
    buckets: tuple[int, int]  # (first bucket, count) of the segment being prepared (pipeline/segments.py)
    run_uri: str
    skip_buckets: frozenset[int] = frozenset()
    earlier_ids: Any = None  # a Ray object ref of the earlier segments' ids (an appended segment), or None

    def earlier(self) -> pa.Array | None:
        if self.earlier_ids is None:
            return None
        key = self.earlier_ids.hex()
        if key not in _EARLIER:
            import ray

            _EARLIER.clear()
            _EARLIER[key] = ray.get(self.earlier_ids)
        return _EARLIER[key]

    def tokenizer(self) -> Any:
        if self.tokenizer_path not in _TOKENIZERS:
            from ..models import load_tokenizer

            _TOKENIZERS[self.tokenizer_path] = load_tokenizer(self.tokenizer_path)
        return _TOKENIZERS[self.tokenizer_path]


def prepare_units(batch: dict[str, np.ndarray], spec: PrepareSpec) -> pa.Table:
    """Ray Data ``map_batches`` body over a batch of unit descriptors."""
    tables = []
    for j in range(len(batch["index"])):
        unit = unit_from_item({k: v[j] for k, v in batch.items()})
        tables.append(prepare_unit(unit, spec))
    return pa.concat_tables(tables) if tables else PREPARED_SCHEMA.empty_table()


def prepare_unit(unit: Unit, spec: PrepareSpec) -> pa.Table:
    try:
        table = read_unit(unit)
    except (OSError, pa.ArrowException) as e:
        keys = [f"{unit.file_index:06d}:{r:012d}" for r in range(unit.start, unit.stop)]
        reason = f"unreadable: {str(e).splitlines()[0][:200]}"
        _write_status(spec, unit, [(k, None, None, reason, None) for k in keys])
        return PREPARED_SCHEMA.empty_table()
    keys = table.column("_row").to_pylist()
    rows, checks, pairs = _check_and_tokenize(table, spec)
    if (earlier := spec.earlier()) is not None:  # an id an earlier segment has: that row won (the smaller _row)
        ids = pa.array([c[0] for c in checks], pa.string())
        repeated = pc.fill_null(pc.is_in(ids, value_set=earlier), False).to_pylist()
        checks = [
            (i, lang, "duplicate_id") if dup and r is None else (i, lang, r)
            for (i, lang, r), dup in zip(checks, repeated)
        ]
    status, prepared = [], {name: [] for name in PREPARED_SCHEMA.names}
    refs = spec.rules.ref_columns
    for j, (key, row, (sample_id, lang, reason)) in enumerate(zip(keys, rows, checks)):
        if row is None:
            status.append((key, None, None, reason, None))
            continue
        if reason is None:
            pair = pairs[j]
            lens = (len(pair.prompt_ids), len(pair.chosen_ids), len(pair.rejected_ids))
            reason = check_tokens(*lens, spec.max_length, spec.truncation_mode)
        raw_lang = row.get(spec.rules.lang_column)
        status.append((key, sample_id, lang, reason, raw_lang if lang is not None and raw_lang != lang else None))
        if reason is not None:
            continue
        bucket = spec.buckets[0] + bucket_of(sample_id, spec.buckets[1])
        if bucket in spec.skip_buckets:
            continue
        for name, value in (
            ("id", sample_id),
            ("_row", key),
            ("lang", lang),
            ("bucket", bucket),
            ("prompt_ids", pair.prompt_ids),
            ("chosen_ids", pair.chosen_ids),
            ("rejected_ids", pair.rejected_ids),
            ("ref_chosen", float(row[refs[0]]) if refs else float("nan")),
            ("ref_rejected", float(row[refs[1]]) if refs else float("nan")),
        ):
            prepared[name].append(value)
    _write_status(spec, unit, status)
    return pa.Table.from_pydict(prepared, schema=PREPARED_SCHEMA)


def _check_and_tokenize(table: pa.Table, spec: PrepareSpec) -> tuple[list, list, dict[int, TokenizedPair]]:
    """Every row decoded and checked, in row order (``(id, lang, reason)``; an undecodable row is ``None`` with its
    reason), and the valid ones tokenised in one batch (:func:`tokenize_pairs`), by row position."""
    rows, undecodable = decode_rows(table)
    checks = [
        (None, None, bad) if bad is not None else check_row(row, spec.rules) for row, bad in zip(rows, undecodable)
    ]
    valid = [j for j, (_, _, reason) in enumerate(checks) if reason is None]
    texts = [(rows[j]["prompt"], rows[j]["chosen"], rows[j]["rejected"]) for j in valid]
    return rows, checks, dict(zip(valid, tokenize_pairs(spec.tokenizer(), texts)))


def _write_status(spec: PrepareSpec, unit: Unit, status: list[tuple]) -> None:
    cols = list(zip(*status)) if status else [[]] * len(STATUS_SCHEMA)
    table = pa.Table.from_arrays([pa.array(list(c), pa.string()) for c in cols], schema=STATUS_SCHEMA)
    Location.of(spec.run_uri).join("rows", f"{unit.name}.parquet").write_table(table)
