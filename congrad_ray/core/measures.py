"""Measures of the paper benchmark (``benchmarks/paper``) on tensors: per-token language-model loss, the policy's
own preference margin, and the conflict rate of a set of pairs. No Ray, no I/O.

Notation as in :mod:`.dpo`. For ``N`` token rows ``x_{n,1..T}`` with a loss mask ``m_{n,t}`` (1 on the tokens that
count; position ``t`` is predicted from the tokens before it):

    nll_n   = - sum_{t >= 2} m_{n,t} log pi(x_{n,t} | x_{n,<t})        summed negative log-likelihood, [N]
    count_n = sum_{t >= 2} m_{n,t}                                       tokens that count, [N]
    lm_loss(I) = sum_{n in I} nll_n / sum_{n in I} count_n               per-token loss of a set I (micro-average)

The alignment tax of a training step is ``lm_loss_after(I) - lm_loss_before(I)`` on clean held-out text of one
language (positive: the model got worse at modelling that language).

The policy margin of a pair (chosen rows first, as everywhere in core), with ``|y|`` its completion tokens:

    margin_i = log pi(y^w|x) / |y^w| - log pi(y^l|x) / |y^l|     (length_normalized, the default)
    margin_i = log pi(y^w|x) - log pi(y^l|x)                       (otherwise)

It needs no reference model: the loss/margin baseline of the benchmark ranks pairs by how much the policy itself
already agrees with the label (the "small-loss" rule of noisy-label learning).

Statistics for comparing arms: :func:`auroc` (how well a score separates pairs known to conflict from clean ones)
and :func:`paired_bootstrap` (an interval for the difference of two arms' held-out accuracy, resampling seeds and
held-out pairs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .dpo import position_ids_from_mask, token_logps


def token_nll(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, loss_mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``(nll [N], count [N])`` of the tokens ``loss_mask`` marks (default: every real token), each predicted from
    the tokens before it; the first position of a row is never predicted, so it never counts.

    ``input_ids``/``attention_mask``/``loss_mask`` are ``[N, T]``; left or right padding give the same result.
    Differentiable (used both as a training loss and, under ``torch.no_grad()``, as a measure); float32.
    """
    mask = attention_mask if loss_mask is None else loss_mask * attention_mask
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    ).logits
    per_token = token_logps(logits[:, :-1], input_ids[:, 1:])
    # a token counts when it is marked and the token before it is real (a row's first real token is never predicted)
    target = (mask[:, 1:] * attention_mask[:, :-1]).to(per_token.dtype)
    return -(per_token * target).sum(dim=1), target.sum(dim=1)


def lm_loss(nll: Tensor, count: Tensor) -> float:
    """Per-token loss of a set of rows: ``sum nll / sum count`` in float64 (nan when no token counts)."""
    total = float(count.to(torch.float64).sum())
    return float(nll.to(torch.float64).sum()) / total if total > 0 else float("nan")


def lm_loss_by_group(nll: Tensor, count: Tensor, groups: Sequence[str]) -> dict[str, float]:
    """``{group: lm_loss}`` over the rows of each group (``groups[n]`` is row ``n``'s, e.g. its language), sorted."""
    if len(groups) != nll.shape[0]:
        raise ValueError(f"{len(groups)} groups for {nll.shape[0]} rows")
    labels = np.asarray(groups).astype(str)
    out = {}
    for g in sorted(set(labels.tolist())):
        index = torch.as_tensor(np.flatnonzero(labels == g), dtype=torch.long)
        out[g] = lm_loss(nll[index], count[index])
    return out


def logprob_margin(logps: Tensor, completion_lengths: Tensor, length_normalized: bool = True) -> Tensor:
    """The policy's own margin per pair, ``[B]`` float64, from ``[2B]`` sequence log-probs and completion lengths
    (chosen rows first); see the module docstring. Lengths below 1 are treated as 1."""
    lp = logps.to(torch.float64)
    if length_normalized:
        lp = lp / completion_lengths.to(torch.float64).clamp(min=1)
    chosen, rejected = lp.chunk(2)
    return chosen - rejected


def conflict_rate(flags: Sequence[bool], groups: Sequence[str] | None = None) -> dict[str, float | int]:
    """Fraction of flagged pairs (ground truth: the pair goes against the shared task) in a set of pairs.

    Returns ``{"n", "conflicts", "rate"}`` over all pairs and, with ``groups``, ``"rate/<group>"`` and
    ``"n/<group>"`` per group (e.g. language). The rate of an empty set is nan.
    """
    f = np.asarray(flags, dtype=bool)
    n = int(f.size)
    out: dict[str, float | int] = {"n": n, "conflicts": int(f.sum()), "rate": float(f.mean()) if n else float("nan")}
    if groups is not None:
        labels = np.asarray(groups).astype(str)
        if labels.size != n:
            raise ValueError(f"{labels.size} groups for {n} pairs")
        for g in sorted(set(labels.tolist())):
            mine = f[labels == g]
            out[f"n/{g}"] = int(mine.size)
            out[f"rate/{g}"] = float(mine.mean())
    return out


SCORED_OUTCOMES = ("kept", "dropped")


def conflict_removal(counts: Iterable[Sequence]) -> dict[str, dict[str, float | int | None]]:
    """How a filter's decisions split the pairs that ground truth marks as conflicting, per language and in total.

    ``counts`` holds ``(outcome, lang, conflict, n)`` tuples: ``n`` pairs of language ``lang`` with ground truth
    ``conflict`` (True: a known conflicting pair, e.g. a flipped label) ended as ``outcome``. Only ``kept`` and
    ``dropped`` pairs were candidates of the selection; other outcomes (``invalid``, unseen languages) and an unknown
    ground truth (None) are left out. For each language and for ``"total"``, with ``C`` the known conflicts among
    the ``pairs = kept + dropped`` candidates:

        conflicts = C, clean = pairs - C, conflicts_dropped, clean_dropped, kept, kept_conflicts
        input_rate        = C / pairs                       conflict rate of the candidates
        kept_rate         = kept_conflicts / kept           conflict rate of the kept set
        conflicts_removed = conflicts_dropped / C           share of the known conflicts the filter dropped
        clean_removed     = clean_dropped / clean           share of the clean pairs it dropped with them

    A rate over an empty set is None (the result is written as JSON). Languages are sorted; ``"total"`` is last.
    """
    cells: dict[str, dict[tuple[str, bool], int]] = {}
    for outcome, lang, conflict, n in counts:
        if outcome in SCORED_OUTCOMES and conflict is not None and n > 0:
            cell = cells.setdefault(str(lang), {})
            cell[(outcome, bool(conflict))] = cell.get((outcome, bool(conflict)), 0) + int(n)
    total: dict[tuple[str, bool], int] = {}
    for cell in cells.values():
        for key, n in cell.items():
            total[key] = total.get(key, 0) + n
    out = {lang: _removal(cells[lang]) for lang in sorted(cells)}
    out["total"] = _removal(total)
    return out


def _removal(cell: Mapping[tuple[str, bool], int]) -> dict[str, float | int | None]:
    def n(outcome: str, conflict: bool) -> int:
        return cell.get((outcome, conflict), 0)

    def ratio(a: int, b: int) -> float | None:
        return a / b if b else None

    kept, conflicts = n("kept", True) + n("kept", False), n("kept", True) + n("dropped", True)
    pairs = kept + n("dropped", True) + n("dropped", False)
    clean = pairs - conflicts
    return {
        "pairs": pairs,
        "conflicts": conflicts,
        "clean": clean,
        "kept": kept,
        "kept_conflicts": n("kept", True),
        "conflicts_dropped": n("dropped", True),
        "clean_dropped": n("dropped", False),
        "input_rate": ratio(conflicts, pairs),
        "kept_rate": ratio(n("kept", True), kept),
        "conflicts_removed": ratio(n("dropped", True), conflicts),
        "clean_removed": ratio(n("dropped", False), clean),
    }


def mean_and_std(values: Sequence[float] | Mapping[str, float]) -> tuple[float, float, int]:
    """``(mean, sample std (ddof=1), n)`` over the finite values (std 0 for one value, nan for none)."""
    v = np.asarray(list(values.values()) if isinstance(values, Mapping) else list(values), dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """Separation of two classes by a score: ``P(s_+ > s_-) + P(s_+ = s_-) / 2`` over every (positive, negative)
    pair (the Mann-Whitney form of the area under the ROC curve). 1 = every positive above every negative, 0.5 = no
    separation, nan when a class is empty. Computed from mid-ranks (ties share their mean rank), ``O(N log N)``."""
    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, count = np.unique(s, return_inverse=True, return_counts=True)
    mid_rank = np.concatenate([[0], np.cumsum(count)[:-1]]) + (count + 1) / 2.0
    rank_sum = float(mid_rank[inverse][pos].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile bootstrap interval at ``level`` from ``n_boot`` resamples."""

    estimate: float
    low: float
    high: float
    level: float
    n_boot: int

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def as_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "level": self.level, "n": self.n_boot}


def macro_mean(values: np.ndarray, groups: np.ndarray) -> float:
    """Mean over groups of the mean over each group's values (every language weighs the same), for ``[N]`` arrays."""
    labels = np.asarray(groups).astype(str)
    return float(np.mean([values[labels == g].mean() for g in sorted(set(labels.tolist()))]))


def bootstrap_indices(groups: np.ndarray, n_seeds: int, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The resamples of :func:`paired_bootstrap`: ``seeds [n_boot, S]`` (seeds drawn with replacement) and
    ``pairs [n_boot, S, N]`` (for each drawn seed, every group's pairs drawn with replacement within the group, so
    every language keeps its size). numpy ``Generator(PCG64(seed))``: the same call gives the same draws."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(groups).astype(str)
    seeds = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    pairs = np.empty((n_boot, n_seeds, labels.size), dtype=np.int64)
    for g in sorted(set(labels.tolist())):
        members = np.flatnonzero(labels == g)
        pairs[:, :, members] = members[rng.integers(0, members.size, size=(n_boot, n_seeds, members.size))]
    return seeds, pairs


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, groups: Sequence[str], n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> Interval:
    """Paired bootstrap interval of the difference ``D = mean_s macro_l mean_{i in l} (a_{s,i} - b_{s,i})``.

    ``a``, ``b``: ``[S, N]`` per-pair outcomes (e.g. 1 if the chosen answer wins) of two arms over the same ``N``
    held-out pairs in each of ``S`` seeds (row ``s``: seed ``s``; column ``i``: pair ``i``, language ``groups[i]``).
    Each resample draws seeds with replacement and, within each drawn seed and language, pairs with replacement
    (:func:`bootstrap_indices`); both arms see the same draws (paired), so what they share cancels. The interval is
    the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled ``D``; the estimate is ``D`` itself.
    """
    a, b = np.atleast_2d(np.asarray(a, dtype=np.float64)), np.atleast_2d(np.asarray(b, dtype=np.float64))
    if a.shape != b.shape:
        raise ValueError(f"arms have different shapes {a.shape} vs {b.shape}")
    labels = np.asarray(groups).astype(str)
    if labels.size != a.shape[1]:
        raise ValueError(f"{labels.size} groups for {a.shape[1]} pairs")
    diff = a - b
    estimate = float(np.mean([macro_mean(row, labels) for row in diff]))
    seeds, pairs = bootstrap_indices(labels, diff.shape[0], n_boot, seed)
    resampled = diff[seeds[:, :, None], pairs]  # [n_boot, S, N]
    names = sorted(set(labels.tolist()))
    per_group = np.stack([resampled[:, :, labels == g].mean(axis=2) for g in names], axis=2)  # [n_boot, S, G]
    stats = per_group.mean(axis=2).mean(axis=1)
    low, high = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return Interval(estimate, float(low), float(high), level, n_boot)


def language_separation(
    scores: Sequence[float], groups: Sequence[str], conflicting: Sequence[bool]
) -> dict[str, dict[str, float | int]]:
    """Per group (language), how a score sits on pairs known to conflict against the clean ones:
    ``{group: {"n", "conflicting", "clean_mean", "conflicting_mean", "auroc"}}`` where ``auroc`` is
    :func:`auroc` with the clean pairs as positives (1: every clean pair scores above every conflicting one; 0.5: no
    separation; nan: a class is empty). Non-finite scores are left out."""
    s = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(groups).astype(str)
    bad = np.asarray(conflicting, dtype=bool)
    finite = np.isfinite(s)
    out: dict[str, dict[str, float | int]] = {}
    for g in sorted(set(labels[finite].tolist())):
        m = finite & (labels == g)
        clean, conf = s[m & ~bad], s[m & bad]
        out[g] = {
            "n": int(m.sum()),
            "conflicting": int(conf.size),
            "clean_mean": float(clean.mean()) if clean.size else float("nan"),
            "conflicting_mean": float(conf.mean()) if conf.size else float("nan"),
            "auroc": auroc(s[m], ~bad[m]),
        }
    return out


def _char_ngrams(text: str, n: int) -> dict[str, int]:
    chars = "".join(text.split())  # chrF ignores whitespace
    out: dict[str, int] = {}
    for i in range(len(chars) - n + 1):
        gram = chars[i : i + n]
        out[gram] = out.get(gram, 0) + 1
    return out


def chrf(hypothesis: str, reference: str, max_n: int = 6, beta: float = 2.0) -> float:
    """chrF (Popović 2015): the F-beta score of character n-gram precision and recall (whitespace removed), averaged
    over ``n = 1..max_n`` (orders that neither string has are left out; 0 when none is left). In ``[0, 1]``; a
    reference judgement of how close a generated continuation is to the true one, in any script."""
    scores = []
    for n in range(1, max_n + 1):
        hyp, ref = _char_ngrams(hypothesis, n), _char_ngrams(reference, n)
        if not hyp and not ref:
            continue
        common = sum(min(c, ref.get(g, 0)) for g, c in hyp.items())
        p = common / sum(hyp.values()) if hyp else 0.0
        r = common / sum(ref.values()) if ref else 0.0
        scores.append((1 + beta**2) * p * r / (beta**2 * p + r) if p + r > 0 else 0.0)
    return sum(scores) / len(scores) if scores else 0.0
