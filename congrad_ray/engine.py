"""The sketch engine: policy, reference and count sketch built from a config, turning tokenised pairs into
``S(g_i)``. No Ray here: actors, the in-process benchmark and tests all use this one object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .config import FilterConfig
from .core import CountSketch, DPOParams, PreferenceBatch, SketchedPairs, reference_logps, scoped_linears
from .core import sketch_pair_gradients as _sketch
from .models import add_lora, load_model, load_tokenizer, resolve_model_path
from .tokenization import TokenizedPair, collate


@dataclass
class SketchEngine:
    policy: Any
    reference: Any | None
    tokenizer: Any
    sketch: CountSketch
    linears: dict
    dpo: DPOParams
    reference_mode: str
    device: torch.device
    max_length: int | None
    truncation_mode: str

    @staticmethod
    def from_config(cfg: FilterConfig, device: str | None = None) -> SketchEngine:
        m = cfg.model
        device = torch.device(
            device or ("cuda" if torch.cuda.is_available() and cfg.resources.gpus_per_actor > 0 else "cpu")
        )
        path = resolve_model_path(m.name_or_path)
        tokenizer = load_tokenizer(path, m.revision, m.trust_remote_code)
        policy = load_model(path, m.dtype, m.revision, m.trust_remote_code, m.attn_implementation)
        if m.lora is not None:
            policy = _with_lora(policy, m.lora, cfg.sketch.seed)
        reference = None
        if m.reference == "model":
            ref_path = resolve_model_path(m.reference_path)
            reference = load_model(ref_path, m.dtype, m.revision, m.trust_remote_code, m.attn_implementation).to(device)
        for p in policy.parameters():
            p.requires_grad_(False)
        policy = policy.to(device).eval()
        return SketchEngine(
            policy=policy,
            reference=reference,
            tokenizer=tokenizer,
            sketch=CountSketch(cfg.sketch.k, cfg.sketch.seed, cfg.sketch.route),
            linears=scoped_linears(policy, cfg.sketch.scope, cfg.sketch.last_k),
            dpo=DPOParams(cfg.dpo.beta, cfg.dpo.alpha),
            reference_mode=m.reference,
            device=device,
            max_length=cfg.dpo.max_length,
            truncation_mode=cfg.dpo.truncation_mode,
        )

    def batch(self, pairs: list[TokenizedPair], ref: torch.Tensor | None = None) -> PreferenceBatch:
        b = collate(pairs, self.tokenizer.pad_token_id, self.max_length, self.truncation_mode)
        b.ref_logps = ref
        return b.to(self.device)

    def reference_logps(self, batch: PreferenceBatch) -> torch.Tensor | None:
        """``log pi_ref(y|x)`` per row; ``None`` for ``same`` (the sketch pass reuses the policy's own forward)."""
        if self.reference_mode == "same":
            return None
        if self.reference_mode == "columns":
            if batch.ref_logps is None:
                raise ValueError("reference 'columns' but the batch carries no reference log-probs")
            return batch.ref_logps
        if self.reference_mode == "model":
            return reference_logps(self.reference, batch)
        return reference_logps(self.policy, batch, disable_adapter=self.reference_mode == "disabled_adapter")

    def sketch_pairs(self, pairs: list[TokenizedPair], ref: torch.Tensor | None = None) -> SketchedPairs:
        """``S(g_i)`` for one micro-batch of pairs (``ref``: ``[2B]`` precomputed log-probs, chosen rows first)."""
        batch = self.batch(pairs, ref)
        out = _sketch(self.policy, batch, self.reference_logps(batch), self.linears, self.sketch, self.dpo)
        margin = None if out.policy_margin is None else out.policy_margin.cpu()
        return SketchedPairs(out.sketch.cpu(), out.loss.cpu(), out.z.cpu(), out.n_tokens.cpu(), margin)


def _with_lora(model: Any, lora: Any, seed: int) -> Any:
    """The configured adapter, or a fresh one whose random ``lora_A`` is drawn from ``seed``: every actor on every
    node must sketch through the same adapter, or the per-sample gradients of ``lora_B`` would differ by actor."""
    if lora.adapter_path:
        from peft import PeftModel

        return PeftModel.from_pretrained(model, resolve_model_path(lora.adapter_path), is_trainable=False).eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return add_lora(model, lora.rank, lora.alpha, lora.target_modules)
