"""The LP-DPO trainer on a Ray Train worker that holds its own shard of the pairs (imported in workers only).

Hugging Face's ``Trainer`` (through accelerate) assumes every process holds the same dataset: it hands rank ``r``
every ``W``-th batch of it, and TRL's reference precomputation shards the dataset the same way and gathers the
results across ranks. Under Ray Train each worker already holds its own shard (:class:`.sharding.IdOrderedSplit`),
so the first would train each rank on ``1/W`` of its shard, and the second would mix the ranks' rows. Here each rank
stays on its whole shard:

* the train dataloader's batch sampler is made rank-local (transformers does the same for its own rank-aware
  ``BatchRebalanceSampler``); shards are padded to equal length, so every rank takes the same steps;
* ``log pi_ref`` is precomputed over the local shard with TRL's own ``compute_ref_log_probs`` (the same reference
  handling: frozen copy, adapters disabled, or a "ref" adapter), no gather.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader

from .trainer import CongradDPOTrainer


class ShardLocalDPOTrainer(CongradDPOTrainer):
    def get_train_dataloader(self) -> DataLoader:
        loader = super().get_train_dataloader()
        batch_sampler = getattr(loader, "batch_sampler", None)
        if hasattr(batch_sampler, "num_processes"):  # accelerate's BatchSamplerShard
            batch_sampler.num_processes, batch_sampler.process_index = 1, 0
        return loader

    def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
        model = self.ref_model if self.ref_model is not None else self.model
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=self.data_collator, shuffle=False)
        device = self.accelerator.device
        chosen, rejected = [], []
        for batch in loader:
            c, r = self.compute_ref_log_probs(model, {k: v.to(device) for k, v in batch.items()})
            chosen.append(c.float().cpu())
            rejected.append(r.float().cpu())
        dataset = dataset.add_column("ref_chosen_logps", torch.cat(chosen).tolist())
        return dataset.add_column("ref_rejected_logps", torch.cat(rejected).tolist())
