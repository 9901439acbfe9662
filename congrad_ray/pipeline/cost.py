"""What a filter run will cost, said before it starts: tokens (from a sample of the input), the sketch store's size,
and actor-hours from a calibration of the configured model's sketch pass on the user's own hardware.

To first order the sketch pass's time is linear in the tokens it processes: two sequences per pair, each
``min(prompt + completion, max_length)`` tokens (micro-batches are cut in length order, so padding is small), i.e.
``seconds ~= c x tokens``. :func:`calibrate` measures ``c`` on a sample of the input, in micro-batches of the
configured size, on the device and thread count an actor gets; ``congrad-ray plan --calibrate`` stores it next to
the config (``<config>.calibration.json``), and every later plan and run of that config reads it.
"""

from __future__ import annotations

import platform
import time
from datetime import datetime, timezone
from typing import Any

from ..config import FilterConfig
from ..core.rows import RowRules, check_row, check_tokens, decode_rows
from ..storage import Location
from ..tokenization import TokenizedPair, tokenize_pairs
from .units import Unit, read_unit

SAMPLE_ROWS = 512
SAMPLE_UNITS = 16
CALIBRATION_PAIRS = 256
STORE_ROW_OVERHEAD_BYTES = 620  # per stored pair besides its k float32 values (ids, status, scalars, Parquet levels)


def pair_tokens(pair: TokenizedPair, max_length: int | None) -> int:
    """Tokens the sketch pass runs for one pair: chosen and rejected sequences, each truncated to ``max_length``."""
    cap = max_length or 1 << 62
    prompt = len(pair.prompt_ids)
    return min(prompt + len(pair.chosen_ids), cap) + min(prompt + len(pair.rejected_ids), cap)


def sample_pairs(cfg: FilterConfig, units: list[Unit], rows: int = SAMPLE_ROWS) -> list[TokenizedPair]:
    """Up to ``rows`` valid pairs, tokenised: evenly strided rows of up to ``SAMPLE_UNITS`` evenly spaced units."""
    from ..models import load_tokenizer, resolve_model_path

    tok = load_tokenizer(resolve_model_path(cfg.model.name_or_path), cfg.model.revision, cfg.model.trust_remote_code)
    picked = [units[i * len(units) // min(len(units), SAMPLE_UNITS)] for i in range(min(len(units), SAMPLE_UNITS))]
    per_unit = max(1, rows // max(1, len(picked)))
    rules = RowRules(cfg.input.id_column, cfg.input.lang_column, None, None)
    pairs: list[TokenizedPair] = []
    for unit in picked:
        table = read_unit(unit)
        step = max(1, table.num_rows // per_unit)
        decoded, bad = decode_rows(table.take(list(range(0, table.num_rows, step))[:per_unit]))
        valid = [r for r, problem in zip(decoded, bad) if problem is None and check_row(r, rules)[2] is None]
        for pair in tokenize_pairs(tok, [(r["prompt"], r["chosen"], r["rejected"]) for r in valid]):
            lens = (len(pair.prompt_ids), len(pair.chosen_ids), len(pair.rejected_ids))
            if check_tokens(*lens, cfg.dpo.max_length, cfg.dpo.truncation_mode) is None:
                pairs.append(pair)
    return pairs


def calibration_key(cfg: FilterConfig) -> dict[str, Any]:
    """What the per-token cost depends on: the model, the sketch, truncation, the micro-batch and the device kind."""
    m, s = cfg.model, cfg.sketch
    return {
        "model": m.name_or_path,
        "revision": m.revision,
        "dtype": m.dtype,
        "lora": m.lora.model_dump(mode="json") if m.lora else None,
        "reference": m.reference,
        "k": s.k,
        "scope": s.scope,
        "last_k": s.last_k,
        "route": s.route,
        "max_length": cfg.dpo.max_length,
        "batch_size": cfg.resources.batch_size,
        "gpu": cfg.resources.gpus_per_actor > 0,
        "cpus_per_actor": cfg.resources.cpus_per_actor,
    }


def calibrate(cfg: FilterConfig, pairs: list[TokenizedPair], max_pairs: int = CALIBRATION_PAIRS) -> dict[str, Any]:
    """Seconds per token of the sketch pass, measured in this process as an actor would run it: the configured
    model and sketch, micro-batches of ``resources.batch_size`` in length order, the actor's device and threads."""
    import torch

    from ..engine import SketchEngine
    from ..errors import ConfigError

    gpu = cfg.resources.gpus_per_actor > 0
    if gpu and not torch.cuda.is_available():
        raise ConfigError(
            [
                "plan --calibrate: resources.gpus_per_actor > 0 but this machine has no CUDA GPU; calibrate on a "
                "node of the kind the sketch actors run on (e.g. in a `ray job submit` to the cluster)"
            ]
        )
    if not pairs:
        raise ConfigError(["plan --calibrate: the input sample has no valid pair to time; check input.paths"])
    threads = max(1, int(cfg.resources.cpus_per_actor))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        engine = SketchEngine.from_config(cfg, "cuda" if gpu else "cpu")
        ordered = sorted(
            pairs[:max_pairs], key=lambda p: len(p.prompt_ids) + max(len(p.chosen_ids), len(p.rejected_ids))
        )
        b = cfg.resources.batch_size
        batches = [ordered[i : i + b] for i in range(0, len(ordered), b)]
        engine.sketch_pairs(batches[len(batches) // 2])  # warm-up: first-call allocations and kernel choices
        _sync(gpu)
        start = time.perf_counter()
        for batch in batches:
            engine.sketch_pairs(batch)
        _sync(gpu)
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(before)
    tokens = sum(pair_tokens(p, cfg.dpo.max_length) for p in ordered)
    device = torch.cuda.get_device_name() if gpu else f"{platform.processor() or platform.machine()} CPU x {threads}"
    return {
        "seconds_per_token": seconds / tokens,
        "pairs": len(ordered),
        "tokens": tokens,
        "seconds": round(seconds, 3),
        "device": device,
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "key": calibration_key(cfg),
    }


def _sync(gpu: bool) -> None:
    if gpu:
        import torch

        torch.cuda.synchronize()


def load_calibration(cfg: FilterConfig) -> tuple[dict[str, Any] | None, str | None]:
    """The config's calibration, or None and why (none yet, or one for another model/sketch setting)."""
    path = cfg.resources.calibration
    rerun = "`congrad-ray plan --calibrate` once on the actors' hardware"
    if path is None or not Location.of(path).exists():
        return None, f"actor-hours: not calibrated ({rerun})"
    calibration = Location.of(path).read_json()
    differs = sorted(k for k, v in calibration_key(cfg).items() if calibration.get("key", {}).get(k) != v)
    if differs:
        return None, f"actor-hours: {path} was measured with other {', '.join(differs)} (rerun {rerun})"
    return calibration, None


def estimate(cfg: FilterConfig, rows: int, sample: list[TokenizedPair]) -> dict[str, Any]:
    """The plan's cost lines: tokens, the sketch store's size, and (calibrated) actor-hours and wall time."""
    per_pair = sum(pair_tokens(p, cfg.dpo.max_length) for p in sample) / max(1, len(sample))
    tokens = per_pair * rows
    width = 4 if cfg.sketch.store_dtype == "float32" else 2
    store_bytes = rows * (width * cfg.sketch.k + STORE_ROW_OVERHEAD_BYTES)
    size = f"~{_si(tokens)} tokens (~{per_pair:,.0f} per pair, sample of {len(sample):,}) · store ~{store_bytes / 1e9:,.2f} GB"
    out: dict[str, Any] = {
        "estimate": {"tokens": round(tokens), "tokens_per_pair": round(per_pair, 1), "store_bytes": store_bytes}
    }
    calibration, why = load_calibration(cfg)
    if calibration is None:
        out["cost"] = f"{size} · {why}"
        return out
    actor_s = tokens * calibration["seconds_per_token"]
    actors = cfg.resources.actors_max
    out["cost"] = (
        f"{size} · ~{actor_s / 3600:,.2f} actor-hours ({calibration['seconds_per_token'] * 1e6:.3g} µs/token on "
        f"{calibration['device']}, {calibration['measured_at'][:10]}) · ~{_duration(actor_s / actors)} on {actors} "
        f"actor{'s' if actors > 1 else ''}"
    )
    out["estimate"].update({"actor_s": round(actor_s, 3), "wall_s": round(actor_s / actors, 3)})
    return out


def _si(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
