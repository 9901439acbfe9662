"""The slow, obviously correct twins of :mod:`per_sample`: one backward per sample, then an explicit count sketch.

For each pair ``i`` (or row ``n``): take its rows with their padding stripped, compute ``loss_i`` (``nll_n``),
``g_i = grad loss_i`` for every scoped weight and bias, flatten nothing but view each as its ``(R, C)`` matrix, and
apply the definition of ``S`` (:meth:`CountSketch.sketch_matrix`) with the same names and seed, and with the same
shared input hashes: forward hooks see which layers each forward calls on one tensor and declare them on the sketch
(:meth:`CountSketch.share_input`), the rule the fast path follows. Tests and benchmarks only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from .count_sketch import CountSketch
from .dpo import DPOParams, PreferenceBatch, lp_dpo_terms, sequence_logps
from .measures import token_nll
from .per_sample import input_key


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


@contextmanager
def _inputs_declared(linears: dict[str, nn.Linear], sketch: CountSketch | None) -> Iterator[Callable[[], None]]:
    """Forward hooks recording which scoped layers are called on one tensor; the yielded ``declare()`` hands one
    forward's groups to ``sketch.share_input`` and forgets them (the tensors are held until then, so no address
    is reused inside a forward). Nothing is recorded without a sketch."""
    readers: dict[tuple, tuple[Tensor, list[str]]] = {}

    def recorder(name: str):
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            readers.setdefault(input_key(inputs[0]), (inputs[0], []))[1].append(f"{name}.weight")

        return hook

    def declare() -> None:
        for _, names in readers.values():
            sketch.share_input(sorted(set(names)))
        readers.clear()

    if sketch is None:
        yield lambda: None
        return
    handles = [m.register_forward_hook(recorder(name)) for name, m in linears.items()]
    try:
        yield declare
    finally:
        for h in handles:
            h.remove()


def _gradients_loop(
    linears: dict[str, nn.Linear], losses: Iterator[Callable[[], Tensor]], sketch: CountSketch | None = None
) -> dict[str, Tensor]:
    """``{name: [n, *shape]}``: the exact gradient of each scalar loss ``losses`` yields, one backward each (with a
    ``sketch``, each forward's shared inputs are declared on it)."""
    named = scoped_parameters(linears)
    grads: dict[str, list[Tensor]] = {name: [] for name in named}
    saved = {name: p.requires_grad for name, p in named.items()}
    try:
        for p in named.values():
            p.requires_grad_(True)
        with _inputs_declared(linears, sketch) as declare:
            for loss in losses:
                with torch.enable_grad():
                    g = torch.autograd.grad(loss(), list(named.values()))
                declare()
                for name, gi in zip(named, g):
                    grads[name].append(gi.detach().float())
    finally:
        for name, p in named.items():
            p.requires_grad_(saved[name])
    return {name: torch.stack(gs) for name, gs in grads.items()}


def per_sample_gradients_loop(
    model: nn.Module,
    batch: PreferenceBatch,
    ref_logps: Tensor,
    linears: dict[str, nn.Linear],
    params: DPOParams,
    sketch: CountSketch | None = None,
) -> dict[str, Tensor]:
    """Exact per-pair gradients ``g_i`` of every scoped parameter: ``{name: [B, *shape]}`` (with a ``sketch``, the
    layers sharing an input are declared on it)."""

    def pair_loss(i: int) -> Callable[[], Tensor]:
        pair = _single_pair(batch, i)
        ref = ref_logps[[i, batch.num_pairs + i]]
        return lambda: lp_dpo_terms(sequence_logps(model, pair), ref, pair.completion_lengths, params).loss.sum()

    return _gradients_loop(linears, (pair_loss(i) for i in range(batch.num_pairs)), sketch)


def sequence_gradients_loop(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    linears: dict[str, nn.Linear],
    sketch: CountSketch | None = None,
) -> dict[str, Tensor]:
    """Exact per-row gradients ``g_n`` of the summed next-token NLL of every scoped parameter: ``{name: [N, ...]}``
    (with a ``sketch``, the layers sharing an input are declared on it)."""

    def row_loss(n: int) -> Callable[[], Tensor]:
        real = attention_mask[n].bool()
        ids, mask = input_ids[n, real][None], attention_mask[n, real][None]
        return lambda: token_nll(model, ids, mask)[0].sum()

    return _gradients_loop(linears, (row_loss(n) for n in range(input_ids.shape[0])), sketch)


def sketch_gradients(grads: dict[str, Tensor], sketch: CountSketch) -> Tensor:
    """``sum over parameters of S(g)``, ``[n, k]``: the definition of ``S`` on materialised per-sample gradients."""
    return sum(sketch.sketch_param(name, g) for name, g in grads.items())


def sketch_pair_gradients_loop(
    model: nn.Module,
    batch: PreferenceBatch,
    ref_logps: Tensor,
    linears: dict[str, nn.Linear],
    sketch: CountSketch,
    params: DPOParams,
) -> Tensor:
    """``S(g_i)`` per pair, ``[B, k]``, the slow way: the definition of ``S`` applied to materialised ``g_i``."""
    return sketch_gradients(per_sample_gradients_loop(model, batch, ref_logps, linears, params, sketch), sketch)


def sketch_sequence_gradients_loop(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, linears: dict[str, nn.Linear], sketch: CountSketch
) -> Tensor:
    """``S(g_n)`` per row, ``[N, k]``: the twin of :func:`~congrad_ray.core.per_sample.sketch_sequence_gradients`."""
    return sketch_gradients(sequence_gradients_loop(model, input_ids, attention_mask, linears, sketch), sketch)
