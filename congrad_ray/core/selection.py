"""Score and select (docs/design.md §6).

``score_i = cos(S(g_i), g*)`` (default) or ``<S(g_i), g*>``. Rules:

* ``top_rho`` (default): keep the best ``ceil(rho * n_l)`` pairs of every language ``l`` (no language is emptied);
* ``threshold``: keep ``score_i > tau``;
* ``global_top_k``: keep the ``top_k`` best pairs overall;
* ``random``: the baseline: ``ceil(rho * n_l)`` pairs of every language drawn at random (seeded by ``seed``), with
  the same quota as ``top_rho``; scores are ignored;

then ``min_per_language`` tops every language up to that many pairs, best first. Ranks are by score descending, ties
broken by sample id ascending, so the decision is a function of the set of (id, lang, score) alone. Every row gets a
reason code.

Beyond the paper (issue 15), two ways for selection to drop more of a language whose pairs go against the others:

* **agreement budgets** (``budgets="agreement"``, for ``top_rho`` and ``random``): the total budget stays
  ``B = sum_l ceil(rho * n_l)``, but it is shared out by the D'Hondt divisor method over weights
  ``w_l = n_l * max(a_l, 0)``, where ``a_l`` is the language's agreement with the consensus of the *other*
  languages (:func:`congrad_ray.core.surgery.language_agreement`); every language first gets its floor
  ``f_l = min(n_l, max(min_per_language, ceil(floor * n_l)))``. A conflicting language (``a_l <= 0``) keeps its
  floor only; the pairs it gives up go to the agreeing languages in proportion to their weight (and to the others
  by size only once the agreeing ones are full, so the budget is always spent).
* **hybrid score** (:func:`hybrid_scores`): ``(1 - lam) * pct_l(cos_i) + lam * pct_l(m_i)``, the within-language
  percentiles of the gradient agreement and of the policy's own length-normalised margin ``m_i`` (recorded by the
  same sketch pass, no second forward), so a pair must agree with the consensus *and* be one the model already
  leans towards.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from .count_sketch import stream_seed

Rule = Literal["top_rho", "threshold", "global_top_k", "random"]
Budgets = Literal["uniform", "agreement"]

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
    budgets: Budgets = "uniform"
    budget_floor: float = 0.1


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


def select(
    scores: np.ndarray,
    langs: np.ndarray,
    ids: np.ndarray,
    rule: SelectionRule,
    agreement: Mapping[str, float] | None = None,
) -> Decision:
    """Apply ``rule`` to ``scores [N]`` of rows with languages ``langs [N]`` and unique ``ids [N]``: strings, or any
    numbers in the ids' order (ties break by id); the random rule hashes each id, so it needs the ids themselves.

    ``agreement`` (language -> ``a_l``) is needed by ``budgets="agreement"``; a language missing from it counts as
    not agreeing (``a_l = 0``)."""
    scores = np.asarray(scores, dtype=np.float64)
    langs, ids = np.asarray(langs, dtype=str), np.asarray(ids)
    if ids.dtype == object:
        ids = ids.astype(str)
    n = len(scores)
    if rule.rule == "random":
        scores = random_keys(ids, rule.seed)
    order = rank_order(scores, ids)
    lang_rank = _rank_within_language(order, langs)
    if rule.rule in ("top_rho", "random"):
        names, inverse, counts = np.unique(langs, return_inverse=True, return_counts=True)
        if rule.budgets == "agreement":
            if agreement is None:
                raise ValueError("budgets 'agreement' needs the per-language agreement a_l")
            budget = agreement_budgets(
                dict(zip(names.tolist(), counts.tolist())),
                agreement,
                rule.rho,
                rule.budget_floor,
                rule.min_per_language,
            )
            quota = np.array([budget[name] for name in names.tolist()], dtype=np.int64)
        elif rule.budgets == "uniform":
            quota = np.array([math.ceil(rule.rho * c) for c in counts], dtype=np.int64)
        else:
            raise ValueError(f"unknown budgets {rule.budgets!r}: use 'uniform' or 'agreement'")
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


def agreement_budgets(
    counts: Mapping[str, int], agreement: Mapping[str, float], rho: float, floor: float, minimum: int = 0
) -> dict[str, int]:
    """Per-language quotas ``q_l`` from agreement (module docstring): floors first, then the rest of the budget
    ``B = sum_l ceil(rho * n_l)`` seat by seat to the language with the largest ``w_l / (q_l + 1)`` among those
    not yet full, ties to the language that sorts first; once every agreeing language (``w_l > 0``) is full, the
    seats left go the same way to the others by their sizes ``n_l``, so the budget is always spent. The seats are
    taken all at once here: the ``R`` best of every candidate ``(tier, -w_l / s, l)`` for ``s = f_l + 1 .. n_l``
    (the D'Hondt divisor method).

    If the floors alone exceed ``B`` the floors are the quotas (no language is emptied, whatever the budget)."""
    langs = sorted(counts)
    n = {lang: int(counts[lang]) for lang in langs}
    budget = sum(math.ceil(rho * n[lang]) for lang in langs)
    quota = {lang: min(n[lang], max(minimum, math.ceil(floor * n[lang]))) for lang in langs}
    weights = {lang: n[lang] * max(float(agreement.get(lang, 0.0)), 0.0) for lang in langs}
    weights = {lang: w if math.isfinite(w) else 0.0 for lang, w in weights.items()}
    rest = budget - sum(quota.values())
    if rest <= 0:
        return quota
    seats = [
        (0, -(weights[lang] / s), lang) if weights[lang] > 0 else (1, -(n[lang] / s), lang)
        for lang in langs
        for s in range(quota[lang] + 1, n[lang] + 1)
    ]
    seats.sort()
    for _, _, lang in seats[:rest]:
        quota[lang] += 1
    return quota


def within_language_percentiles(values: np.ndarray, langs: np.ndarray) -> np.ndarray:
    """``(r_i - 0.5) / n_l`` with ``r_i`` the mid-rank (ties share the mean rank) of ``values[i]`` among the
    ``n_l`` values of its language, ascending: in ``(0, 1)``, the same scale for every language. float64 ``[N]``."""
    values = np.asarray(values, dtype=np.float64)
    langs = np.asarray(langs).astype(str)
    out = np.empty(len(values), dtype=np.float64)
    for lang in np.unique(langs):
        idx = np.flatnonzero(langs == lang)
        v = values[idx]
        uniq, inverse, count = np.unique(v, return_inverse=True, return_counts=True)
        below = np.concatenate([[0], np.cumsum(count)[:-1]])
        mid_rank = below + (count + 1) / 2.0
        out[idx] = (mid_rank[inverse] - 0.5) / len(v)
    return out


def hybrid_scores(cosine: np.ndarray, margin: np.ndarray, langs: np.ndarray, weight: float) -> np.ndarray:
    """``(1 - weight) * pct_l(cosine_i) + weight * pct_l(margin_i)`` (:func:`within_language_percentiles`),
    ``[N]`` float64; ``weight = 0`` ranks like the cosine, ``weight = 1`` like the margin."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"hybrid weight must lie in [0, 1] (got {weight})")
    return (1.0 - weight) * within_language_percentiles(cosine, langs) + weight * within_language_percentiles(
        margin, langs
    )
