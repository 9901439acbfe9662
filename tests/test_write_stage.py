"""The write stage's columnar split (Arrow joins by row key, group-by counts) against its slow twin: a per-row loop
over Python dicts, written the obvious way. Same kept/dropped/invalid files, same completion record."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from congrad_ray.pipeline.units import Unit, read_unit, row_key
from congrad_ray.pipeline.write_stage import UNSEEN, WriteSpec, split_unit, truth_counts, unit_decisions
from congrad_ray.storage import Location

ROWS, FILE_INDEX = 40, 3


def split_unit_loop(unit: Unit, spec: WriteSpec, decisions: pa.Table, run: Location) -> tuple[dict, dict]:
    """The twin: every row looked up in dicts, its outcome decided by if/elif; ``(tables, record)``."""
    original = read_unit(unit)
    status = {r["_row"]: r for r in run.join("rows", f"{unit.name}.parquet").read_table().to_pylist()}
    decided = {r["_row"]: r for r in decisions.to_pylist()}
    outcome, reason, scores, ids, langs = [], [], [], [], []
    for key in original.column("_row").to_pylist():
        st, d = status[key], decided.get(key)
        if st["reason"] is not None:
            outcome.append("invalid"), reason.append(st["reason"]), scores.append(None)
        elif d["status"] != "ok":
            outcome.append("invalid"), reason.append(d["status"]), scores.append(None)
        else:
            outcome.append("kept" if d["keep"] else "dropped"), reason.append(d["reason"]), scores.append(d["score"])
        ids.append(st["id"]), langs.append(st["lang"])
    table = original.drop_columns(["_row"]).append_column("id", pa.array(ids, pa.string()))
    table = table.append_column("score", pa.array(scores, pa.float64()))
    table = table.append_column("reason", pa.array(reason, pa.string()))
    tables = {}
    for name in ("kept", "dropped", "invalid"):
        part = table.filter(pa.array(np.array(outcome) == name))
        tables[name] = part.drop_columns(["score"]) if name == "invalid" else part
    counts = Counter((o, r, lang or "") for o, r, lang in zip(outcome, reason, langs))
    record = {
        "unit": unit.name,
        "rows": original.num_rows,
        "counts": [[o, r, lang, n] for (o, r, lang), n in sorted(counts.items())],
        "truth": truth_counts(outcome, reason, langs, original.column("is_flipped").to_pylist()),
    }
    return tables, record


@pytest.fixture()
def unit_run(tmp_path):
    rng = np.random.default_rng(0)
    langs = rng.choice(["en", "de", "hi", None], ROWS).tolist()
    source = pa.table(
        {
            "prompt": [f"p{i}" for i in range(ROWS)],
            "lang": langs,
            "is_flipped": rng.choice([True, False, None], ROWS).tolist(),
        }
    )
    path = tmp_path / "input.parquet"
    pq.write_table(source, path, row_group_size=7)
    unit = Unit(index=1, file_index=FILE_INDEX, file=Location.of(str(path)), start=5, stop=33)
    run = Location.of(str(tmp_path / "run"))
    keys = [row_key(FILE_INDEX, r) for r in range(ROWS)]
    invalid = rng.random(ROWS) < 0.2
    status = pa.table(
        {
            "_row": keys,
            "id": [f"id-{r}" for r in range(ROWS)],
            "lang": langs,
            "reason": ["empty_completion" if bad else None for bad in invalid],
        }
    )
    run.join("rows", f"{unit.name}.parquet").write_table(status.slice(unit.start, unit.stop - unit.start))
    valid = [r for r in range(ROWS) if not invalid[r]]
    other_file = [row_key(FILE_INDEX + 1, r) for r in range(ROWS)]  # another file's decisions: never this unit's
    sketch_status = rng.choice(["ok", "ok", "ok", "too_long"], len(valid)).tolist()
    decisions = pa.table(
        {
            "_row": [keys[r] for r in valid] + other_file,
            "id": [f"id-{r}" for r in valid] + other_file,
            "status": sketch_status + ["ok"] * ROWS,
            "keep": rng.random(len(valid) + ROWS) < 0.5,
            "reason": [UNSEEN if langs[r] == "hi" else "kept_top_rho" for r in valid] + ["kept_top_rho"] * ROWS,
            "score": pa.array(rng.normal(size=len(valid) + ROWS), pa.float32()),
        }
    )
    order = rng.permutation(decisions.num_rows)  # decisions come in any order
    return unit, run, decisions.take(pa.array(order))


def stored(run: Location, decisions: pa.Table, name: str = "scores.parquet") -> Location:
    """``decisions`` as the select task stores them: sorted by ``_row``, in row groups (small here: several per
    unit, and some of another file's rows, which the key-range read must skip)."""
    scores = run.join(name)
    scores.write_table(decisions.sort_by("_row"), row_group_size=5)
    return scores


def test_columnar_split_matches_the_per_row_twin(unit_run):
    unit, run, decisions = unit_run
    spec = WriteSpec(run.uri, id_column="id", lang_column="lang", truth_column="is_flipped")
    mine = unit_decisions(stored(run, decisions), unit)
    assert set(mine.column("_row").to_pylist()) == {
        r
        for r in decisions.column("_row").to_pylist()
        if row_key(FILE_INDEX, unit.start) <= r < row_key(FILE_INDEX, unit.stop)
    }
    tables, expected = split_unit_loop(unit, spec, decisions, run)
    record = split_unit(unit, spec, mine)
    assert record == expected
    for name, table in tables.items():
        files = run.join(name).list(".parquet")
        got = files[0].read_table() if files else table.schema.empty_table()
        assert got.equals(table), name
    assert sum(n for *_, n in record["counts"]) == unit.stop - unit.start


def test_a_validated_row_without_a_decision_is_an_error_naming_it(unit_run):
    unit, run, decisions = unit_run
    spec = WriteSpec(run.uri, id_column="id", lang_column="lang")
    first_ok = unit_decisions(stored(run, decisions), unit).column("_row")[0].as_py()
    rest = decisions.filter(pa.compute.not_equal(decisions.column("_row"), first_ok))
    with pytest.raises(RuntimeError, match=f"row {first_ok} passed validation but has no sketch"):
        split_unit(unit, spec, unit_decisions(stored(run, rest, "rest.parquet"), unit))
