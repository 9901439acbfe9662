"""Score and select (DESIGN.md, step 6).

``score_i = cos(S(g_i), g*)`` (default) or ``<S(g_i), g*>``. Rules:

* ``top_rho`` (default): keep the best ``ceil(rho * n_l)`` pairs of every language ``l`` (no language is emptied);
* ``threshold``: keep ``score_i > tau``;
* ``global_top_k``: keep the ``top_k`` best pairs overall;
* ``random``: the baseline: ``ceil(rho * n_l)`` pairs of every language drawn at random (seeded by ``seed``), with
  the same quota as ``top_rho``; scores are ignored;

then ``min_per_language`` tops every language up to that many pairs, best first. Ranks are by score descending, ties
broken by sample id ascending, so the decision is a function of the set of (id, lang, score) alone. Every row gets a
reason code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from .count_sketch import stream_seed

Rule = Literal["top_rho", "threshold", "global_top_k", "random"]

KEPT_REASONS = {
    "top_rho": "kept_top_rho",
    "threshold": "kept_above_threshold",
    "global_top_k": "kept_global_top_k",
    "random": "kept_random",
}
DROPPED_REASONS = {
    "top_rho": "dropped_below_top_rho",
    "threshold": "dropped_below_threshold",
    "global_top_k": "dropped_below_global_top_k",
    "random": "dropped_random",
}
KEPT_MINIMUM = "kept_min_per_language"


@dataclass(frozen=True)
class SelectionRule:
    rule: Rule = "top_rho"
    rho: float = 0.5
    tau: float = 0.0
    top_k: int = 0
    min_per_language: int = 0
    seed: int = 0


def score(sketches: Tensor, direction: Tensor, kind: Literal["cosine", "dot"] = "cosine") -> Tensor:
    """``score_i`` of ``sketches [N, k]`` against ``g* [k]``, or row-wise against ``direction [N, k]`` (the
    per-language-only ablation scores pair ``i`` against ``G_{lang_i}``). float64 ``[N]``; the cosine of a zero
    vector is 0."""
    if kind not in ("cosine", "dot"):
        raise ValueError(f"unknown score {kind!r}: use 'cosine' or 'dot'")
    s = sketches.to(torch.float64)
    g = direction.to(torch.float64)
    g = g.expand_as(s) if g.dim() == 1 else g
    dots = (s * g).sum(dim=1)
    if kind == "dot":
        return dots
    denom = s.norm(dim=1) * g.norm(dim=1)
    return torch.where(denom > 0, dots / torch.where(denom > 0, denom, torch.ones_like(denom)), torch.zeros_like(dots))


def random_keys(ids: np.ndarray, seed: int) -> np.ndarray:
    """A seeded pseudo-random score in ``[0, 1)`` per sample id (the random-subset baseline): a function of
    (seed, id) only, so it does not depend on row order or layout."""
    keys = [stream_seed(seed, str(i), "random-subset") / float(1 << 63) for i in ids]
    return np.asarray(keys, dtype=np.float64)


@dataclass
class Decision:
    """``keep [N]`` bool, ``reason [N]`` str, ``rank [N]`` rank within the row's language (0 = best)."""

    keep: np.ndarray
    reason: np.ndarray
    rank: np.ndarray


def rank_order(scores: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Indices sorted by score descending, then id ascending."""
    return np.lexsort((ids, -scores))


def select(scores: np.ndarray, langs: np.ndarray, ids: np.ndarray, rule: SelectionRule) -> Decision:
    """Apply ``rule`` to ``scores [N]`` of rows with languages ``langs [N]`` and unique ``ids [N]`` (strings)."""
    scores = np.asarray(scores, dtype=np.float64)
    langs, ids = np.asarray(langs).astype(str), np.asarray(ids).astype(str)
    n = len(scores)
    if rule.rule == "random":
        scores = random_keys(ids, rule.seed)
    order = rank_order(scores, ids)
    lang_rank = _rank_within_language(order, langs)
    if rule.rule in ("top_rho", "random"):
        _, inverse, counts = np.unique(langs, return_inverse=True, return_counts=True)
        quota = np.array([math.ceil(rule.rho * c) for c in counts], dtype=np.int64)
        keep = lang_rank < quota[inverse]
    elif rule.rule == "threshold":
        keep = scores > rule.tau
    elif rule.rule == "global_top_k":
        keep = np.zeros(n, dtype=bool)
        keep[order[: rule.top_k]] = True
    else:
        raise ValueError(f"unknown selection rule {rule.rule!r}")
    reason = np.where(keep, KEPT_REASONS[rule.rule], DROPPED_REASONS[rule.rule]).astype(object)
    topped_up = ~keep & (lang_rank < rule.min_per_language)
    keep = keep | topped_up
    reason[topped_up] = KEPT_MINIMUM
    return Decision(keep, reason, lang_rank)


def _rank_within_language(order: np.ndarray, langs: np.ndarray) -> np.ndarray:
    """Rank of each row among the rows of its language, following the global ``order``."""
    n = len(order)
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    by_lang = np.lexsort((position, langs))
    grouped = langs[by_lang]
    starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]]) if n else np.array([], dtype=np.int64)
    group_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    rank = np.empty(n, dtype=np.int64)
    rank[by_lang] = np.arange(n) - group_start
    return rank
