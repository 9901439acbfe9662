"""Held-out evaluation, per language, seen and unseen: log-probs with core's ``sequence_logps``, the implicit DPO
reward with core's ``lp_dpo_terms`` and the statistics of :mod:`congrad_ray.core.evaluate` (reward accuracy, mean
margin, LP-DPO loss). Used during training (a Trainer callback on rank 0) and after it (the exported model).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from ..core import DPOParams, group_stats, lp_dpo_terms, macro_average, per_language_stats, sequence_logps
from ..tokenization import TokenizedPair, collate, tokenize_pair
from .data import ID, LANG


@dataclass
class HeldoutSet:
    """``N`` tokenised held-out pairs with their ids and languages (sorted by language, then id)."""

    pairs: list[TokenizedPair]
    ids: list[str]
    langs: list[str]

    @staticmethod
    def from_table(table: pa.Table, tokenizer: Any) -> HeldoutSet:
        rows = table.select(["prompt", "chosen", "rejected", ID, LANG]).to_pylist()
        pairs = [tokenize_pair(tokenizer, r["prompt"], r["chosen"], r["rejected"]) for r in rows]
        return HeldoutSet(pairs, [r[ID] for r in rows], [r[LANG] for r in rows])

    def __len__(self) -> int:
        return len(self.pairs)


@torch.no_grad()
def heldout_logps(
    model: Any, heldout: HeldoutSet, pad_id: int, batch_size: int, max_length: int | None, truncation_mode: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log pi(y|x), |y|)`` over the set in core's layout: ``[2N]`` each, the N chosen rows then the N rejected."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    chosen, rejected, len_w, len_l = [], [], [], []
    try:
        for start in range(0, len(heldout), batch_size):
            batch = collate(heldout.pairs[start : start + batch_size], pad_id, max_length, truncation_mode)
            w, lo = sequence_logps(model, batch.to(device)).float().cpu().chunk(2)
            lw, ll = batch.completion_lengths.chunk(2)
            chosen.append(w), rejected.append(lo), len_w.append(lw), len_l.append(ll)
    finally:
        model.train(was_training)
    return torch.cat(chosen + rejected), torch.cat(len_w + len_l)


def language_groups(langs: Sequence[str], seen: Sequence[str], unseen: Sequence[str]) -> dict[str, list[str]]:
    """``seen``: held-out languages trained on; ``unseen``: the rest (listed as unseen, or absent from training)."""
    present = sorted(set(langs))
    seen_set = set(seen) - set(unseen)
    return {
        "all": present,
        "seen": [lg for lg in present if lg in seen_set],
        "unseen": [lg for lg in present if lg not in seen_set],
    }


def reward_metrics(
    policy: torch.Tensor,
    reference: torch.Tensor,
    lengths: torch.Tensor,
    langs: Sequence[str],
    params: DPOParams,
    groups: dict[str, list[str]],
) -> dict[str, Any]:
    """Per-language and per-group statistics (``n``, ``accuracy``, ``margin``, ``loss``, rewards), JSON-ready."""
    terms = lp_dpo_terms(policy, reference, lengths, params)
    per_lang = per_language_stats(terms, langs)
    grouped = group_stats(terms, langs, {k: v for k, v in groups.items()})
    out_groups = {}
    for name, stats in grouped.items():
        d = stats.as_dict()
        d["macro_accuracy"] = macro_average(per_lang, groups[name], "accuracy")
        d["languages"] = groups[name]
        out_groups[name] = d
    return {"per_language": {k: v.as_dict() for k, v in per_lang.items()}, "groups": out_groups}


def flat(metrics: dict[str, Any], prefix: str = "heldout") -> dict[str, float]:
    """``heldout/<lang or group>/<stat>`` floats, for the Trainer log (and so Ray Train's reported metrics)."""
    out = {}
    for section in ("per_language", "groups"):
        for name, stats in metrics[section].items():
            for key in ("accuracy", "margin", "loss"):
                out[f"{prefix}/{name}/{key}"] = float(stats[key])
    return out


def unflat(entry: dict[str, Any], prefix: str = "heldout") -> dict[str, dict[str, float]]:
    """The inverse of :func:`flat` on a log entry: ``{name: {stat: value}}``."""
    out: dict[str, dict[str, float]] = {}
    for key, value in entry.items():
        if key.startswith(prefix + "/"):
            _, name, stat = key.split("/", 2)
            out.setdefault(name, {})[stat] = value
    return out


def write_plot(metrics: dict[str, Any], path: str | Path) -> None:
    """``eval.png``: per-language held-out accuracy before and after DPO (languages sorted, unseen ones marked), the
    reward accuracy during training, and the training loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    final = metrics.get("eval", {}).get("final") or {}
    seen = set(metrics.get("languages", {}).get("seen", []))
    pref = final.get("preference") or {}
    langs = sorted(final.get("per_language", {}))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2), layout="constrained")
    ax, x = axes[0], np.arange(len(langs))
    for offset, when, color in ((-0.2, "before", "tab:gray"), (0.2, "after", "tab:blue")):
        values = [pref.get(when, {}).get("per_language", {}).get(lg, {}).get("accuracy", np.nan) for lg in langs]
        ax.bar(x + offset, values, width=0.4, color=color, label=f"{when} DPO")
    ax.set_xticks(x, [lg if lg in seen else f"{lg}*" for lg in langs])
    ax.set_ylim(0, 1)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("language (* unseen: no training pairs)")
    ax.set_ylabel("prefers the chosen answer")
    ax.set_title("held-out accuracy before / after DPO", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[1]
    during = metrics.get("eval", {}).get("during", [])
    plotted = False
    for group, color in (("seen", "tab:blue"), ("unseen", "tab:orange")):
        pts = [(e["step"], e["groups"][group]["accuracy"]) for e in during if group in e["groups"]]
        if group in final.get("groups", {}):
            pts.append((metrics.get("training", {}).get("global_step", 0), final["groups"][group]["accuracy"]))
        if pts:
            ax.plot(*zip(*pts), marker="o", color=color, label=group)
            plotted = True
    ax.set_ylim(0, 1)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("reward accuracy")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_title("held-out DPO reward accuracy during training", fontsize=10)
    if plotted:
        ax.legend(fontsize=8)
    ax = axes[2]
    history = [h for h in metrics.get("training", {}).get("loss_history", []) if math.isfinite(h["loss"])]
    if history:
        ax.plot([h["step"] for h in history], [h["loss"] for h in history], color="tab:green")
    ax.axhline(math.log(2), color="grey", lw=0.8, ls="--")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("LP-DPO loss")
    ax.set_title("training loss (ln 2 dashed)", fontsize=10)
    fig.savefig(path, dpi=100)
    plt.close(fig)
