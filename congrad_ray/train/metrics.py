"""``metrics.json`` and ``eval.png`` of a training run (the console prints them: :mod:`congrad_ray.console`)."""

from __future__ import annotations

import io
import time
from typing import Any

from ..storage import Location
from .config import TrainConfig
from .evaluate import unflat, write_plot

GROUPS = ("all", "seen", "unseen")


def _during(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Held-out evaluations logged during training, ``[{step, per_language, groups}]``, latest per step."""
    by_step: dict[int, dict[str, Any]] = {}
    for entry in log_history:
        stats = unflat(entry)
        if stats:
            by_step[entry["step"]] = {
                "step": entry["step"],
                "per_language": {k: v for k, v in stats.items() if k not in GROUPS},
                "groups": {k: v for k, v in stats.items() if k in GROUPS},
            }
    return [by_step[s] for s in sorted(by_step)]


def training_summary(log_history: list[dict[str, Any]]) -> dict[str, Any]:
    """Loss history (one point per logged step), resumes, and the last measured steps per second."""
    losses: dict[int, float] = {}
    for h in log_history:
        if "loss" in h:
            losses[h["step"]] = float(h["loss"])
    history = [{"step": s, "loss": losses[s]} for s in sorted(losses)]
    speeds = [h["train_steps_per_s"] for h in log_history if "train_steps_per_s" in h]
    return {
        "loss_history": history,
        "loss_first": history[0]["loss"] if history else None,
        "loss_last": history[-1]["loss"] if history else None,
        "resumed_from": [h["resumed_from_step"] for h in log_history if "resumed_from_step" in h],
        "train_steps_per_s": speeds[-1] if speeds else None,
    }


def _is_worker_record(f: Location) -> bool:
    from .loop import WORKER_RECORD

    return f.path.rsplit("/", 1)[-1].startswith(WORKER_RECORD)


def build_metrics(
    cfg: TrainConfig,
    spec: Any,
    train: Any,
    heldout: Any,
    trainer_state: dict[str, Any],
    final: dict[str, Any],
    timings: dict[str, float | None],
    checkpoint: Location,
) -> dict[str, Any]:
    log_history = trainer_state.get("log_history", [])
    world = cfg.scaling.num_workers
    groups = spec.groups
    return {
        "run": {"name": cfg.run.name, "output": Location.of(cfg.run.output).uri, "config_hash": cfg.config_hash()},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "loss": {"kind": "lp_dpo", "beta": cfg.dpo.beta, "alpha": cfg.dpo.alpha, "reference": spec.reference_mode},
        "data": {
            "train": train.summary(),
            "eval": heldout.summary() if heldout is not None else None,
            "shard_rows": spec.shard_rows,
            "padded_rows": spec.shard_rows * world - train.rows,
        },
        "languages": {"seen": groups.get("seen", sorted(train.languages)), "unseen": groups.get("unseen", [])},
        "training": {
            "global_step": trainer_state.get("global_step"),
            "max_steps": spec.max_steps,
            "epochs": trainer_state.get("epoch"),
            "num_workers": world,
            "checkpoint": checkpoint.uri,
            "workers": [f.read_json() for f in checkpoint.join("checkpoint").list(".json") if _is_worker_record(f)],
            **training_summary(log_history),
        },
        "eval": {"during": _during(log_history), "final": final.get("final")},
        "model": final["model"],
        "timings_s": {k: (round(v, 3) if v is not None else None) for k, v in timings.items()},
    }


def write_outputs(metrics: dict[str, Any], out: Location, plot: bool) -> None:
    out.join("metrics.json").write_json(metrics)
    if plot and metrics["eval"]["final"] is not None:
        buf = io.BytesIO()
        write_plot(metrics, buf)
        out.join("eval.png").write_bytes(buf.getvalue())
