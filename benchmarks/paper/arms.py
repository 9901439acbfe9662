"""Arms and ablations: each is a way to choose the kept set; every arm is then followed by the same DPO step.

An arm is either a filter configuration (dotted overrides of the filter config; ``sketch`` overrides need their own
sketch pass, ``select`` overrides are re-selections from stored sketches, ``reselect``: no model) or a
harness-level baseline:

* ``all``: no selection (naive joint DPO on every pair);
* ``margin``: the loss/margin filter. The policy's own length-normalised log-prob margin
  ``log pi(y^w|x)/|y^w| - log pi(y^l|x)/|y^l|`` (:func:`congrad_ray.core.logprob_margin`), keeping the best rho of
  every language (the same quota as ConGrad, :func:`congrad_ray.core.select`). Why not the DPO loss against the
  reference: at the start of a round the policy *is* the reference (``z_i = 0``, every loss is ln 2), so that loss
  carries no information; the policy margin is the "small-loss" rule of noisy-label learning (keep the pairs the
  model already agrees with), and length normalisation keeps it from simply preferring short chosen answers.

The sketch-side ablations are defined against the setting's base filter config: ``k512``/``k8192`` change the
sketch width, ``scope_*`` the parameter scope (``scope_lora`` adds a fresh rank-8 adapter for sketching only).
``budget``, ``hybrid`` and ``budget_hybrid`` are the selection rules beyond the paper (re-selections from the same
sketches: agreement budgets, the hybrid score, both).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Arm:
    name: str
    label: str
    kind: Literal["all", "filter", "margin"]
    sketch: tuple[str, ...] = ()  # overrides that change the sketch pass (a separate run directory)
    select: tuple[str, ...] = ()  # selection-side overrides (reselect from the stored sketches)
    description: str = ""

    @property
    def sketch_key(self) -> str:
        """Arms with the same key share one sketch pass (the base pass, or their own)."""
        return "base" if not self.sketch else self.name


ARMS: dict[str, Arm] = {
    a.name: a
    for a in (
        Arm("all", "All data (naive joint)", "all", description="every pair, no selection"),
        Arm(
            "random",
            "Random subset",
            "filter",
            select=("selection.rule=random",),
            description="the same per-language quota as ConGrad, drawn at random (seeded by the seed)",
        ),
        Arm(
            "per_language",
            "Per-language direction",
            "filter",
            select=("surgery.method=per_language",),
            description="each pair scored against its own language's G_l (no cross-lingual consensus)",
        ),
        Arm(
            "mean",
            "Mean direction (no surgery)",
            "filter",
            select=("surgery.method=mean",),
            description="g* = mean of the G_l, no PCGrad",
        ),
        Arm("congrad", "ConGrad (PCGrad)", "filter", description="g* = PCGrad across languages (the method)"),
        Arm(
            "margin",
            "Loss/margin filter",
            "margin",
            description="policy's own length-normalised log-prob margin, top rho per language",
        ),
        # beyond the paper (issue 15): selection that can drop a conflicting language's bad half
        Arm(
            "budget",
            "ConGrad + agreement budgets",
            "filter",
            select=("selection.budgets=agreement",),
            description="the same total as top-rho, shared by each language's agreement with the others",
        ),
        Arm(
            "hybrid",
            "ConGrad + margin (hybrid score)",
            "filter",
            select=("score.kind=hybrid",),
            description="within-language percentiles of the cosine and of the policy margin, averaged",
        ),
        Arm(
            "budget_hybrid",
            "Hybrid score + agreement budgets",
            "filter",
            select=("score.kind=hybrid", "selection.budgets=agreement"),
            description="both",
        ),
    )
}

ABLATIONS: dict[str, Arm] = {
    a.name: a
    for a in (
        Arm("k512", "sketch k = 512", "filter", sketch=("sketch.k=512",)),
        Arm("k8192", "sketch k = 8192", "filter", sketch=("sketch.k=8192",)),
        Arm("k32768", "sketch k = 32768", "filter", sketch=("sketch.k=32768",)),
        Arm("scope_linear", "scope: all linear layers", "filter", sketch=("sketch.scope=linear",)),
        Arm("scope_last_k", "scope: last block only", "filter", sketch=("sketch.scope=last_k", "sketch.last_k=1")),
        Arm(
            "scope_lora",
            "scope: LoRA adapter (fresh, rank 8)",
            "filter",
            sketch=("sketch.scope=lora", "model.lora={rank: 8, alpha: 16, target_modules: all-linear}"),
        ),
        Arm("agg_ema", "aggregation: EMA (gamma 0.9)", "filter", select=("aggregation.method=ema",)),
        Arm("score_dot", "score: dot product", "filter", select=("score.kind=dot",)),
        Arm(
            "sel_threshold",
            "selection: score > 0",
            "filter",
            select=("selection.rule=threshold", "selection.tau=0.0", "selection.min_per_language=0"),
        ),
        Arm("sel_rho75", "selection: top 75 % per language", "filter", select=("selection.rho=0.75",)),
        Arm(
            "sel_global_top_k",
            "selection: global top-k (same total)",
            "filter",
            select=("selection.rule=global_top_k", "selection.min_per_language=0"),
        ),
    )
}


def get(name: str) -> Arm:
    if name in ARMS:
        return ARMS[name]
    if name in ABLATIONS:
        return ABLATIONS[name]
    raise KeyError(f"unknown arm or ablation {name!r}: use one of {sorted(ARMS) + sorted(ABLATIONS)}")


def needs_total(arm: Arm) -> bool:
    """``global_top_k`` keeps as many pairs in total as the per-language top-rho does (set at run time)."""
    return any(o == "selection.rule=global_top_k" for o in arm.select)


def label(name: str) -> str:
    """The display name of an arm or ablation."""
    return (ARMS.get(name) or ABLATIONS.get(name)).label if (name in ARMS or name in ABLATIONS) else name
