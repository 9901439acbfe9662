"""Parameter scope: which linear layers' weights the per-sample gradient ``g_i`` covers (docs/design.md §3).

* ``linear``: every ``nn.Linear`` of the network except the output head (default);
* ``lora``: the LoRA adapter matrices only (``lora_A`` / ``lora_B`` of a PEFT model; LESS-style);
* ``last_k``: the linear layers of the last ``K`` transformer blocks.

The output head is left out of every scope: it is often tied to the input embeddings, whose gradient is not the
gradient of a linear layer, and its per-token output gradient is vocabulary-wide.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

Scope = Literal["linear", "lora", "last_k"]


def scoped_linears(model: nn.Module, scope: Scope = "linear", last_k: int = 1) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` modules in ``scope``, by qualified module name, in module order."""
    head = _output_head(model)
    linears = {
        name: module for name, module in model.named_modules() if isinstance(module, nn.Linear) and module is not head
    }
    if scope == "linear":
        chosen = linears
    elif scope == "lora":
        chosen = {name: m for name, m in linears.items() if ".lora_A." in name or ".lora_B." in name}
        if not chosen:
            raise ValueError("scope 'lora' needs a PEFT LoRA model: set model.lora (or use scope 'linear')")
    elif scope == "last_k":
        blocks = transformer_blocks(model)
        if last_k < 1 or last_k > len(blocks):
            raise ValueError(f"last_k={last_k} must be in [1, {len(blocks)}] (the model has {len(blocks)} blocks)")
        keep = {id(m) for block in blocks[-last_k:] for m in block.modules()}
        chosen = {name: m for name, m in linears.items() if id(m) in keep}
    else:
        raise ValueError(f"unknown parameter scope {scope!r}: use 'linear', 'lora' or 'last_k'")
    if not chosen:
        raise ValueError(f"scope {scope!r} selects no linear layer in {type(model).__name__}")
    return chosen


def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The repeated decoder blocks: the ``nn.ModuleList`` holding the most parameters."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        raise ValueError(f"{type(model).__name__} has no nn.ModuleList of transformer blocks")
    return max(lists, key=lambda ml: sum(p.numel() for p in ml.parameters()))


def _output_head(model: nn.Module) -> nn.Module | None:
    getter = getattr(model, "get_output_embeddings", None)
    return getter() if callable(getter) else None
