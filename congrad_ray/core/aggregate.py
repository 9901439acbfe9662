"""Language gradients ``G_l`` (docs/design.md §4), from partial results that merge exactly.

* ``mean`` (default): ``G_l = (1 / n_l) sum_{i in l} S(g_i)``. Workers keep ``(sum, count)`` per language in
  float64; partials add, so any split of the data gives the same ``G_l`` (to float64 rounding, and bitwise when the
  reducer sums in a fixed order).
* ``ema``: the paper's running average over mini-batches of a language in a fixed global order (sample id),
  ``G_l <- gamma G_l + (1 - gamma) S(g_batch)`` from ``G_l = 0``. A contiguous segment ``k`` of mini-batches ending at
  batch ``end_k`` yields ``E_k = sum_{b in k} gamma^(end_k - b) (1 - gamma) S_b``, and ``G = sum_k gamma^(N - end_k) E_k``
  exactly. ``debias`` divides by ``1 - gamma^N`` (as Adam does) so languages with few batches are not shrunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class LanguageSums:
    """Per-language partial sums: ``sums [L, k]`` float64 and ``counts [L]`` int64, rows in ``langs`` order."""

    langs: list[str]
    sums: Tensor
    counts: Tensor

    @staticmethod
    def of(sketches: Tensor, langs: list[str]) -> LanguageSums:
        """Partial sums of ``sketches [N, k]`` whose row ``i`` has language ``langs[i]``."""
        names = sorted(set(langs))
        code = {name: j for j, name in enumerate(names)}
        index = torch.tensor([code[lang] for lang in langs], dtype=torch.long)
        sums = torch.zeros(len(names), sketches.shape[1], dtype=torch.float64)
        sums.index_add_(0, index, sketches.to(torch.float64))
        return LanguageSums(names, sums, torch.bincount(index, minlength=len(names)))

    def merge(self, other: LanguageSums) -> LanguageSums:
        """Exact combination of two partials (languages may differ)."""
        names = sorted(set(self.langs) | set(other.langs))
        k = self.sums.shape[1] if self.langs else other.sums.shape[1]
        sums = torch.zeros(len(names), k, dtype=torch.float64)
        counts = torch.zeros(len(names), dtype=torch.int64)
        for part in (self, other):
            rows = torch.tensor([names.index(n) for n in part.langs], dtype=torch.long)
            if len(rows):
                sums.index_add_(0, rows, part.sums)
                counts.index_add_(0, rows, part.counts)
        return LanguageSums(names, sums, counts)

    def means(self) -> Tensor:
        """``G [L, k]``: ``G_l = sum_l / n_l``."""
        return self.sums / self.counts.clamp(min=1).to(torch.float64)[:, None]


def minibatch_means(sketches: Tensor, batch_size: int) -> Tensor:
    """``S(g_batch)`` of consecutive mini-batches of one language: ``[n, k] -> [ceil(n / batch_size), k]``."""
    n = sketches.shape[0]
    starts = torch.arange(0, n, batch_size)
    index = torch.arange(n) // batch_size
    sums = torch.zeros(len(starts), sketches.shape[1], dtype=torch.float64).index_add_(0, index, sketches.double())
    return sums / torch.bincount(index, minlength=len(starts)).to(torch.float64)[:, None]


@dataclass
class EMASegment:
    """``E`` of a contiguous run of ``n_batches`` mini-batches (``E [k]`` float64)."""

    value: Tensor
    n_batches: int


def ema_segment(batch_means: Tensor, gamma: float) -> EMASegment:
    """``E = sum_b gamma^(end - b) (1 - gamma) S_b`` over ``batch_means [n_b, k]`` (in global order)."""
    n = batch_means.shape[0]
    powers = torch.tensor([gamma ** (n - 1 - b) for b in range(n)], dtype=torch.float64)
    return EMASegment((1.0 - gamma) * (powers[:, None] * batch_means.double()).sum(dim=0), n)


def ema_combine(segments: list[EMASegment], gamma: float, debias: bool = True) -> Tensor:
    """``G = sum_k gamma^(N - end_k) E_k`` for segments listed in global order; ``N`` = total mini-batches."""
    total = sum(s.n_batches for s in segments)
    g = torch.zeros_like(segments[0].value)
    end = 0
    for seg in segments:
        end += seg.n_batches
        g += gamma ** (total - end) * seg.value
    if debias and total > 0:
        g = g / (1.0 - gamma**total)
    return g


def ema_sequential(batch_means: Tensor, gamma: float, debias: bool = True) -> Tensor:
    """The recurrence itself, ``G <- gamma G + (1 - gamma) S_b`` from ``G = 0``: the twin of the segment form."""
    g = torch.zeros(batch_means.shape[1], dtype=torch.float64)
    for s in batch_means.double():
        g = gamma * g + (1.0 - gamma) * s
    n = batch_means.shape[0]
    return g / (1.0 - gamma**n) if debias and n else g
