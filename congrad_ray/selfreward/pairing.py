"""The pairs stage: candidates + judgements -> preference pairs (the filter's input contract) and dropped prompts.

Per candidate, the mean of its readable judgements (:func:`~congrad_ray.core.judge.summarize_scores`); per prompt,
best vs worst by :func:`~congrad_ray.core.pairs.choose_pair`. A pair row has the filter's columns ``id`` (round +
prompt id + candidate indices), ``lang``, ``prompt`` (the rendered text the model saw), ``chosen``, ``rejected``
(strings), plus ``round, prompt_id, instruction, chosen_index, rejected_index, chosen_score, rejected_score,
score_gap, candidates, candidate_scores, candidate_judgements`` (readable judgements per candidate) and
``pair_reason`` (``ok``; not ``reason``, which the filter adds). A prompt without a pair goes to the dropped table
with its reason.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import pyarrow as pa

from ..core.judge import summarize_scores
from ..core.pairs import Candidate, PairRules, choose_pair, pair_id
from .config import PairsSection

_COMMON = [
    ("round", pa.int32()),
    ("prompt_id", pa.string()),
    ("lang", pa.string()),
    ("prompt", pa.string()),
    ("instruction", pa.string()),
    ("candidates", pa.list_(pa.string())),
    ("candidate_scores", pa.list_(pa.float64())),
    ("candidate_judgements", pa.list_(pa.int32())),
    ("chosen_index", pa.int32()),
    ("rejected_index", pa.int32()),
    ("chosen_score", pa.float64()),
    ("rejected_score", pa.float64()),
    ("score_gap", pa.float64()),
    ("pair_reason", pa.string()),
]
PAIR_SCHEMA = pa.schema([("id", pa.string()), ("chosen", pa.string()), ("rejected", pa.string()), *_COMMON])
DROPPED_SCHEMA = pa.schema(_COMMON)


def rules_of(cfg: PairsSection) -> PairRules:
    lc = cfg.length_control
    return PairRules(cfg.min_gap, lc.enabled, lc.tolerance, lc.max_ratio)


def build_pairs(
    round_index: int, candidates: list[dict], judgements: list[dict], cfg: PairsSection, min_valid: int
) -> tuple[pa.Table, pa.Table, dict[str, Any]]:
    """``(pairs, dropped, stats)``; rows sorted by prompt id, so the output does not depend on arrival order."""
    scores: dict[tuple[str, int], list[float | None]] = defaultdict(list)
    for j in judgements:
        scores[(j["prompt_id"], j["candidate_index"])].append(j["score"])
    by_prompt: dict[str, list[dict]] = defaultdict(list)
    for c in candidates:
        by_prompt[c["prompt_id"]].append(c)
    rules = rules_of(cfg)
    pairs, dropped, reasons = [], [], Counter()
    for prompt_id in sorted(by_prompt):
        cands = sorted(by_prompt[prompt_id], key=lambda c: c["candidate_index"])
        summaries = [summarize_scores(scores.get((prompt_id, c["candidate_index"]), []), min_valid) for c in cands]
        unit = cfg.length_control.unit
        decision = choose_pair(
            [
                Candidate(
                    c["candidate_index"], c["text"], s.mean, c["n_tokens"] if unit == "tokens" else len(c["text"])
                )
                for c, s in zip(cands, summaries)
            ],
            rules,
        )
        first = cands[0]
        row = {
            "round": round_index,
            "prompt_id": prompt_id,
            "lang": first["lang"],
            "prompt": first["prompt"],
            "instruction": first["instruction"],
            "candidates": [c["text"] for c in cands],
            "candidate_scores": [s.mean for s in summaries],
            "candidate_judgements": [s.n_valid for s in summaries],
            "chosen_index": decision.chosen,
            "rejected_index": decision.rejected,
            "chosen_score": decision.chosen_score,
            "rejected_score": decision.rejected_score,
            "score_gap": decision.gap,
            "pair_reason": decision.reason,
        }
        reasons[(first["lang"], decision.reason)] += 1
        if decision.kept:
            text = {c["candidate_index"]: c["text"] for c in cands}
            row |= {
                "id": pair_id(round_index, prompt_id, decision.chosen, decision.rejected),
                "chosen": text[decision.chosen],
                "rejected": text[decision.rejected],
            }
            pairs.append(row)
        else:
            dropped.append(row)
    stats = {
        "prompts": len(by_prompt),
        "pairs": len(pairs),
        "dropped": len(dropped),
        "reasons": dict(sorted(Counter(r for (_, r) in reasons.elements()).items())),
        "per_language": {
            lang: {r: n for (lg, r), n in sorted(reasons.items()) if lg == lang}
            for lang in sorted({lg for lg, _ in reasons})
        },
        "mean_gap": sum(p["score_gap"] for p in pairs) / len(pairs) if pairs else None,
    }
    return (
        pa.Table.from_pylist(pairs, schema=PAIR_SCHEMA),
        pa.Table.from_pylist(dropped, schema=DROPPED_SCHEMA),
        stats,
    )
