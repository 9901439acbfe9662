"""Preference pairs from judged candidates: best vs worst per prompt, with a reason for every prompt dropped.

No I/O, no Ray. Input: the N candidates of one prompt, each with its text, its mean judge score (None when no
judgement was readable, see :mod:`congrad_ray.core.judge`) and its length (tokens or characters). The rules, in order
(the first that applies names the reason a prompt gives no pair):

1. **Merge duplicates**: candidates with the same text are one response judged more often: the lowest index
   stands for them, with the mean of their (non-missing) scores.
2. ``no_candidates``: the prompt has no candidate at all; ``empty_candidates``: fewer than two non-empty texts.
3. ``all_judgements_failed``: no non-empty candidate has a score; ``too_few_scored``: exactly one has.
4. ``tie``: every scored candidate has the same score.
5. **Choose**. Without length control: chosen = a best-scored candidate, rejected = a worst-scored one (ties by
   lowest index). With length control (``tolerance`` t >= 0, as in Meta-Rewarding's length control): chosen = the
   *shortest* candidate scoring >= best - t, rejected = the *longest* scoring <= worst + t (ties by index); if that
   leaves chosen not strictly above rejected, ``tie``.
6. ``gap_below_min``: chosen score - rejected score < ``min_gap``.
7. ``length_ratio``: with ``max_length_ratio`` r set, chosen longer than r x rejected (a length-biased pair).

A kept pair has reason ``ok``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

REASONS = (
    "ok",
    "no_candidates",
    "empty_candidates",
    "all_judgements_failed",
    "too_few_scored",
    "tie",
    "gap_below_min",
    "length_ratio",
)


@dataclass(frozen=True)
class Candidate:
    index: int
    text: str
    score: float | None
    length: int


@dataclass(frozen=True)
class PairRules:
    """``min_gap`` >= 0; ``length_control`` with ``tolerance`` (score units); ``max_length_ratio`` None = off."""

    min_gap: float = 0.0
    length_control: bool = False
    tolerance: float = 0.0
    max_length_ratio: float | None = None


@dataclass(frozen=True)
class PairDecision:
    reason: str
    chosen: int | None = None
    rejected: int | None = None
    chosen_score: float | None = None
    rejected_score: float | None = None

    @property
    def gap(self) -> float | None:
        if self.chosen_score is None or self.rejected_score is None:
            return None
        return self.chosen_score - self.rejected_score

    @property
    def kept(self) -> bool:
        return self.reason == "ok"


def merge_duplicates(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Rule 1: one candidate per distinct text (lowest index, mean of the members' scores), in index order."""
    groups: dict[str, list[Candidate]] = {}
    for c in sorted(candidates, key=lambda c: c.index):
        groups.setdefault(c.text, []).append(c)
    merged = []
    for members in groups.values():
        scores = [m.score for m in members if m.score is not None]
        mean = sum(scores) / len(scores) if scores else None
        merged.append(Candidate(members[0].index, members[0].text, mean, members[0].length))
    return sorted(merged, key=lambda c: c.index)


def choose_pair(candidates: Sequence[Candidate], rules: PairRules = PairRules()) -> PairDecision:
    """The pair of one prompt, or the reason there is none (rules in the module docstring)."""
    if not candidates:
        return PairDecision("no_candidates")
    pool = [c for c in merge_duplicates(candidates) if c.text.strip()]
    if len(pool) < 2:
        return PairDecision("empty_candidates")
    scored = [c for c in pool if c.score is not None]
    if not scored:
        return PairDecision("all_judgements_failed")
    if len(scored) == 1:
        return PairDecision("too_few_scored")
    best = max(c.score for c in scored)
    worst = min(c.score for c in scored)
    if best == worst:
        return PairDecision("tie")
    if rules.length_control:
        top = [c for c in scored if c.score >= best - rules.tolerance]
        bottom = [c for c in scored if c.score <= worst + rules.tolerance]
        chosen = min(top, key=lambda c: (c.length, c.index))
        rejected = min(bottom, key=lambda c: (-c.length, c.index))
    else:
        chosen = min((c for c in scored if c.score == best), key=lambda c: c.index)
        rejected = min((c for c in scored if c.score == worst), key=lambda c: c.index)
    if chosen.score <= rejected.score:
        return PairDecision("tie", chosen.index, rejected.index, chosen.score, rejected.score)
    decision = PairDecision("ok", chosen.index, rejected.index, chosen.score, rejected.score)
    if decision.gap < rules.min_gap - 1e-9:  # averages of k judgements: no float-rounding drops
        return PairDecision("gap_below_min", chosen.index, rejected.index, chosen.score, rejected.score)
    if rules.max_length_ratio is not None and chosen.length > rules.max_length_ratio * max(rejected.length, 1):
        return PairDecision("length_ratio", chosen.index, rejected.index, chosen.score, rejected.score)
    return decision


def pair_id(round_index: int, prompt_id: str, chosen: int, rejected: int) -> str:
    """Stable id of a pair: the round, the prompt's id and the two candidate indices."""
    return f"r{round_index:02d}-{prompt_id}-c{chosen}-r{rejected}"
