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

from ..storage import Location
from .units import Unit, read_unit, unit_from_item

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


def split_unit(unit: Unit, spec: WriteSpec, decisions: pa.Table) -> dict[str, Any]:
    run = Location.of(spec.run_uri)
    original = read_unit(unit)
    status = {r["_row"]: r for r in run.join("rows", f"{unit.name}.parquet").read_table().to_pylist()}
    decided = {r["_row"]: r for r in decisions.to_pylist()}
    outcome, reason, ids, scores, langs = [], [], [], [], []
    for key in original.column("_row").to_pylist():
        st = status[key]
        d = decided.get(key)
        if st["reason"] is not None:
            outcome.append("invalid"), reason.append(st["reason"]), scores.append(None)
        elif d is None:
            raise RuntimeError(f"row {key} passed validation but has no sketch: the sketch store is incomplete")
        elif d["status"] != "ok":
            outcome.append("invalid"), reason.append(d["status"]), scores.append(None)
        else:
            outcome.append("kept" if d["keep"] else "dropped"), reason.append(d["reason"]), scores.append(d["score"])
        ids.append(st["id"])
        langs.append(st["lang"])
    outcome_arr = np.array(outcome)
    table = original.drop_columns(["_row"])
    if spec.id_column not in table.column_names:
        table = _with_column(table, "id", pa.array(ids, pa.string()))
    table = _with_column(table, "score", pa.array(scores, pa.float64()))
    table = _with_column(table, "reason", pa.array(reason, pa.string()))
    counts: Counter = Counter()
    for name in ("kept", "dropped", "invalid"):
        mask = outcome_arr == name
        part = table.filter(pa.array(mask))
        if name == "invalid":
            part = part.drop_columns([c for c in ("score", "congrad_score") if c in part.column_names])
        if part.num_rows:
            run.join(name, f"{unit.name}.parquet").write_table(part)
    for o, r, lang in zip(outcome, reason, langs):
        counts[(o, r, lang or "")] += 1
    record = {
        "unit": unit.name,
        "rows": original.num_rows,
        "counts": [[o, r, lang, n] for (o, r, lang), n in sorted(counts.items())],
    }
    if spec.truth_column is not None:
        flags = original.column(spec.truth_column).to_pylist()
        record["truth"] = truth_counts(outcome, reason, langs, flags)
    run.join("_state", "write", f"{unit.name}.json").write_json(record)
    return record


def truth_counts(outcome: list[str], reason: list[str], langs: list[str | None], flags: list) -> list[list]:
    """``[outcome, lang, known conflict (bool, or None when unknown), n]`` cells, sorted."""
    cells: Counter = Counter()
    for o, r, lang, flag in zip(outcome, reason, langs, flags):
        cells[("unseen" if r == UNSEEN else o, lang or "", None if flag is None else bool(flag))] += 1
    return [[o, lang, flag, n] for (o, lang, flag), n in sorted(cells.items(), key=lambda kv: repr(kv[0]))]


def write_units(batch: dict[str, np.ndarray], spec: WriteSpec, decisions_ref: Any) -> dict[str, np.ndarray]:
    """Ray Data ``map_batches`` body over unit descriptors; ``decisions_ref`` holds the decision table."""
    import ray

    decisions: pa.Table = ray.get(decisions_ref)
    files = decisions.column("_row").to_pylist()
    prefix = np.array([f[:6] for f in files])
    records = []
    for j in range(len(batch["index"])):
        unit = unit_from_item({k: v[j] for k, v in batch.items()})
        mine = decisions.filter(pa.array(prefix == f"{unit.file_index:06d}"))
        records.append(split_unit(unit, spec, mine))
    return {"unit": np.array([r["unit"] for r in records]), "rows": np.array([r["rows"] for r in records])}
