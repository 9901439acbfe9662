"""Score every sketched pair against ``g*`` (in the select task's process, or Ray Data over a large sketch store)
and decide (the select task: pipeline/select_run.py).

``score`` is what the rule ranks by; ``gradient_score`` is the pair's cosine (or dot) with ``g*`` whatever the score
kind (the two differ for ``hybrid`` and ``margin``, which also read the policy's own margin from the sketch store).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from ..config import FilterConfig
from ..core import SelectionRule, hybrid_scores, score, select
from ..errors import ConfigError
from ..storage import Location
from .sketch_codec import sketch_matrix
from .write_stage import UNSEEN

SCORE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("_row", pa.string()),
        ("lang", pa.string()),
        ("status", pa.string()),
        ("score", pa.float64()),
        ("loss", pa.float32()),
        ("margin", pa.float32()),
        ("policy_margin", pa.float32()),
        ("n_tokens", pa.int64()),
    ]
)
SCORE_COLUMNS = SCORE_SCHEMA.names


def score_batch(batch: pa.Table, g_star: np.ndarray, kind: str, per_language: dict | None = None) -> pa.Table:
    """Scores against ``g*``, or, with ``per_language`` (lang -> ``G_l``), each row against its own language's."""
    ok = pc.equal(batch.column("status"), "ok").to_numpy(zero_copy_only=False)
    values = np.full(batch.num_rows, np.nan)
    if ok.any():
        rows = batch.filter(pa.array(ok))
        sketches = sketch_matrix(rows.column("sketch"))
        direction = torch.tensor(g_star)
        if per_language is not None:
            langs = rows.column("lang").to_pylist()
            direction = torch.tensor(np.stack([per_language.get(lang, g_star) for lang in langs]))
        values[ok] = score(torch.from_numpy(sketches), direction, "dot" if kind == "dot" else "cosine").numpy()
    rest = batch.drop_columns(["sketch"])
    if "policy_margin" not in rest.column_names:  # a sketch store written before the column existed
        rest = rest.append_column("policy_margin", pa.nulls(rest.num_rows, pa.float32()))
    return rest.append_column("score", pa.array(values, pa.float64())).select(SCORE_COLUMNS)


SCORE_FILES_PER_TASK = 16  # bucket files one Ray Data scoring task reads: a task per file costs more than it scores


def score_files(batch: dict[str, np.ndarray], **kwargs: Any) -> pa.Table:
    """Score whole sketch-store files (``batch["uri"]``), one after the other: :func:`score_batch` of each."""
    tables = [score_batch(Location.of(str(uri)).read_table(), **kwargs) for uri in batch["uri"]]
    return pa.concat_tables([SCORE_SCHEMA.empty_table(), *(t.cast(SCORE_SCHEMA) for t in tables)])


def score_all(
    run: Location, g_star: np.ndarray, kind: str, per_language: dict | None = None, driver_max_mb: float = 0.0
) -> pa.Table:
    """``(id, _row, lang, status, score, loss, margin, policy_margin, n_tokens)`` for every row of the sketch store,
    sorted by id; ``score`` is the gradient score (cosine, or dot for ``kind`` dot).

    A store of at most ``driver_max_mb`` is read and scored in this process, one bucket file at a time (a Ray Data
    job costs seconds of scheduling for a few megabytes); a larger one by Ray Data tasks of
    ``SCORE_FILES_PER_TASK`` files each, next to the data. Both run :func:`score_files` on the same files, so they
    give the same table.
    """
    files = run.join("sketches").list(".parquet")
    if not files:
        return SCORE_SCHEMA.empty_table()
    kwargs = {"g_star": g_star, "kind": kind, "per_language": per_language}
    uris = [f.uri for f in files]
    if sum(f.size() for f in files) <= driver_max_mb * 2**20:
        tables = [score_files({"uri": np.array(uris)}, **kwargs)]
    else:
        import ray
        import ray.data

        tasks = -(-len(uris) // SCORE_FILES_PER_TASK)
        ds = ray.data.from_items([{"uri": u} for u in uris], override_num_blocks=tasks).map_batches(
            score_files, batch_size=SCORE_FILES_PER_TASK, batch_format="numpy", fn_kwargs=kwargs
        )
        tables = ray.get(ds.to_arrow_refs())
    return pa.concat_tables([SCORE_SCHEMA.empty_table(), *tables]).sort_by([("id", "ascending"), ("_row", "ascending")])


def ranking_scores(gradient: np.ndarray, policy_margin: np.ndarray, langs: np.ndarray, cfg: FilterConfig) -> np.ndarray:
    """What the rule ranks by: the gradient score, the policy margin, or the hybrid of the two."""
    kind = cfg.score.kind
    if kind in ("cosine", "dot"):
        return gradient
    if not np.isfinite(policy_margin).all():
        raise ConfigError(
            [
                f"score.kind {kind} reads the policy margin, which this run's sketch store lacks (sketched by an "
                "older version): re-run `congrad-ray filter` with --fresh, or use score.kind cosine"
            ]
        )
    if kind == "margin":
        return policy_margin.astype(np.float64)
    return hybrid_scores(gradient, policy_margin, langs, cfg.score.hybrid_weight)


def decide(
    scored: pa.Table, cfg: FilterConfig, seen: list[str], agreement: Mapping[str, float] | None = None
) -> pa.Table:
    """Add ``keep``, ``reason`` and ``rank`` (within language) to the scored rows (sorted by id, as
    :func:`score_all` returns them), and ``gradient_score``; ``score`` becomes the ranking score. Duplicates keep
    their reason. ``agreement``: ``a_l`` per seen language.

    Columnar: no Python object per row (the ids' order is their position, the scored table being sorted by id; the
    random rule, which hashes each id, gets the ids themselves), so a million rows cost their numbers, not their
    strings (tests/test_select_stage.py keeps the per-row version as its twin)."""
    status = scored.column("status")
    ok = pc.equal(status, "ok")
    in_seen = pc.is_in(scored.column("lang"), value_set=pa.array(seen, pa.string()))
    trainable_mask = pc.fill_null(pc.and_(ok, in_seen), False).combine_chunks()
    trainable = np.flatnonzero(trainable_mask.to_numpy(zero_copy_only=False))
    n = scored.num_rows
    keep, rank = np.zeros(n, dtype=bool), np.full(n, -1, dtype=np.int64)
    gradient = scored.column("score").to_numpy(zero_copy_only=False).astype(np.float64)
    ranking = gradient.copy()
    reason = pc.if_else(pc.and_(ok, pc.invert(in_seen)), UNSEEN, status).combine_chunks()
    if trainable.size and seen:
        s = cfg.selection
        rule = SelectionRule(s.rule, s.rho, s.tau, s.top_k, s.min_per_language, cfg.run.seed, s.budgets, s.budget_floor)
        at = pa.array(trainable)
        langs = _plain_strings(scored.column("lang").take(at))
        ids = _plain_strings(scored.column("id").take(at)) if s.rule == "random" else trainable  # position: id order
        margins = scored.column("policy_margin").take(at).to_numpy(zero_copy_only=False).astype(np.float64)
        ranking[trainable] = ranking_scores(gradient[trainable], margins, langs, cfg)
        d = select(ranking[trainable], langs, ids, rule, agreement)
        keep[trainable], rank[trainable] = d.keep, d.rank
        reason = pc.replace_with_mask(reason, trainable_mask, pa.array(d.reason, pa.string()))
    return (
        scored.set_column(scored.schema.get_field_index("score"), "score", pa.array(ranking, pa.float64()))
        .append_column("gradient_score", pa.array(gradient, pa.float64()))
        .append_column("keep", pa.array(keep))
        .append_column("reason", reason)
        .append_column("rank", pa.array(rank))
    )


def _plain_strings(column: pa.ChunkedArray) -> np.ndarray:
    """A string column as a numpy fixed-width unicode array (a few bytes per row, no Python object per row)."""
    encoded = pc.dictionary_encode(column).combine_chunks()
    names = np.asarray(encoded.dictionary.to_pylist(), dtype=str)
    return names[encoded.indices.to_numpy(zero_copy_only=False)] if len(names) else np.array([], dtype=str)
