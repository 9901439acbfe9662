"""Aggregated cross-lingual direction ``g*`` (docs/design.md §5), on the ``L x k`` matrix of sketches.

PCGrad: for each language ``l``, ``p_l = G_l``; for each other language ``m`` in a seeded random order, if
``<p_l, G_m> < 0`` then ``p_l <- p_l - <p_l, G_m> / ||G_m||^2 G_m``. ``g* = sum_l p_l``. The order of the others is
drawn from (seed, name of ``l``), so the result does not depend on the order the rows arrive in. The ablation
``mean`` is ``g* = mean_l G_l``; the ablation ``per_language`` has no cross-lingual direction at all (each pair is
scored against its own language's ``G_l``; ``g*`` is then reported as the mean). Linear operations commute with ``S``, so this is surgery on the true gradients seen
through the sketch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import Tensor

from .count_sketch import stream_seed


@dataclass
class Direction:
    """``g* [k]``, the projected ``p [L, k]``, and cosine matrices of ``G`` (before) and ``p`` (after), ``[L, L]``."""

    langs: list[str]
    g_star: Tensor
    projected: Tensor
    cosine_before: Tensor
    cosine_after: Tensor
    projections: int


def cosine_matrix(m: Tensor) -> Tensor:
    """Pairwise cosine of the rows of ``m [L, k]`` (0 where a row is zero), ``[L, L]``."""
    norms = m.norm(dim=1)
    unit = m / torch.where(norms > 0, norms, torch.ones_like(norms))[:, None]
    return unit @ unit.T


def pcgrad_order(langs: list[str], lang: str, seed: int) -> list[str]:
    """The seeded order in which ``lang`` is projected against the others."""
    others = sorted(m for m in langs if m != lang)
    random.Random(stream_seed(seed, lang, "pcgrad")).shuffle(others)
    return others


def pcgrad(g: Tensor, langs: list[str], seed: int) -> Direction:
    """PCGrad over languages. ``g [L, k]`` (float64 recommended), row ``j`` is ``G_{langs[j]}``."""
    if len(set(langs)) != len(langs):
        raise ValueError("pcgrad needs one row per language")
    row = {lang: j for j, lang in enumerate(langs)}
    projected = g.clone()
    sq_norms = (g * g).sum(dim=1)
    projections = 0
    for lang in langs:
        p = projected[row[lang]]
        for other in pcgrad_order(langs, lang, seed):
            gm, norm2 = g[row[other]], sq_norms[row[other]]
            dot = torch.dot(p, gm)
            if dot < 0 and norm2 > 0:
                p -= dot / norm2 * gm
                projections += 1
    g_star = projected[[row[lang] for lang in sorted(langs)]].sum(dim=0)  # fixed order: independent of row order
    return Direction(list(langs), g_star, projected, cosine_matrix(g), cosine_matrix(projected), projections)


def mean_direction(g: Tensor, langs: list[str]) -> Direction:
    """The no-surgery ablation: ``g* = mean_l G_l``."""
    cos = cosine_matrix(g)
    order = sorted(range(len(langs)), key=lambda j: langs[j])
    return Direction(list(langs), g[order].mean(dim=0), g.clone(), cos, cos, 0)


@dataclass
class LanguageAgreement:
    """Per language ``l`` (rows in ``langs`` order), each ``[L]`` float64:

    * ``before``: ``cos(G_l, g*)``, the language's own gradient against the consensus;
    * ``after``: ``cos(p_l, g*)``, its projected gradient (what surgery made of it) against the consensus;
    * ``others``: ``cos(G_l, sum_{m != l} G_m)``, against the plain mean of the *other* languages' gradients, so a
      language cannot agree with itself, and surgery (which can project a shared component out of everyone when one
      language opposes it) does not hide who conflicts; 0 when it is alone. This is ``a_l`` of the agreement
      budgets (:func:`congrad_ray.core.selection.agreement_budgets`).
    """

    langs: list[str]
    before: Tensor
    after: Tensor
    others: Tensor

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {
            lang: {"before": float(self.before[j]), "after": float(self.after[j]), "others": float(self.others[j])}
            for j, lang in enumerate(self.langs)
        }


def _cos_rows(m: Tensor, v: Tensor) -> Tensor:
    """Cosine of each row of ``m [L, k]`` with ``v [k]`` or with the matching row of ``v [L, k]`` (0 for zeros)."""
    v = v.expand_as(m) if v.dim() == 1 else v
    denom = m.norm(dim=1) * v.norm(dim=1)
    dots = (m * v).sum(dim=1)
    return torch.where(denom > 0, dots / torch.where(denom > 0, denom, torch.ones_like(denom)), torch.zeros_like(dots))


def language_agreement(g: Tensor, direction: Direction) -> LanguageAgreement:
    """:class:`LanguageAgreement` of the language gradients ``g [L, k]`` (row ``j`` is ``G_{direction.langs[j]}``)
    with the direction computed from them."""
    g = g.to(torch.float64)
    g_star = direction.g_star.to(torch.float64)
    others = g.sum(dim=0)[None, :] - g
    return LanguageAgreement(
        list(direction.langs),
        _cos_rows(g, g_star),
        _cos_rows(direction.projected.to(torch.float64), g_star),
        _cos_rows(g, others),
    )
