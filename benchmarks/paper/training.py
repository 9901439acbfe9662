"""The DPO step of every arm, under each training protocol, and what is kept of it (accuracy, tax, per-pair outcomes).

Two protocols (``SettingConfig.protocols``):

* ``steps``: every arm takes the same ``train.optim.max_steps`` optimizer steps ``S`` (equal compute): a kept half
  is seen twice as often as all the data;
* ``epochs``: every arm makes the same number of passes ``E`` over its own kept set, with ``E = S * B / N``
  (``B`` pairs per optimizer step, ``N`` input pairs), so the all-data arm is the same training under both
  protocols and a filtered half takes half the steps (equal data passes; filtering then also saves compute).

The per-pair held-out outcomes (``eval_pairs.parquet`` of each training run: the implicit reward margin of every
held-out pair) are kept in the seed record for the paired bootstrap intervals (:mod:`.aggregate`).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

from .measures import Phase, accuracy_figures, lm_losses, read_pairs
from .seed_data import SeedData
from .settings import SettingConfig, flatten, override_value

PROTOCOLS = ("steps", "epochs")


def train_config(
    cfg: SettingConfig, data: SeedData, seed: int, arm: str, kept: Path, output: Path, extra: list[str] = ()
) -> Any:
    from congrad_ray.train import load_train_config

    m = cfg.model
    overrides = [
        f"model.name_or_path={override_value(data.model_path)}",
        f"model.dtype={m.dtype}",
        f"model.attn_implementation={override_value(m.attn_implementation)}",
        f"run.name={arm}",
        f"run.seed={seed}",
        f"eval.languages.seen={override_value(list(cfg.corpus.seen))}",
        f"eval.languages.unseen={override_value(list(cfg.corpus.unseen))}",
        "eval.plot=false",
    ]
    if m.lora is not None:
        overrides.append(f"model.lora={override_value(m.lora)}")
    if cfg.num_cpus is not None:
        overrides.append(f"scaling.num_cpus={cfg.num_cpus}")
    overrides += flatten(cfg.train) + list(extra)
    return load_train_config(None, overrides, train=[str(kept)], eval=[str(data.heldout_dir)], output=str(output))


def record_key(protocol: str) -> str:
    """Where a seed record keeps the trainings of a protocol (``train`` for ``steps``: older results read on)."""
    return "train" if protocol == "steps" else f"train_{protocol}"


def epochs_for(tcfg: Any, n_input: int) -> float:
    """``E = S * B / N`` from a resolved training config: the passes over all ``N`` input pairs that its ``S`` steps
    of ``B`` pairs (per-worker batch x accumulation x workers) make."""
    o = tcfg.optim
    per_step = o.batch_size * o.gradient_accumulation_steps * tcfg.scaling.num_workers
    return o.max_steps * per_step / max(1, n_input)


def protocol_overrides(tcfg: Any, protocol: str, n_input: int) -> list[str]:
    """The training overrides of ``protocol`` on top of the setting's (steps) training config ``tcfg``."""
    if protocol == "steps":
        return []
    if protocol == "epochs":
        return ["optim.max_steps=null", f"optim.epochs={epochs_for(tcfg, n_input)!r}"]
    raise ValueError(f"unknown protocol {protocol!r}: use one of {PROTOCOLS}")


def heldout_outcomes(train_dir: Path) -> dict[str, list] | None:
    """``{id, lang, margin}`` lists of a training run's held-out pairs, sorted by (lang, id)."""
    import pyarrow.parquet as pq

    path = train_dir / "eval_pairs.parquet"
    if not path.exists():
        return None
    table = pq.read_table(path)
    rows = sorted(table.select(["id", "lang", "margin"]).to_pylist(), key=lambda r: (r["lang"], r["id"]))
    return {key: [r[key] for r in rows] for key in ("id", "lang", "margin")}


def train_arms(
    cfg: SettingConfig,
    data: Any,
    seed: int,
    work: Path,
    selections: dict[str, Any],
    lm_before: dict[str, float],
    lm_kwargs: dict[str, Any],
    keep_models: bool,
    log: Any,
) -> dict[str, dict[str, Any]]:
    """``{record_key(protocol): {arm: figures}}`` for every protocol of the setting and every arm to train."""
    from congrad_ray.train.run import max_steps, run_training

    to_train = [*cfg.arms, *(cfg.ablations if cfg.ablation_dpo else [])]
    n_input = read_pairs(data.train_dir, ["id"]).num_rows
    out: dict[str, dict[str, Any]] = {}
    done: dict[tuple[str, int], tuple[str, str]] = {}  # (kept set, steps) -> (protocol, arm) already trained
    for protocol in cfg.protocols:
        trained: dict[str, Any] = {}
        for name in to_train:
            sel = selections[name]
            out_dir = work / "train" / (name if protocol == "steps" else f"{name}-{protocol}")
            base = train_config(cfg, data, seed, name, Path(sel["kept_dir"]), out_dir)
            extra = protocol_overrides(base, protocol, n_input)
            tcfg = train_config(cfg, data, seed, name, Path(sel["kept_dir"]), out_dir, extra) if extra else base
            workers = tcfg.scaling.num_workers
            steps = max_steps(tcfg, math.ceil(sel["stats"]["kept"]["n"] / workers))
            same = done.get((sel["kept_hash"], steps))
            if same is not None:  # the same pairs for the same steps: the (deterministic) training is not redone
                prev_protocol, prev = same
                first = (trained if prev_protocol == protocol else out[record_key(prev_protocol)])[prev]
                trained[name] = {**first, "same_kept_set_as": prev, "same_as": [prev_protocol, prev]}
                log(f"seed {seed}: {name} ({protocol}) trains as {prev} ({prev_protocol}); reused")
                continue
            log(f"seed {seed}: DPO on {name} ({sel['stats']['kept']['n']} pairs, {protocol}: {steps} steps)")
            trained[name] = train_one(tcfg, data, lm_before, lm_kwargs, run_training)
            trained[name]["protocol"] = protocol
            done[(sel["kept_hash"], steps)] = (protocol, name)
            if not keep_models:
                for sub in ("model", "adapter", "ray"):
                    shutil.rmtree(out_dir / sub, ignore_errors=True)
        out[record_key(protocol)] = trained
    return out


def train_one(tcfg: Any, data: Any, lm_before: dict[str, float], lm_kwargs: dict[str, Any], run_training: Any):
    seen, unseen = tcfg.eval.languages.seen, tcfg.eval.languages.unseen
    with Phase() as ph:
        metrics = run_training(tcfg, fresh=True)
    acc = accuracy_figures(metrics, seen, unseen)
    with Phase() as ph_lm:
        after = lm_losses(metrics["model"]["path"], data.prose, **lm_kwargs)
    t = metrics["training"]
    return {
        **acc,
        "lm_after": after,
        "tax": {lang: after[lang] - lm_before[lang] for lang in after if lang in lm_before},
        "train_phase": ph.as_dict(),
        "train_timings_s": metrics["timings_s"],
        "lm_eval_s": round(ph_lm.seconds, 3),
        "global_step": t["global_step"],
        "loss_first": t["loss_first"],
        "loss_last": t["loss_last"],
        "train_pairs": metrics["data"]["train"]["valid"],
        "heldout_pairs": heldout_outcomes(Path(tcfg.run.output)),
    }
