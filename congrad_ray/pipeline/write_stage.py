"""Final pass (CPU tasks): every input row goes to exactly one of ``kept/``, ``dropped/`` or ``invalid/``.

Each unit re-reads its original rows and joins them by ``_row`` with its status (stage A) and the decisions, so all
original columns are carried through untouched; ``id`` (when derived), ``score`` and ``reason`` are added (prefixed
``congrad_`` if the input already has such a column). Files are written atomically per unit, then a completion
record with the unit's counts: per (outcome, reason, language), and, when the input has a ground-truth column, per
(outcome, language, known conflict), where pairs of unseen languages (never candidates) count as ``unseen``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..storage import Location
from .units import Unit, read_unit, row_key, unit_from_item

UNSEEN = "dropped_unseen_language"  # the reason of a pair whose language takes no part in the selection


@dataclass(frozen=True)
class WriteSpec:
    run_uri: str
    id_column: str
    lang_column: str
    truth_column: str | None = None


def _with_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    if name in table.column_names:
        name = f"congrad_{name}"
    return table.append_column(name, values)


DECISION_COLUMNS = ["_row", "id", "status", "keep", "reason", "score"]


def unit_decisions(scores: Location, unit: Unit) -> pa.Table:
    """The decisions of ``unit``'s rows, read from ``scores.parquet`` (sorted by ``_row``): its key range
    ``[row_key(start), row_key(stop))`` (keys sort by file, then row), so only the row groups holding it are read."""
    lo, hi = row_key(unit.file_index, unit.start), row_key(unit.file_index, unit.stop)
    key = pc.field("_row")
    return scores.read_table(DECISION_COLUMNS, filter=(key >= lo) & (key < hi))


def _aligned(table: pa.Table, keys: pa.ChunkedArray) -> tuple[pa.Table, pa.Array]:
    """``table``'s rows in the order of ``keys`` (by ``_row``; a null row where a key has none) and the null mask."""
    index = pc.index_in(keys, value_set=table.column("_row"))
    return table.take(index), pc.is_null(index)


def outcomes(status: pa.Table, decisions: pa.Table, keys: pa.ChunkedArray) -> pa.Table:
    """``outcome, reason, score, id, lang`` for each row key, in ``keys``' order: ``invalid`` with the validation
    reason (stage A), else ``invalid`` with a non-ok sketch status, else ``kept``/``dropped`` with the selection's
    reason and score."""
    st, no_status = _aligned(status, keys)
    d, no_decision = _aligned(decisions, keys)
    if pc.any(no_status).as_py():
        raise RuntimeError(
            f"row {keys.filter(no_status)[0]} has no validation status: the rows/ records are incomplete"
        )
    failed_validation = pc.is_valid(st.column("reason"))
    missing = pc.and_(pc.invert(failed_validation), no_decision)
    if pc.any(missing).as_py():
        key = keys.filter(missing)[0]
        raise RuntimeError(f"row {key} passed validation but has no sketch: the sketch store is incomplete")
    not_ok = pc.fill_null(pc.not_equal(d.column("status"), "ok"), False)  # null: no decision (failed validation)
    failed_sketch = pc.and_(pc.invert(failed_validation), not_ok)
    invalid = pc.or_(failed_validation, failed_sketch)
    selected = pc.if_else(pc.fill_null(d.column("keep"), False), "kept", "dropped")
    reason = pc.if_else(
        failed_validation, st.column("reason"), pc.if_else(failed_sketch, d.column("status"), d.column("reason"))
    )
    return pa.table(
        {
            "outcome": pc.if_else(invalid, "invalid", selected),
            "reason": reason,
            "score": pc.if_else(invalid, pa.scalar(None, pa.float64()), pc.cast(d.column("score"), pa.float64())),
            "id": st.column("id"),
            "lang": pc.fill_null(st.column("lang"), ""),
        }
    )


def split_unit(unit: Unit, spec: WriteSpec, decisions: pa.Table) -> dict[str, Any]:
    run = Location.of(spec.run_uri)
    original = read_unit(unit)
    status = run.join("rows", f"{unit.name}.parquet").read_table().select(["_row", "id", "lang", "reason"])
    out = outcomes(status, decisions, original.column("_row"))
    table = original.drop_columns(["_row"])
    if spec.id_column not in table.column_names:
        table = _with_column(table, "id", out.column("id"))
    table = _with_column(table, "score", out.column("score"))
    table = _with_column(table, "reason", out.column("reason"))
    for name in ("kept", "dropped", "invalid"):
        part = table.filter(pc.equal(out.column("outcome"), name))
        if name == "invalid":
            part = part.drop_columns([c for c in ("score", "congrad_score") if c in part.column_names])
        if part.num_rows:
            run.join(name, f"{unit.name}.parquet").write_table(part)
    groups = out.group_by(["outcome", "reason", "lang"]).aggregate([("outcome", "count")]).to_pylist()
    counts = sorted([g["outcome"], g["reason"], g["lang"], g["outcome_count"]] for g in groups)
    record = {"unit": unit.name, "rows": original.num_rows, "counts": counts}
    if spec.truth_column is not None:
        columns = [out.column(c).to_pylist() for c in ("outcome", "reason", "lang")]
        record["truth"] = truth_counts(*columns, original.column(spec.truth_column).to_pylist())
    run.join("_state", "write", f"{unit.name}.json").write_json(record)
    return record


def truth_counts(outcome: list[str], reason: list[str], langs: list[str | None], flags: list) -> list[list]:
    """``[outcome, lang, known conflict (bool, or None when unknown), n]`` cells, sorted."""
    cells: Counter = Counter()
    for o, r, lang, flag in zip(outcome, reason, langs, flags):
        cells[("unseen" if r == UNSEEN else o, lang or "", None if flag is None else bool(flag))] += 1
    return [[o, lang, flag, n] for (o, lang, flag), n in sorted(cells.items(), key=lambda kv: repr(kv[0]))]


def write_units(batch: dict[str, np.ndarray], spec: WriteSpec) -> dict[str, np.ndarray]:
    """Ray Data ``map_batches`` body over unit descriptors; each unit reads its own decisions."""
    scores = Location.of(spec.run_uri).join("scores.parquet")
    records = []
    for j in range(len(batch["index"])):
        unit = unit_from_item({k: v[j] for k, v in batch.items()})
        records.append(split_unit(unit, spec, unit_decisions(scores, unit)))
    return {"unit": np.array([r["unit"] for r in records]), "rows": np.array([r["rows"] for r in records])}
