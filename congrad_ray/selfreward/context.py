"""One round of the self-rewarding loop as the stages see it: the config, the round's directory and its stage
completion records (``round-XX/_state/<stage>.json``), the round's model ``M_t`` and the frozen prompt pool."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..storage import Location
from .config import IterateConfig


@dataclass
class RoundContext:
    cfg: IterateConfig
    root: Location
    index: int
    model_in: str
    pool: list[dict]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def dir(self) -> Location:
        return self.root.join(f"round-{self.index:02d}")

    def record(self, stage: str) -> Location:
        return self.dir.join("_state", f"{stage}.json")

    def done(self, stage: str) -> dict[str, Any] | None:
        rec = self.record(stage)
        return rec.read_json() if rec.exists() else None
