"""Per-sample sketched LP-DPO gradients ``S(g_i)`` from ONE batched forward + backward (docs/design.md §3).

For a scoped linear layer ``W`` (``d_out x d_in``) the per-row weight gradient is ``sum_t delta_t x_t^T``: ``x`` is
captured by a forward hook, ``delta = dL/d(output)`` by a tensor hook during the backward of
``L = sum_i loss_i``, and the two are combined by :meth:`CountSketch.sketch_outer_shared` without ever forming the
``d_out x d_in`` matrix (the layers called on one input tensor together: they share its hash, §2). Rows are
independent in a causal LM batch, so row ``n``'s contribution is exactly ``grad`` of ``loss_{pair(n)}`` through row
``n``; a pair's sketch is the sum of its chosen and rejected rows.

The backward is ``torch.autograd.grad(L, embeddings)``: it needs activation gradients only, so the weight-gradient
GEMMs of a training step are skipped and no ``.grad`` is touched.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .count_sketch import CountSketch
from .dpo import DPOParams, PreferenceBatch, lp_dpo_terms, sequence_logps
from .measures import logprob_margin, token_nll


@dataclass
class SketchedPairs:
    """Output of one sketch pass over ``B`` pairs.

    Attributes:
        sketch: ``S(g_i)``, ``[B, k]`` float32.
        loss: ``loss_i``, ``[B]``.
        z: the LP-DPO logit ``z_i`` (its sign says whether the policy already prefers ``y^w``), ``[B]``.
        n_tokens: completion tokens of chosen + rejected, ``[B]``.
        policy_margin: the policy's own length-normalised margin ``log pi(y^w|x)/|y^w| - log pi(y^l|x)/|y^l|``
            (:func:`~congrad_ray.core.measures.logprob_margin`) from the same forward, ``[B]`` float64; unlike ``z``
            it is informative when the reference is the policy itself (the hybrid score reads it).
    """

    sketch: Tensor
    loss: Tensor
    z: Tensor
    n_tokens: Tensor
    policy_margin: Tensor | None = None


def input_key(x: Tensor) -> tuple:
    """Identity of a layer's input within one forward (while the tensor is alive): layers called on the same tensor
    (a block's q/k/v, gate/up) read the same input and share its hash (docs/design.md §2)."""
    return (x.data_ptr(), x.dtype, x.device, tuple(x.shape), x.stride())


@dataclass
class _SharedInput:
    """One input tensor of a forward and the scoped layer calls that read it; their output gradients wait here
    until the last has arrived in the backward, then the group is sketched at once."""

    x: Tensor
    readers: list[tuple[str, nn.Linear]]
    deltas: dict[int, Tensor]


class _OuterProductSketcher:
    """Hooks on scoped linears that accumulate ``S`` of each sample's weight (and bias) gradient into ``pairs``.

    Layers called on the same input tensor are sketched together (:meth:`CountSketch.sketch_outer_shared`), once
    the backward has delivered all their output gradients (or, for a reader whose output never reached the loss,
    when the backward is over).

    With ``pair_rows`` (DPO) a sample is a pair: its chosen and rejected rows are joined along the token axis before
    sketching (``G_i`` is the sum of their two outer-product sums, and ``S`` is linear), so each layer is sketched
    once per pair, not once per row; ``pairs`` is ``[B, k]``. Without it every row is a sample, ``[N, k]``.
    """

    def __init__(self, linears: dict[str, nn.Linear], sketch: CountSketch, token_mask: Tensor, pair_rows: bool = True):
        self.linears = linears
        self.sketch = sketch
        self.token_mask = token_mask.bool()
        self.pair_rows = pair_rows
        # Without padding there is nothing to zero (the common case of packed or equal-length batches).
        self.padded = not bool(self.token_mask.all())
        samples = token_mask.shape[0] // 2 if pair_rows else token_mask.shape[0]
        self.pairs = torch.zeros(samples, sketch.k, device=token_mask.device)
        self._inputs: dict[tuple, _SharedInput] = {}

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Hooks in place for one forward and backward; on a clean exit, groups still waiting for a gradient are
        sketched with what arrived."""
        handles = [m.register_forward_hook(self._forward_hook(name)) for name, m in self.linears.items()]
        try:
            yield
            for group in list(self._inputs.values()):
                if group.deltas:
                    self._accumulate(group)
        finally:
            for h in handles:
                h.remove()
            self._inputs.clear()

    def _forward_hook(self, name: str):
        def hook(module: nn.Linear, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            if output.requires_grad:
                x = inputs[0]
                group = self._inputs.setdefault(input_key(x), _SharedInput(x.detach(), [], {}))
                slot = len(group.readers)
                group.readers.append((name, module))
                output.register_hook(lambda delta: self._arrived(group, slot, delta))

        return hook

    def _arrived(self, group: _SharedInput, slot: int, delta: Tensor) -> None:
        group.deltas[slot] = delta
        if len(group.deltas) == len(group.readers):
            self._accumulate(group)

    def _accumulate(self, group: _SharedInput) -> None:
        rows = self.token_mask.shape[0]
        self.sketch.share_input(sorted({f"{name}.weight" for name, _ in group.readers}))
        x = self._samples(self._masked(group.x.reshape(rows, -1, group.x.shape[-1]).float()))
        deltas: dict[str, Tensor] = {}
        for slot, delta in sorted(group.deltas.items()):
            name, module = group.readers[slot]
            delta = self._samples(self._masked(delta.reshape(rows, -1, delta.shape[-1]).float()))
            if module.bias is not None:
                self.pairs += self.sketch.sketch_bias(f"{name}.bias", delta.sum(dim=1))
            key = f"{name}.weight"
            deltas[key] = deltas[key] + delta if key in deltas else delta  # one layer called twice on this input
        self.pairs += self.sketch.sketch_outer_shared(deltas, x)
        group.deltas.clear()
        del self._inputs[input_key(group.x)]

    def _masked(self, t: Tensor) -> Tensor:
        """Zero padded positions (``where``, so a NaN there cannot leak into a sketch)."""
        if not self.padded or t.shape[1] != self.token_mask.shape[1]:
            return t
        return torch.where(self.token_mask[..., None], t, torch.zeros((), dtype=t.dtype, device=t.device))

    def _samples(self, t: Tensor) -> Tensor:
        """``[2B, T, d] -> [B, 2T, d]`` (pair ``i``'s chosen tokens, then its rejected tokens) with ``pair_rows``;
        rows as they are without."""
        if not self.pair_rows:
            return t
        chosen, rejected = t.chunk(2)
        return torch.cat([chosen, rejected], dim=1)


@contextmanager
def _embeddings_require_grad(model: nn.Module, captured: list[Tensor]) -> Iterator[None]:
    """Make the input-embedding output a grad leaf (so frozen weights still get activation gradients)."""

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
        leaf = output.detach().requires_grad_(True)
        captured.append(leaf)
        return leaf

    handle = model.get_input_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def sketch_pair_gradients(
    model: nn.Module,
    batch: PreferenceBatch,
    ref_logps: Tensor | None,
    linears: dict[str, nn.Linear],
    sketch: CountSketch,
    params: DPOParams,
) -> SketchedPairs:
    """``S(g_i)`` for every pair of ``batch`` from one forward and one activation-only backward.

    Args:
        model: the policy ``pi_theta`` in eval mode (no dropout), a causal LM (PEFT-wrapped or not).
        batch: ``B`` pairs as ``2B`` rows, chosen first; left or right padding.
        ref_logps: ``log pi_ref(y|x)`` per row, ``[2B]`` (see :func:`reference_logps`); ``None`` when the reference
            is the policy itself (round 1 of DPO from an SFT model): its log-probs are the policy's, detached, from
            the same forward, so no second forward is needed.
        linears: the scoped layers (:func:`congrad_ray.core.scope.scoped_linears`).
        sketch: the seeded count sketch ``S``.
        params: LP-DPO ``beta``, ``alpha``.
    """
    sketcher = _OuterProductSketcher(linears, sketch, batch.attention_mask)
    leaves: list[Tensor] = []
    with torch.enable_grad(), sketcher.installed(), _embeddings_require_grad(model, leaves):
        policy = sequence_logps(model, batch)
        ref = policy.detach() if ref_logps is None else ref_logps
        terms = lp_dpo_terms(policy, ref, batch.completion_lengths, params)
        torch.autograd.grad(terms.loss.sum(), leaves, allow_unused=True)
    b = batch.num_pairs
    lengths = batch.completion_lengths
    return SketchedPairs(
        sketch=sketcher.pairs,
        loss=terms.loss.detach(),
        z=terms.z.detach(),
        n_tokens=lengths[:b] + lengths[b:],
        policy_margin=logprob_margin(policy.detach(), lengths),
    )


def sketch_sequence_gradients(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, linears: dict[str, nn.Linear], sketch: CountSketch
) -> tuple[Tensor, Tensor]:
    """``(S(g_n) [N, k], nll [N])`` for ``g_n = grad nll_n``, each row's summed next-token NLL
    (:func:`~congrad_ray.core.measures.token_nll`), from one forward and one activation-only backward.

    The same hooks as :func:`sketch_pair_gradients` with a row as the sample: the LM-loss form of the per-sample
    sketch (what data-attribution tools such as bergson compute), used to compare with them on equal terms.
    ``input_ids``/``attention_mask`` are ``[N, T]``; left or right padding give the same result.
    """
    sketcher = _OuterProductSketcher(linears, sketch, attention_mask, pair_rows=False)
    leaves: list[Tensor] = []
    with torch.enable_grad(), sketcher.installed(), _embeddings_require_grad(model, leaves):
        nll, _ = token_nll(model, input_ids, attention_mask)
        torch.autograd.grad(nll.sum(), leaves, allow_unused=True)
    return sketcher.pairs, nll.detach()


@torch.no_grad()
def reference_logps(reference: nn.Module, batch: PreferenceBatch, disable_adapter: bool = False) -> Tensor:
    """``log pi_ref(y|x)`` per row, ``[2B]``: from a frozen copy, or the PEFT base with adapters disabled.

    When ``batch.ref_logps`` holds precomputed values (from columns), they are returned as they are.
    """
    if batch.ref_logps is not None:
        return batch.ref_logps
    if disable_adapter:
        with reference.disable_adapter():
            return sequence_logps(reference, batch)
    return sequence_logps(reference, batch)
