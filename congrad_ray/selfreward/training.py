"""The train stage: the DPO step (:func:`congrad_ray.train.run.run_training`) on the round's kept pairs.

The loop sets, on top of ``train.config`` + ``train.overrides``: ``data.train`` = the round's filter run (its kept/),
``run.output`` = ``round-XX/train``, ``model.name_or_path`` = the round's model ``M_t``, and as the DPO reference
``M_t`` too (``model.reference: model`` + ``reference_path``; with LoRA the disabled adapter, which is ``M_t``).
The trained model (a full checkpoint; LoRA adapters merged) is the next round's model.
"""

from __future__ import annotations

import json
from typing import Any

from .context import RoundContext


def _q(value: Any) -> str:
    return json.dumps(value)


def train_overrides(rc: RoundContext, filter_run: str, has_lora: bool) -> list[str]:
    keys = [f"data.train=[{_q(filter_run)}]", f"run.output={_q(rc.dir.join('train').uri)}"]
    keys.append(f"model.name_or_path={_q(rc.model_in)}")
    if not has_lora:
        keys += ["model.reference=model", f"model.reference_path={_q(rc.model_in)}"]
    return keys


def train_round(rc: RoundContext, filter_run: str) -> dict[str, Any]:
    from ..train.config import load_train_config
    from ..train.run import run_training

    t = rc.cfg.train
    base = load_train_config(t.config, t.overrides, check_paths=False)
    cfg = load_train_config(t.config, [*t.overrides, *train_overrides(rc, filter_run, base.model.lora is not None)])
    metrics = run_training(cfg)
    final = (metrics.get("eval") or {}).get("final") or {}
    return {
        "model_out": model_out(metrics, rc),
        "run_dir": rc.dir.join("train").uri,
        "loss_first": metrics.get("training", {}).get("loss_first"),
        "loss_last": metrics.get("training", {}).get("loss_last"),
        "global_step": metrics.get("training", {}).get("global_step"),
        "eval_per_language": final.get("per_language"),
        "eval_groups": final.get("groups"),
        "timings_s": metrics.get("timings_s"),
    }


def model_out(metrics: dict[str, Any], rc: RoundContext) -> str:
    """The exported model (``model/``: full weights, LoRA merged), which vLLM and transformers both load."""
    path = (metrics.get("model") or {}).get("path")
    return path if isinstance(path, str) else rc.dir.join("train", "model").uri
