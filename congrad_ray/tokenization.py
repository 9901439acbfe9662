"""Prompt/completion tokenisation and collation, the same as TRL's DPOTrainer (so the filter scores exactly the
objective the DPO step optimises).

* plain strings: EOS is appended to ``chosen`` / ``rejected`` unless present; ``prompt``, ``prompt + chosen`` and
  ``prompt + rejected`` are tokenised, and the completion starts where they diverge;
* conversational (lists of ``{"role", "content"}``): the chat template renders ``prompt`` with the generation
  prompt, and ``prompt + chosen`` / ``prompt + rejected`` in full;
* collation: ``prompt + completion`` per row, truncated per sequence to ``max_length`` (``keep_start`` or
  ``keep_end``), chosen rows first, padded (right by default, as TRL does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from trl.data_utils import _tokenize, common_prefix_length, is_conversational

from .core.dpo import PreferenceBatch

Truncation = Literal["keep_start", "keep_end"]


@dataclass(frozen=True)
class TokenizedPair:
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]


def tokenize_pair(tokenizer: Any, prompt: Any, chosen: Any, rejected: Any) -> TokenizedPair:
    """Token ids of one pair, as ``DPOTrainer._prepare_dataset`` computes them."""
    example = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    if is_conversational(example):
        prompt_ids = _tokenize(tokenizer, prompt, add_generation_prompt=True)["input_ids"]
        full_chosen = _tokenize(tokenizer, prompt + chosen)["input_ids"]
        full_rejected = _tokenize(tokenizer, prompt + rejected)["input_ids"]
    else:
        eos = tokenizer.eos_token or ""
        chosen = chosen if chosen.endswith(eos) else chosen + eos
        rejected = rejected if rejected.endswith(eos) else rejected + eos
        prompt_ids = _tokenize(tokenizer, prompt)["input_ids"]
        full_chosen = _tokenize(tokenizer, prompt + chosen)["input_ids"]
        full_rejected = _tokenize(tokenizer, prompt + rejected)["input_ids"]
    split = min(common_prefix_length(prompt_ids, full_chosen), common_prefix_length(prompt_ids, full_rejected))
    return TokenizedPair(list(prompt_ids[:split]), list(full_chosen[split:]), list(full_rejected[split:]))


def tokenize_pairs(tokenizer: Any, rows: Sequence[tuple[Any, Any, Any]]) -> list[TokenizedPair]:
    """:func:`tokenize_pair` of many ``(prompt, chosen, rejected)`` rows, the plain-string ones in three batched
    tokenizer calls (prompts, prompt + chosen, prompt + rejected: one pass through the Rust tokenizer each instead of
    a Python round trip per string); conversational rows go through their chat template one by one."""
    out: list[TokenizedPair | None] = [None] * len(rows)
    plain = [i for i, (p, c, r) in enumerate(rows) if not is_conversational({"prompt": p, "chosen": c, "rejected": r})]
    for i in sorted(set(range(len(rows))) - set(plain)):
        out[i] = tokenize_pair(tokenizer, *rows[i])
    if plain:
        eos = tokenizer.eos_token or ""
        prompts = [rows[i][0] for i in plain]
        chosen = [rows[i][1] if rows[i][1].endswith(eos) else rows[i][1] + eos for i in plain]
        rejected = [rows[i][2] if rows[i][2].endswith(eos) else rows[i][2] + eos for i in plain]
        ids = [
            tokenizer(text=texts)["input_ids"]
            for texts in (prompts, _joined(prompts, chosen), _joined(prompts, rejected))
        ]
        for i, prompt_ids, full_chosen, full_rejected in zip(plain, *ids):
            split = min(_common_prefix(prompt_ids, full_chosen), _common_prefix(prompt_ids, full_rejected))
            out[i] = TokenizedPair(list(prompt_ids[:split]), list(full_chosen[split:]), list(full_rejected[split:]))
    return out  # type: ignore[return-value]


def _common_prefix(a: list[int], b: list[int]) -> int:
    """TRL's ``common_prefix_length``, with the usual case (one is a prefix of the other) compared in one slice."""
    n = min(len(a), len(b))
    return n if a[:n] == b[:n] else common_prefix_length(a, b)


def _joined(a: list[str], b: list[str]) -> list[str]:
    return [x + y for x, y in zip(a, b)]


def collate(
    pairs: Sequence[TokenizedPair],
    pad_token_id: int,
    max_length: int | None = None,
    truncation_mode: Truncation = "keep_start",
    padding_side: Literal["right", "left"] = "right",
) -> PreferenceBatch:
    """``B`` pairs -> ``2B`` padded rows (chosen first), as TRL's ``DataCollatorForPreference``."""
    rows, masks = [], []
    for completion in ("chosen_ids", "rejected_ids"):
        for p in pairs:
            ids = p.prompt_ids + getattr(p, completion)
            comp = [0] * len(p.prompt_ids) + [1] * len(getattr(p, completion))
            if max_length is not None:
                cut = slice(None, max_length) if truncation_mode == "keep_start" else slice(-max_length, None)
                ids, comp = ids[cut], comp[cut]
            rows.append(ids)
            masks.append(comp)
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    completion = torch.zeros((len(rows), width), dtype=torch.long)
    for j, (ids, comp) in enumerate(zip(rows, masks)):
        span = slice(0, len(ids)) if padding_side == "right" else slice(width - len(ids), width)
        input_ids[j, span] = torch.tensor(ids, dtype=torch.long)
        attention[j, span] = 1
        completion[j, span] = torch.tensor(comp, dtype=torch.long)
    return PreferenceBatch(input_ids, attention, completion)
