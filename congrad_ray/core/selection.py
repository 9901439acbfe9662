"""Score and select (DESIGN.md, step 6).

``score_i = cos(S(g_i), g*)`` (default) or ``<S(g_i), g*>``. Rules:

* ``top_rho`` (default): keep the best ``ceil(rho * n_l)`` pairs of every language ``l`` (no language is emptied);
* ``threshold``: keep ``score_i > tau``;
* ``global_top_k``: keep the ``top_k`` best pairs overall;

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

Rule = Literal["top_rho", "threshold", "global_top_k"]

KEPT_REASONS = {"top_rho": "kept_top_rho", "threshold": "kept_above_threshold", "global_top_k": "kept_global_top_k"}
DROPPED_REASONS = {
    "top_rho": "dropped_below_top_rho",
    "threshold": "dropped_below_threshold",
    "global_top_k": "dropped_below_global_top_k",
}
KEPT_MINIMUM = "kept_min_per_language"


@dataclass(frozen=True)
class SelectionRule:
    rule: Rule = "top_rho"
    rho: float = 0.5
    tau: float = 0.0
    top_k: int = 0
    min_per_language: int = 0


def score(sketches: Tensor, g_star: Tensor, kind: Literal["cosine", "dot"] = "cosine") -> Tensor:
    """``score_i`` for ``sketches [N, k]`` against ``g* [k]``, float64 ``[N]`` (cosine of a zero sketch is 0)."""
    s = sketches.to(torch.float64)
    g = g_star.to(torch.float64)
    dots = s @ g
    if kind == "dot":
        return dots
    if kind != "cosine":
        raise ValueError(f"unknown score {kind!r}: use 'cosine' or 'dot'")
    denom = s.norm(dim=1) * g.norm()
    return torch.where(denom > 0, dots / torch.where(denom > 0, denom, torch.ones_like(denom)), torch.zeros_like(dots))


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
    order = rank_order(scores, ids)
    lang_rank = _rank_within_language(order, langs)
    if rule.rule == "top_rho":
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
