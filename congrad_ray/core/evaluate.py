"""Held-out evaluation under the implicit DPO reward (docs/design.md §7: DPO on the kept subset, then evaluate).

Notation as in :mod:`.dpo`: for ``N`` held-out pairs, the implicit rewards of :class:`~.dpo.DPOTerms` are

    r_i^w = beta * (log pi(y^w|x) - log pi_ref(y^w|x))         chosen_reward, [N]
    r_i^l = beta * (log pi(y^l|x) - log pi_ref(y^l|x))         rejected_reward, [N]
    m_i   = r_i^w - r_i^l                                       reward margin, [N]

and for a set of pairs ``I`` (one language, or all seen / all unseen languages):

    accuracy_I = mean_{i in I} 1[m_i > 0]      (the chosen answer beats the rejected one; a tie counts as a miss)
    margin_I   = mean_{i in I} m_i
    loss_I     = mean_{i in I} loss_i          (the LP-DPO loss, length term included)

Group statistics are micro-averages (every pair weighs the same); :func:`macro_average` weighs every language the
same. Means are taken in float64.

The reward accuracy of the initial policy is 0 by construction (``pi = pi_ref``, every margin a tie), so "before and
after DPO" compares the policy's own preference instead, which needs no reference (:func:`.measures.logprob_margin`,
length-normalised):

    preference_accuracy_I = mean_{i in I} 1[log pi(y^w|x) / |y^w| > log pi(y^l|x) / |y^l|]
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from .dpo import DPOTerms
from .measures import logprob_margin


@dataclass(frozen=True)
class RewardStats:
    """Statistics of a set of ``n`` pairs; see the module docstring for the definitions."""

    n: int
    accuracy: float
    margin: float
    loss: float
    chosen_reward: float
    rejected_reward: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def reward_stats(terms: DPOTerms, index: Tensor | None = None) -> RewardStats:
    """:class:`RewardStats` of the pairs ``index`` (``[n]`` long, or all pairs when None) of ``terms`` (each ``[N]``)."""
    parts = [terms.chosen_reward, terms.rejected_reward, terms.loss]
    w, lo, loss = (p.detach().to("cpu", torch.float64) for p in parts)
    if index is not None:
        w, lo, loss = w[index], lo[index], loss[index]
    n = int(w.numel())
    if n == 0:
        nan = float("nan")
        return RewardStats(0, nan, nan, nan, nan, nan)
    margin = w - lo
    return RewardStats(
        n=n,
        accuracy=float((margin > 0).double().mean()),
        margin=float(margin.mean()),
        loss=float(loss.mean()),
        chosen_reward=float(w.mean()),
        rejected_reward=float(lo.mean()),
    )


def per_language_stats(terms: DPOTerms, langs: Sequence[str]) -> dict[str, RewardStats]:
    """``{lang: RewardStats}`` over the pairs of each language (``langs[i]`` is pair ``i``'s), sorted by language."""
    if len(langs) != terms.loss.shape[0]:
        raise ValueError(f"{len(langs)} languages for {terms.loss.shape[0]} pairs")
    out = {}
    for lang in sorted(set(langs)):
        index = torch.tensor([i for i, lg in enumerate(langs) if lg == lang], dtype=torch.long)
        out[lang] = reward_stats(terms, index)
    return out


def group_stats(terms: DPOTerms, langs: Sequence[str], groups: Mapping[str, Collection[str]]) -> dict[str, RewardStats]:
    """``{group: RewardStats}`` micro-averaged over the pairs whose language is in the group; empty groups omitted."""
    out = {}
    for name, members in groups.items():
        members = set(members)
        index = torch.tensor([i for i, lg in enumerate(langs) if lg in members], dtype=torch.long)
        if index.numel():
            out[name] = reward_stats(terms, index)
    return out


def macro_average(per_language: Mapping[str, RewardStats], langs: Collection[str], field: str = "accuracy") -> float:
    """The unweighted mean of ``field`` over the languages of ``langs`` present in ``per_language`` (nan if none)."""
    values = [getattr(per_language[lg], field) for lg in sorted(set(langs)) if lg in per_language]
    return float(sum(values) / len(values)) if values else float("nan")


def preference_accuracy(
    logps: Tensor, completion_lengths: Tensor, langs: Sequence[str], groups: Mapping[str, Collection[str]]
) -> dict[str, dict[str, dict[str, float | int]]]:
    """``{"per_language": {lang: {n, accuracy}}, "groups": {group: {n, accuracy}}}``: how often the policy itself
    prefers the chosen answer (module docstring), from ``[2N]`` log-probs and completion lengths (chosen rows first).
    Groups are micro-averages; empty groups are omitted; languages are sorted."""
    prefers = (logprob_margin(logps, completion_lengths) > 0).to(torch.float64)
    if len(langs) != prefers.shape[0]:
        raise ValueError(f"{len(langs)} languages for {prefers.shape[0]} pairs")

    def stats(members: Collection[str]) -> dict[str, float | int]:
        index = torch.tensor([i for i, lg in enumerate(langs) if lg in members], dtype=torch.long)
        return {"n": int(index.numel()), "accuracy": float(prefers[index].mean())}

    per_language = {lang: stats({lang}) for lang in sorted(set(langs))}
    grouped = {name: stats(set(members)) for name, members in groups.items()}
    return {"per_language": per_language, "groups": {k: v for k, v in grouped.items() if v["n"]}}
