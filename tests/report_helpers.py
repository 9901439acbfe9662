"""A filter report built without Ray from the pipeline's own pieces: core's PCGrad and selection on synthetic
scores, the write stage's record format and outputs (``kept/``, ``dropped/`` with the truth column), the manifest's
counts and ground truth, and ``write_report``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

LANGS = ("ar", "de", "en", "fr", "sw", "zh")
PAIRS = 120
FLIPPED = {"de": 0.25, "sw": 1.0}  # fraction of each language's pairs that are known conflicts


def synthetic_report(run_dir: Path, seed: int = 0) -> dict[str, Any]:
    """Write ``run_dir/report`` and return ``{"counts", "truth", "decisions"}`` (what the report shows)."""
    from congrad_ray.core import SelectionRule, language_agreement, pcgrad, select
    from congrad_ray.pipeline.manifest import count_outcomes, ground_truth
    from congrad_ray.pipeline.reduce import save_direction
    from congrad_ray.pipeline.report import write_report
    from congrad_ray.pipeline.write_stage import truth_counts
    from congrad_ray.storage import Location

    rng = np.random.default_rng(seed)
    langs, ids, scores, flags = [], [], [], []
    for lang in LANGS:
        n_flip = round(FLIPPED.get(lang, 0.0) * PAIRS)
        for i in range(PAIRS):
            flipped = i < n_flip
            langs.append(lang), ids.append(f"{lang}-{i:04d}"), flags.append(flipped)
            scores.append(float(np.clip(rng.normal(-0.3 if flipped else 0.2, 0.2), -1, 1)))
    decision = select(np.array(scores), np.array(langs), np.array(ids), SelectionRule("top_rho", rho=0.5))
    decisions = pa.table(
        {
            "id": ids,
            "lang": langs,
            "status": ["ok"] * len(ids),
            "score": scores,
            "keep": decision.keep.tolist(),
            "reason": list(decision.reason),
        }
    )
    outcome = ["kept" if k else "dropped" for k in decision.keep]
    counts_cells: dict[tuple, int] = {}
    for o, r, lang in zip(outcome, decision.reason, langs):
        counts_cells[(o, r, lang)] = counts_cells.get((o, r, lang), 0) + 1
    invalid = [["invalid", "empty_chosen", "en", 3]]
    record = {
        "unit": "unit-000000",
        "rows": len(ids) + 3,
        "counts": [[o, r, lang, n] for (o, r, lang), n in sorted(counts_cells.items())] + invalid,
        "truth": truth_counts(outcome, list(decision.reason), langs, flags) + [["invalid", "en", False, 3]],
    }
    run = Location.of(str(run_dir))
    g = torch.tensor(rng.normal(size=(len(LANGS), 64)))
    g[LANGS.index("sw")] *= -1
    direction = pcgrad(g, list(LANGS), 0)
    save_direction(run, direction, g, [PAIRS] * len(LANGS), language_agreement(g, direction))
    keep = np.array(decision.keep)
    for name, mask in (("kept", keep), ("dropped", ~keep)):
        rows = pa.table({"id": ids, "lang": langs, "is_flipped": flags}).filter(pa.array(mask))
        run.join(name, "unit-000000.parquet").write_table(rows)
    counts = count_outcomes([record])
    truth = ground_truth([record], "is_flipped")
    write_report(run, decisions, counts, truth)
    return {"counts": counts, "truth": truth, "decisions": decisions}
