"""Per-language diagnosis of every selection (issue 15): each language's agreement with the consensus
(``cos(G_l, g*)`` before PCGrad, ``cos(p_l, g*)`` after, ``cos(G_l, others)``) and how its ground-truth conflicting
pairs score against its clean ones (separation AUROC), computed with the filter report's own functions
(:func:`congrad_ray.pipeline.report.language_diagnosis`, :func:`congrad_ray.core.language_separation`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .measures import read_pairs


def truth_of(train_dir: Path) -> dict[str, bool]:
    table = read_pairs(train_dir, ["id", "is_flipped"])
    return dict(zip(table["id"].to_pylist(), table["is_flipped"].to_pylist()))


def filter_diagnosis(run_dir: Path, train_dir: Path) -> dict[str, dict[str, Any]]:
    """The diagnosis of a finished filter run (its ``scores.parquet`` and ``direction/direction.json``)."""
    import pyarrow.parquet as pq

    from congrad_ray.pipeline.report import language_diagnosis

    direction = run_dir / "direction" / "direction.json"
    agreement = json.loads(direction.read_text()).get("agreement") if direction.exists() else None
    return language_diagnosis(pq.read_table(run_dir / "scores.parquet"), agreement, truth_of(train_dir))


def score_diagnosis(
    scores: Sequence[float], langs: Sequence[str], ids: Sequence[str], keep: Sequence[bool], train_dir: Path
) -> dict[str, dict[str, Any]]:
    """The separation part alone, for a selection that is not a filter run (the margin baseline)."""
    from congrad_ray.core import language_separation

    truth = truth_of(train_dir)
    flags = [bool(truth.get(i, False)) for i in ids]
    out = language_separation(scores, langs, flags)
    for lang, d in out.items():
        mine = [(k, f) for k, f, lg in zip(keep, flags, langs) if lg == lang]
        d["kept"] = int(sum(k for k, _ in mine))
        d["conflicting_kept"] = int(sum(k and f for k, f in mine))
    return out
