"""The slow, obviously correct twin of :mod:`per_sample`: one backward per pair, then an explicit count sketch.

For each pair ``i``: take its two rows with their padding stripped, compute ``loss_i``, ``g_i = grad loss_i``
for every scoped weight and bias, flatten nothing but view each as its ``(R, C)`` matrix, and apply the
definition of ``S`` (:meth:`CountSketch.sketch_matrix`) with the same names and seed. Tests and benchmarks only.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .count_sketch import CountSketch
from .dpo import DPOParams, PreferenceBatch, lp_dpo_terms, sequence_logps


def scoped_parameters(linears: dict[str, nn.Linear]) -> dict[str, nn.Parameter]:
    """``{"<module>.weight": W, "<module>.bias": b}`` for the scoped layers: the names the sketch hashes."""
    params = {}
    for name, module in linears.items():
        params[f"{name}.weight"] = module.weight
        if module.bias is not None:
            params[f"{name}.bias"] = module.bias
    return params


def _single_pair(batch: PreferenceBatch, i: int) -> PreferenceBatch:
    """Pair ``i`` alone: rows ``i`` and ``B + i``, padding columns removed."""
    pair = batch.rows([i])
    real = pair.attention_mask.bool().any(dim=0)
    cols = real.nonzero().squeeze(1)
    return PreferenceBatch(
        pair.input_ids[:, cols], pair.attention_mask[:, cols], pair.completion_mask[:, cols], pair.ref_logps
    )


def per_sample_gradients_loop(
    model: nn.Module, batch: PreferenceBatch, ref_logps: Tensor, linears: dict[str, nn.Linear], params: DPOParams
) -> dict[str, Tensor]:
    """Exact per-pair gradients ``g_i`` of every scoped parameter: ``{name: [B, *shape]}``."""
    named = scoped_parameters(linears)
    grads: dict[str, list[Tensor]] = {name: [] for name in named}
    saved = {name: p.requires_grad for name, p in named.items()}
    try:
        for p in named.values():
            p.requires_grad_(True)
        for i in range(batch.num_pairs):
            pair = _single_pair(batch, i)
            ref = ref_logps[[i, batch.num_pairs + i]]
            with torch.enable_grad():
                terms = lp_dpo_terms(sequence_logps(model, pair), ref, pair.completion_lengths, params)
                g = torch.autograd.grad(terms.loss.sum(), list(named.values()))
            for name, gi in zip(named, g):
                grads[name].append(gi.detach().float())
    finally:
        for name, p in named.items():
            p.requires_grad_(saved[name])
    return {name: torch.stack(gs) for name, gs in grads.items()}


def sketch_pair_gradients_loop(
    model: nn.Module,
    batch: PreferenceBatch,
    ref_logps: Tensor,
    linears: dict[str, nn.Linear],
    sketch: CountSketch,
    params: DPOParams,
) -> Tensor:
    """``S(g_i)`` per pair, ``[B, k]``, the slow way: the definition of ``S`` applied to materialised ``g_i``."""
    grads = per_sample_gradients_loop(model, batch, ref_logps, linears, params)
    total = torch.zeros(batch.num_pairs, sketch.k)
    for name, g in grads.items():
        total += sketch.sketch_param(name, g)
    return total
