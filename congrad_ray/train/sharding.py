"""Deterministic shards for Ray Train: rank ``r`` gets the trainable rows whose id-hash key (``_order``, set by
:mod:`.data`) lies in ``[cut[r-1], cut[r])``. The cut keys are quantiles of all keys, so the shards are near-equal;
no shuffle is needed, and the same rows reach the same rank on every run whatever the file or block layout, so a
resumed run sees exactly the batches it would have seen."""

from __future__ import annotations

from typing import Any

from ray.train import DataConfig

from .data import key_range


class IdOrderedSplit(DataConfig):
    """Ray Train data config: ``split`` goes out in id-hash key ranges, one per rank (``cut_keys``: the
    ``world_size - 1`` keys where ranks ``1..`` start); every other dataset goes whole to every worker that asks."""

    def __init__(self, cut_keys: list[str], split: str = "train"):
        super().__init__(datasets_to_split=[split])
        self._split = split
        self._cuts = list(cut_keys)

    def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{} for _ in range(world_size)]
        for name, ds in datasets.items():
            if name != self._split:
                for i in range(world_size):
                    out[i][name] = ds.iterator()
                continue
            if len(self._cuts) != world_size - 1:
                raise ValueError(f"{len(self._cuts)} cut keys for {world_size} workers")
            edges = [None, *self._cuts, None]
            for i in range(world_size):
                bounds = {"low": edges[i], "high": edges[i + 1]}
                part = ds.map_batches(key_range, batch_format="pyarrow", batch_size=None, fn_kwargs=bounds)
                out[i][name] = part.iterator()
        return out
