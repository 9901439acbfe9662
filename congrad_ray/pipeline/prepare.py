"""Stage A (CPU tasks): read a unit, validate every row, record every row's status; the valid rows flow on, as
text, to the sketch actors, grouped by id-hash bucket, which tokenise them (:func:`tokenize_prepared`).

The status file ``rows/<unit>.parquet`` (``_row, id, lang, reason, lang_input``) is written atomically for every
unit; ``lang`` is the canonical code and ``lang_input`` the value as the input wrote it, where they differ. Reasons
found from the tokens (``empty_completion``, ``prompt_too_long``) are the sketch store's status of the row instead:
tokenising after the group-by, not before it, takes the corpus's tokenisation out of the barrier that idles every
sketch actor until the whole input has been read (issue 11).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..core.rows import RowRules, bucket_of, check_row, check_tokens, decode_rows
from ..storage import Location
from ..tokenization import TokenizedPair, tokenize_pairs
from .units import Unit, read_unit, unit_from_item

STATUS_SCHEMA = pa.schema(
    [
        ("_row", pa.string()),
        ("id", pa.string()),
        ("lang", pa.string()),
        ("reason", pa.string()),
        ("lang_input", pa.string()),
    ]
)
TEXTS = ("prompt", "chosen", "rejected")
PREPARED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("_row", pa.string()),
        ("lang", pa.string()),
        ("bucket", pa.int64()),
        ("prompt", pa.string()),  # plain text, or a conversation (a list of messages) as JSON when ``messages``
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("messages", pa.bool_()),
        ("ref_chosen", pa.float64()),
        ("ref_rejected", pa.float64()),
    ]
)

_EARLIER: dict[str, pa.Array] = {}  # per worker process: the ids of the earlier segments, fetched once


@dataclass(frozen=True)
class PrepareSpec:
    rules: RowRules
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
    rows, undecodable = decode_rows(table)
    checks = [
        (None, None, bad) if bad is not None else check_row(row, spec.rules) for row, bad in zip(rows, undecodable)
    ]
    if (earlier := spec.earlier()) is not None:  # an id an earlier segment has: that row won (the smaller _row)
        ids = pa.array([c[0] for c in checks], pa.string())
        repeated = pc.fill_null(pc.is_in(ids, value_set=earlier), False).to_pylist()
        checks = [
            (i, lang, "duplicate_id") if dup and r is None else (i, lang, r)
            for (i, lang, r), dup in zip(checks, repeated)
        ]
    status, prepared = [], {name: [] for name in PREPARED_SCHEMA.names}
    refs = spec.rules.ref_columns
    for key, row, (sample_id, lang, reason) in zip(keys, rows, checks):
        if row is None:
            status.append((key, None, None, reason, None))
            continue
        raw_lang = row.get(spec.rules.lang_column)
        status.append((key, sample_id, lang, reason, raw_lang if lang is not None and raw_lang != lang else None))
        if reason is not None:
            continue
        bucket = spec.buckets[0] + bucket_of(sample_id, spec.buckets[1])
        if bucket in spec.skip_buckets:
            continue
        messages = not isinstance(row["prompt"], str)
        for name, value in (
            ("id", sample_id),
            ("_row", key),
            ("lang", lang),
            ("bucket", bucket),
            *((c, json.dumps(row[c]) if messages else row[c]) for c in TEXTS),
            ("messages", messages),
            ("ref_chosen", float(row[refs[0]]) if refs else float("nan")),
            ("ref_rejected", float(row[refs[1]]) if refs else float("nan")),
        ):
            prepared[name].append(value)
    _write_status(spec, unit, status)
    return pa.Table.from_pydict(prepared, schema=PREPARED_SCHEMA)


def tokenize_prepared(
    tokenizer: Any, rows: pa.Table, max_length: int | None, truncation_mode: str
) -> tuple[list[TokenizedPair], list[str | None]]:
    """The prepared ``rows`` (:data:`PREPARED_SCHEMA`) tokenised in one batch (:func:`tokenize_pairs`), and per row
    the reason its tokens cannot be trained on (:func:`check_tokens`), or None."""
    columns = [rows.column(c).to_pylist() for c in TEXTS]
    messages = rows.column("messages").to_pylist()
    texts = [
        tuple(json.loads(v) for v in values) if conversational else values
        for conversational, values in zip(messages, zip(*columns))
    ]
    pairs = tokenize_pairs(tokenizer, texts)
    reasons = [
        check_tokens(len(p.prompt_ids), len(p.chosen_ids), len(p.rejected_ids), max_length, truncation_mode)
        for p in pairs
    ]
    return pairs, reasons


def _write_status(spec: PrepareSpec, unit: Unit, status: list[tuple]) -> None:
    cols = list(zip(*status)) if status else [[]] * len(STATUS_SCHEMA)
    table = pa.Table.from_arrays([pa.array(list(c), pa.string()) for c in cols], schema=STATUS_SCHEMA)
    Location.of(spec.run_uri).join("rows", f"{unit.name}.parquet").write_table(table)
