"""The self-rewarding loop around ConGrad: generate -> judge -> pairs -> filter -> train, round after round.

``load_iterate_config(path, overrides) -> IterateConfig`` and ``run_iterate(cfg, fresh=False) -> summary``; see
:mod:`.loop` for the directory layout and how a killed loop resumes.
"""

from __future__ import annotations

from typing import Any

from .config import IterateConfig, load_iterate_config


def run_iterate(cfg: IterateConfig, fresh: bool = False, stop_after: str | None = None) -> dict[str, Any]:
    """Run or resume the loop (imported lazily: torch and Ray load only when a loop runs)."""
    from .loop import run_iterate as _run

    return _run(cfg, fresh=fresh, stop_after=stop_after)


__all__ = ["IterateConfig", "load_iterate_config", "run_iterate"]
