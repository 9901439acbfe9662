"""LP-DPO on per-sequence log-probs (docs/design.md §1).

Notation: a batch of ``B`` pairs is ``2B`` rows, chosen rows first (``[0, B)``), rejected rows second
(``[B, 2B)``), exactly as TRL's ``DataCollatorForPreference`` lays it out. ``|y|`` counts completion tokens.

    z_i    = beta * [(log pi(y^w|x) - log pi_ref(y^w|x)) - (log pi(y^l|x) - log pi_ref(y^l|x))]
             + alpha * (|y^w| - |y^l|)
    loss_i = -log sigmoid(z_i)

``alpha = 0`` is TRL's ``sigmoid`` DPO loss.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Rows of logits turned into float32 log-softmax at once; bounds memory for large vocabularies.
_LOGSOFTMAX_ROWS = 4


@dataclass(frozen=True)
class DPOParams:
    """``beta`` scales the log-ratio margin; ``alpha`` is the LP-DPO length term (0 = plain DPO)."""

    beta: float = 0.1
    alpha: float = 0.0


@dataclass
class PreferenceBatch:
    """A collated batch of ``B`` pairs as ``2B`` right- or left-padded rows.

    Attributes:
        input_ids: ``[2B, T]`` prompt + completion tokens.
        attention_mask: ``[2B, T]`` 1 on real tokens.
        completion_mask: ``[2B, T]`` 1 on completion tokens (the ones whose log-probs count).
        ref_logps: optional ``[2B]`` precomputed ``log pi_ref(y|x)``.
    """

    input_ids: Tensor
    attention_mask: Tensor
    completion_mask: Tensor
    ref_logps: Tensor | None = None

    @property
    def num_pairs(self) -> int:
        return self.input_ids.shape[0] // 2

    @property
    def completion_lengths(self) -> Tensor:
        """``|y|`` per row, ``[2B]``."""
        return self.completion_mask.sum(dim=1)

    def to(self, device: torch.device | str) -> PreferenceBatch:
        ref = None if self.ref_logps is None else self.ref_logps.to(device)
        return PreferenceBatch(
            self.input_ids.to(device), self.attention_mask.to(device), self.completion_mask.to(device), ref
        )

    def rows(self, index: Tensor | list[int]) -> PreferenceBatch:
        """Sub-batch of the given pair indices (keeps the chosen-first layout)."""
        index = torch.as_tensor(index, dtype=torch.long)
        rows = torch.cat([index, index + self.num_pairs])
        ref = None if self.ref_logps is None else self.ref_logps[rows]
        return PreferenceBatch(self.input_ids[rows], self.attention_mask[rows], self.completion_mask[rows], ref)


@dataclass
class DPOTerms:
    """Per-pair quantities, each ``[B]``: ``loss_i``, ``z_i`` and the implicit rewards ``beta * log-ratio``."""

    loss: Tensor
    z: Tensor
    chosen_reward: Tensor
    rejected_reward: Tensor


def lp_dpo_terms(policy_logps: Tensor, ref_logps: Tensor, completion_lengths: Tensor, params: DPOParams) -> DPOTerms:
    """LP-DPO per pair from per-row sequence log-probs (each ``[2B]``, chosen rows first)."""
    pi_w, pi_l = policy_logps.chunk(2)
    ref_w, ref_l = ref_logps.to(policy_logps.dtype).chunk(2)
    len_w, len_l = completion_lengths.to(policy_logps.dtype).chunk(2)
    chosen_reward = params.beta * (pi_w - ref_w)
    rejected_reward = params.beta * (pi_l - ref_l)
    z = chosen_reward - rejected_reward + params.alpha * (len_w - len_l)
    return DPOTerms(-F.logsigmoid(z), z, chosen_reward, rejected_reward)


def token_logps(logits: Tensor, labels: Tensor) -> Tensor:
    """``log softmax(logits)[labels]`` in float32, ``[N, T', V] x [N, T'] -> [N, T']``, a few rows at a time."""
    out = []
    for start in range(0, logits.shape[0], _LOGSOFTMAX_ROWS):
        chunk = logits[start : start + _LOGSOFTMAX_ROWS].float()
        picked = chunk.gather(-1, labels[start : start + _LOGSOFTMAX_ROWS, :, None]).squeeze(-1)
        out.append(picked - torch.logsumexp(chunk, dim=-1))
    return torch.cat(out)


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Positions that ignore left padding: ``cumsum(mask) - 1``, clamped at 0, ``[N, T]``."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


def sequence_logps(model: nn.Module, batch: PreferenceBatch) -> Tensor:
    """``log pi(y|x)`` per row, ``[2B]``: completion-token log-probs summed, as TRL's DPOTrainer sums them.

    Only the logits from the first completion position on are computed (``logits_to_keep``), so the vocabulary
    projection of the prompt is skipped. Left and right padding give the same result (positions come from the mask).
    """
    ids, mask, comp = batch.input_ids, batch.attention_mask, batch.completion_mask
    seq_len = ids.shape[1]
    first = int(comp.float().argmax(dim=1).min().item()) if comp.any() else seq_len - 1
    keep = seq_len - max(first - 1, 0)
    kwargs = {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids": position_ids_from_mask(mask),
        "use_cache": False,
    }
    if _accepts(model, "logits_to_keep"):
        kwargs["logits_to_keep"] = keep
    logits = model(**kwargs).logits[:, -keep:]
    # logits at position p predict token p + 1.
    labels = ids[:, seq_len - keep + 1 :]
    target_mask = comp[:, seq_len - keep + 1 :].to(torch.float32)
    per_token = token_logps(logits[:, :-1], labels)
    return (per_token * target_mask).sum(dim=1)


def _accepts(model: nn.Module, argument: str) -> bool:
    """Whether the underlying causal LM's ``forward`` takes ``argument`` (through DDP and PEFT wrappers)."""
    while isinstance(getattr(model, "module", None), nn.Module):  # DistributedDataParallel and friends
        model = model.module
    forward = getattr(model, "get_base_model", lambda: model)().forward
    try:
        return argument in inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return False
