"""Helpers shared by the benchmark groups: thread setup, side-by-side best-of-N timing, and the figure record."""

from __future__ import annotations

import gc
import os
import platform
import time
from collections.abc import Callable
from typing import Any


def cpu_count() -> int:
    """CPUs this process may run on (the affinity mask, not the host's core count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def setup_torch() -> dict[str, Any]:
    """Use every CPU the machine gives us (``BENCH_THREADS`` overrides); return the setup the figures record."""
    import torch

    threads = int(os.environ.get("BENCH_THREADS", 0)) or cpu_count()
    torch.set_num_threads(threads)
    return {
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
    }


def race(fns: dict[str, Callable[[], Any]], repeat: int, warmup: int = 1) -> dict[str, float]:
    """Best-of-``repeat`` wall time in seconds of each function, measured side by side.

    Every function is warmed up first; then the repetitions are interleaved (a, b, a, b, ...) so that a slow
    phase of the machine hits all contenders alike. Garbage is collected before each timed call.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    best = {name: float("inf") for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            gc.collect()
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def goal_met(value: float, goal: str | None) -> bool | None:
    """``"<= X"`` / ``">= X"`` against ``value``; ``None`` when there is no goal."""
    if goal is None:
        return None
    op, _, bound = goal.partition(" ")
    if op == "<=":
        return bool(value <= float(bound))
    if op == ">=":
        return bool(value >= float(bound))
    raise ValueError(f"goal {goal!r} must read '<= X' or '>= X'")


def figure(
    bench: str, metric: str, value: float, goal: str | None, details: dict[str, Any], group: str | None = None
) -> dict[str, Any]:
    """One benchmark record (one JSON line); ``value`` is rounded to 4 significant digits.

    The 1-minute load average is added to the details: on a shared machine it says how much to trust a timing.
    """
    details = {**details, "load_avg_1m": round(os.getloadavg()[0], 2)}
    record: dict[str, Any] = {"bench": bench}
    if group is not None:
        record["group"] = group
    record.update(
        {
            "metric": metric,
            "value": float(f"{value:.4g}"),
            "goal": goal,
            "met": goal_met(value, goal),
            "details": details,
        }
    )
    return record


def ms(seconds: float) -> float:
    """Seconds to milliseconds, 4 significant digits (for the details of a figure)."""
    return float(f"{seconds * 1e3:.4g}")


def llama_spec(hidden: int, intermediate: int, layers: int, heads: int, seed: int = 1) -> Any:
    """A tiny Llama of the given widths (full multi-head attention), for the benchmarks' models."""
    from congrad_ray.models import TinyModelSpec

    return TinyModelSpec(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        seed=seed,
    )
