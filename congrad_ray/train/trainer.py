"""TRL's ``DPOTrainer`` with its loss hook (``_compute_loss``) replaced by core's LP-DPO.

Everything else is TRL's: tokenisation, collation, the reference (a frozen copy, the PEFT base with adapters
disabled, a "ref" adapter, or log-probs precomputed into the batch), optimisation, checkpoints, logging. The loss is
``lp_dpo_terms`` on ``sequence_logps`` (:mod:`congrad_ray.core.dpo`), the definition the filter scores with:

    z_i    = beta * [(log pi(y^w|x) - log pi_ref(y^w|x)) - (log pi(y^l|x) - log pi_ref(y^l|x))] + alpha * (|y^w| - |y^l|)
    loss   = mean_i -log sigmoid(z_i)

With ``alpha = 0`` this is TRL's ``sigmoid`` loss.
"""

from __future__ import annotations

from typing import Any

import torch
from trl import DPOTrainer

from ..core import DPOParams, DPOTerms, PreferenceBatch, lp_dpo_terms, sequence_logps


class CongradDPOTrainer(DPOTrainer):
    """``DPOTrainer(..., dpo_params=DPOParams(beta, alpha))``; ``args.beta`` must equal ``dpo_params.beta``."""

    def __init__(self, *args: Any, dpo_params: DPOParams, **kwargs: Any):
        self.dpo_params = dpo_params
        super().__init__(*args, **kwargs)
        unsupported = {
            "loss_type": self.loss_types != ["sigmoid"],
            "ld_alpha": self.ld_alpha is not None,
            "use_weighting": self.use_weighting,
            "f_divergence_type": self.f_divergence_type != "reverse_kl",
            "label_smoothing": self.label_smoothing != 0.0,
            "router aux loss (MoE)": self.aux_loss_enabled,
        }
        if bad := [k for k, v in unsupported.items() if v]:
            raise ValueError(f"LP-DPO replaces TRL's loss; unset {bad} in the DPOConfig")
        if self.beta != dpo_params.beta:
            raise ValueError(f"DPOConfig.beta={self.beta} but dpo_params.beta={dpo_params.beta}: pass the same beta")

    def reference_logps(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """``log pi_ref(y|x)`` per row, ``[2B]`` chosen first: precomputed columns, else TRL's reference forward."""
        if "ref_chosen_logps" in inputs:
            return torch.cat([inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]])
        model = self.ref_model if self.ref_model is not None else self.model
        chosen, rejected = self.compute_ref_log_probs(model, inputs)
        return torch.cat([chosen, rejected])

    def lp_dpo_terms(self, model: Any, inputs: dict[str, torch.Tensor]) -> tuple[DPOTerms, torch.Tensor]:
        """Core's LP-DPO terms of a collated batch, and the policy log-probs ``[2B]``."""
        batch = PreferenceBatch(inputs["input_ids"], inputs["attention_mask"], inputs["completion_mask"])
        policy = sequence_logps(model, batch)
        ref = self.reference_logps(inputs).detach().to(policy.device, policy.dtype)
        return lp_dpo_terms(policy, ref, batch.completion_lengths, self.dpo_params), policy

    def _compute_loss(self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool):
        mode = "train" if self.model.training else "eval"
        terms, policy = self.lp_dpo_terms(model, inputs)
        loss = terms.loss.mean()
        self._log_terms(mode, terms, policy, inputs)
        return (loss, terms) if return_outputs else loss

    def _log_terms(self, mode: str, terms: DPOTerms, policy: torch.Tensor, inputs: dict[str, torch.Tensor]) -> None:
        """The metrics TRL logs (rewards/*, logps/*, num_tokens) plus the LP-DPO logit, gathered over ranks."""
        gather = self.accelerator.gather  # not gather_for_metrics: Ray shards are rank-local (see shard_trainer)
        metrics = self._metrics[mode]
        w, lo = terms.chosen_reward.detach(), terms.rejected_reward.detach()
        chosen_logps, rejected_logps = policy.detach().chunk(2)
        for key, value in (
            ("rewards/chosen", w),
            ("rewards/rejected", lo),
            ("rewards/accuracies", (w > lo).float()),
            ("rewards/margins", w - lo),
            ("logps/chosen", chosen_logps),
            ("logps/rejected", rejected_logps),
            ("lp_dpo/z", terms.z.detach()),
        ):
            metrics[key].append(gather(value).float().mean().item())
        if mode == "train":
            tokens = gather(inputs["attention_mask"].sum()).sum().item()
            self._total_train_tokens += tokens // self._tp_size
        metrics["num_tokens"] = [self._total_train_tokens]
