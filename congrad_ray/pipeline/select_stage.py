"""Score every sketched pair against ``g*`` (on the driver, or Ray Data over a large sketch store) and decide."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from ..config import FilterConfig
from ..core import SelectionRule, score, select
from ..storage import Location

SCORE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("_row", pa.string()),
        ("lang", pa.string()),
        ("status", pa.string()),
        ("score", pa.float64()),
        ("loss", pa.float32()),
        ("margin", pa.float32()),
        ("n_tokens", pa.int64()),
    ]
)
SCORE_COLUMNS = SCORE_SCHEMA.names
UNSEEN = "dropped_unseen_language"


def score_batch(batch: pa.Table, g_star: np.ndarray, kind: str, per_language: dict | None = None) -> pa.Table:
    """Scores against ``g*``, or, with ``per_language`` (lang -> ``G_l``), each row against its own language's."""
    ok = pc.equal(batch.column("status"), "ok").to_numpy(zero_copy_only=False)
    values = np.full(batch.num_rows, np.nan)
    if ok.any():
        rows = batch.filter(pa.array(ok))
        sketches = np.stack(rows.column("sketch").to_numpy(zero_copy_only=False)).astype(np.float32)
        direction = torch.tensor(g_star)
        if per_language is not None:
            langs = rows.column("lang").to_pylist()
            direction = torch.tensor(np.stack([per_language.get(lang, g_star) for lang in langs]))
        values[ok] = score(torch.from_numpy(sketches), direction, kind).numpy()
    rest = batch.drop_columns(["sketch"])
    return rest.append_column("score", pa.array(values, pa.float64())).select(SCORE_COLUMNS)


def score_all(
    run: Location, g_star: np.ndarray, kind: str, per_language: dict | None = None, driver_max_mb: float = 0.0
) -> pa.Table:
    """``(id, _row, lang, status, score, loss, margin, n_tokens)`` for every row of the sketch store, sorted by id.

    A store of at most ``driver_max_mb`` is read and scored here, one bucket file at a time (a second Ray Data job
    costs seconds of scheduling for a few megabytes); a larger one is scored by Ray Data tasks next to the data.
    Both apply the same ``score_batch`` to the same files, so they give the same table.
    """
    files = run.join("sketches").list(".parquet")
    if not files:
        return SCORE_SCHEMA.empty_table()
    kwargs = {"g_star": g_star, "kind": kind, "per_language": per_language}
    if sum(f.size() for f in files) <= driver_max_mb * 2**20:
        tables = [score_batch(f.read_table(), **kwargs) for f in files]
    else:
        import ray
        import ray.data

        ds = ray.data.read_parquet([f.uri for f in files]).map_batches(
            score_batch, batch_format="pyarrow", fn_kwargs=kwargs
        )
        tables = ray.get(ds.to_arrow_refs())
    tables = [t.cast(SCORE_SCHEMA) for t in tables if t.num_rows]
    return pa.concat_tables([SCORE_SCHEMA.empty_table(), *tables]).sort_by([("id", "ascending"), ("_row", "ascending")])


def decide(scored: pa.Table, cfg: FilterConfig, seen: list[str]) -> pa.Table:
    """Add ``keep``, ``reason`` and ``rank`` (within language) to the scored rows; duplicates keep their reason."""
    status = scored.column("status").to_numpy(zero_copy_only=False)
    langs = scored.column("lang").to_numpy(zero_copy_only=False).astype(str)
    ok = status == "ok"
    trainable = ok & np.isin(langs, seen)
    keep = np.zeros(scored.num_rows, dtype=bool)
    reason = status.astype(object).copy()
    reason[ok & ~trainable] = UNSEEN
    rank = np.full(scored.num_rows, -1, dtype=np.int64)
    if trainable.any() and seen:
        s = cfg.selection
        rule = SelectionRule(s.rule, s.rho, s.tau, s.top_k, s.min_per_language, cfg.run.seed)
        ids = scored.column("id").to_numpy(zero_copy_only=False).astype(str)
        scores = scored.column("score").to_numpy(zero_copy_only=False)
        d = select(scores[trainable], langs[trainable], ids[trainable], rule)
        keep[trainable], reason[trainable], rank[trainable] = d.keep, d.reason, d.rank
    return (
        scored.append_column("keep", pa.array(keep))
        .append_column("reason", pa.array(reason.tolist(), pa.string()))
        .append_column("rank", pa.array(rank))
    )
