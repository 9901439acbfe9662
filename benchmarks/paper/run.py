"""Orchestration: per seed, build the corpus and model, one sketch pass per sketch configuration (``run_filter``),
cheap re-selections for the selection-side arms (``reselect``), the harness-level baselines, then the same DPO step
(``run_training``) on every arm's kept set, and the measures; finally mean and spread over seeds.

Everything runs in one process on one embedded Ray (or the cluster's, under ``RAY_ADDRESS``). Each arm's kept set is
copied out of the shared filter run directory (a re-selection rewrites ``kept/``), so every arm trains on its own.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from . import arms as arms_mod
from .diagnosis import filter_diagnosis, score_diagnosis
from .measures import Phase, jaccard, kept_set_stats, lm_losses, policy_margins, read_pairs
from .seed_data import SeedData, build_seed
from .settings import SettingConfig, flatten, override_value

ROOT = Path(__file__).resolve().parents[2]


def log(msg: str) -> None:
    print(f"[paper {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ configs


def filter_overrides(cfg: SettingConfig, data: SeedData, seed: int) -> list[str]:
    m = cfg.model
    out = [
        f"model.name_or_path={override_value(data.model_path)}",
        f"model.dtype={m.dtype}",
        f"model.attn_implementation={override_value(m.attn_implementation)}",
        f"run.seed={seed}",
        f"sketch.seed={seed}",
        f"surgery.seed={seed}",
        f"selection.rho={cfg.rho}",
    ]
    # model.lora is the DPO step's adapter; the filter sketches the base model (at the start of a round a fresh
    # adapter is the identity, so policy = base) unless the setting's filter section adds an adapter of its own
    if cfg.num_cpus is not None:
        out.append(f"resources.num_cpus={cfg.num_cpus}")
    out += flatten(cfg.filter)
    return out


def filter_config(cfg: SettingConfig, data: SeedData, seed: int, output: Path, extra: list[str]) -> Any:
    from congrad_ray.config import load_filter_config

    return load_filter_config(None, [*filter_overrides(cfg, data, seed), *extra], [str(data.train_dir)], str(output))


# ------------------------------------------------------------------------------------------------ selections


def _snapshot(run_dir: Path, target: Path) -> Path:
    """Copy a filter run's ``kept/`` and ``dropped/`` out (the next re-selection rewrites them)."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name in ("kept", "dropped"):
        if (run_dir / name).exists():
            shutil.copytree(run_dir / name, target / name)
        else:
            (target / name).mkdir()
    return target / "kept"


def _quota_total(data: SeedData, rho: float) -> int:
    table = read_pairs(data.train_dir, ["lang"])
    counts: dict[str, int] = {}
    for lang in table["lang"].to_pylist():
        counts[lang] = counts.get(lang, 0) + 1
    return sum(math.ceil(rho * n) for n in counts.values())


def filter_selections(cfg: SettingConfig, data: SeedData, seed: int, work: Path, names: list[str]) -> dict[str, Any]:
    """Every filter arm/ablation of ``names``: one ``run_filter`` per sketch configuration, ``reselect`` for the
    others of the same sketch configuration; kept sets copied to ``work/arms/<name>``."""
    from congrad_ray.pipeline.filter_run import reselect, run_filter

    groups: dict[str, list[arms_mod.Arm]] = {}
    for name in names:
        arm = arms_mod.get(name)
        if arm.kind == "filter":
            groups.setdefault(arm.sketch_key, []).append(arm)
    out: dict[str, Any] = {}
    total = _quota_total(data, cfg.rho)
    for key, members in groups.items():
        members.sort(key=lambda a: bool(a.select))  # an arm without selection overrides first: it is run_filter's
        run_dir = work / f"filter-{key}"
        shutil.rmtree(run_dir, ignore_errors=True)
        sketch: dict[str, Any] = {}
        for i, arm in enumerate(members):
            extra = [*arm.sketch, *arm.select]
            if arms_mod.needs_total(arm):
                extra.append(f"selection.top_k={total}")
            fcfg = filter_config(cfg, data, seed, run_dir, extra)
            log(f"seed {seed}: {'sketch + select' if i == 0 else 'reselect'} {arm.name} ({key})")
            with Phase() as ph:
                manifest = run_filter(fcfg, report=False) if i == 0 else reselect(fcfg, report=False)
            timings = manifest["timings_s"]
            if i == 0:
                state = json.loads((run_dir / "_state" / "sketch.json").read_text())
                sketch = {
                    "key": key,
                    "seconds": timings.get("sketch"),
                    "filter_total_s": timings.get("total"),
                    "run_filter": ph.as_dict(),
                    "actor_peak_rss_mb": state.get("actor_peak_rss_mb"),
                    "pairs": state.get("pairs"),
                    "k": fcfg.sketch.k,
                    "scope": fcfg.sketch.scope,
                }
                select_s = (timings.get("total") or ph.seconds) - (timings.get("sketch") or 0.0)
            else:
                select_s = ph.seconds
            kept = _snapshot(run_dir, work / "arms" / arm.name)
            stats = kept_set_stats(kept, data.train_dir)
            direction = manifest.get("direction") or {}
            out[arm.name] = {
                "kind": "filter",
                "kept_dir": str(kept),
                "stats": stats,
                "sketch": sketch,
                "select_s": round(select_s, 3),
                "select_phase": ph.as_dict(),
                "projections": direction.get("projections"),
                "cosine_before": direction.get("cosine_before"),
                "langs": direction.get("langs"),
                "overrides": extra,
                "diagnosis": filter_diagnosis(run_dir, data.train_dir),
            }
    return out


def margin_selection(cfg: SettingConfig, data: SeedData, seed: int, work: Path) -> dict[str, Any]:
    """The loss/margin baseline: the policy's own margin, top rho per language (core ``select``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from congrad_ray.core import SelectionRule, select

    fcfg = filter_config(cfg, data, seed, work / "filter-margin-unused", [])
    table = read_pairs(data.train_dir)
    rows = table.to_pylist()
    log(f"seed {seed}: margin baseline over {len(rows)} pairs")
    with Phase() as ph:
        margins = policy_margins(
            data.model_path,
            rows,
            length_normalized=cfg.margin.length_normalized,
            dtype=cfg.model.dtype,
            attn=cfg.model.attn_implementation,
            device=cfg.device,
            batch_size=cfg.margin.batch_size,
            max_length=fcfg.dpo.max_length,
            truncation_mode=fcfg.dpo.truncation_mode,
        )
        rule = SelectionRule("top_rho", rho=cfg.rho, min_per_language=fcfg.selection.min_per_language, seed=seed)
        decision = select(margins, [r["lang"] for r in rows], [r["id"] for r in rows], rule)
    target = work / "arms" / "margin"
    shutil.rmtree(target, ignore_errors=True)
    table = table.append_column("score", pa.array(margins, pa.float64()))
    table = table.append_column("reason", pa.array(decision.reason.tolist(), pa.string()))
    for name, mask in (("kept", decision.keep), ("dropped", ~decision.keep)):
        (target / name).mkdir(parents=True)
        pq.write_table(table.filter(pa.array(mask)), target / name / "part-00000.parquet")
    stats = kept_set_stats(target / "kept", data.train_dir)
    return {
        "kind": "margin",
        "kept_dir": str(target / "kept"),
        "stats": stats,
        "sketch": {},
        "select_s": round(ph.seconds, 3),
        "select_phase": ph.as_dict(),
        "length_normalized": cfg.margin.length_normalized,
        "diagnosis": score_diagnosis(
            margins, [r["lang"] for r in rows], [r["id"] for r in rows], decision.keep, data.train_dir
        ),
    }


def all_selection(data: SeedData) -> dict[str, Any]:
    return {
        "kind": "all",
        "kept_dir": str(data.train_dir),
        "stats": kept_set_stats(data.train_dir, data.train_dir),
        "sketch": {},
        "select_s": 0.0,
        "select_phase": {},
    }


# ------------------------------------------------------------------------------------------------ one seed


def run_seed(cfg: SettingConfig, seed: int, work: Path, keep_models: bool = False) -> dict[str, Any]:
    from .training import train_arms

    rec: dict[str, Any] = {"seed": seed}
    t_seed = time.perf_counter()
    log(f"seed {seed}: building corpus and model")
    with Phase() as ph:
        data = build_seed(cfg, seed, work)
    rec["build"] = {**ph.as_dict(), **data.build_s, "model_path": data.model_path}
    sft_log = Path(data.model_path) / "sft_log.json"
    if sft_log.exists():
        rec["build"]["sft_log"] = json.loads(sft_log.read_text())
    rec["ground_truth"] = {k: v for k, v in data.ground_truth.items() if k in ("languages", "n_train", "n_heldout")}
    lm_kwargs = {
        "dtype": cfg.model.dtype,
        "attn": cfg.model.attn_implementation,
        "device": cfg.device,
        "batch_size": cfg.eval_batch_size,
    }
    with Phase() as ph:
        rec["lm_before"] = lm_losses(data.model_path, data.prose, **lm_kwargs)
    rec["lm_before_cost"] = ph.as_dict()

    names = list(dict.fromkeys([*cfg.arms, *cfg.ablations]))
    selections: dict[str, Any] = filter_selections(cfg, data, seed, work, names)
    if "margin" in names:
        selections["margin"] = margin_selection(cfg, data, seed, work)
    if "all" in names:
        selections["all"] = all_selection(data)
    reference = selections.get("congrad", {}).get("stats", {}).get("kept_ids")
    for sel in selections.values():
        ids = sel["stats"].pop("kept_ids", [])
        sel["kept_hash"] = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
        sel["jaccard_vs_congrad"] = jaccard(ids, reference) if reference is not None else None
    rec["selections"] = selections

    rec.update(train_arms(cfg, data, seed, work, selections, rec["lm_before"], lm_kwargs, keep_models, log))
    rec["wall_s"] = round(time.perf_counter() - t_seed, 1)
    rec["load_avg_1m"] = round(os.getloadavg()[0], 2)
    (work / "seed.json").write_text(json.dumps(rec, indent=1, default=str))
    log(f"seed {seed}: done in {rec['wall_s']:.0f} s")
    return rec


# ------------------------------------------------------------------------------------------------ the setting


def environment() -> dict[str, Any]:
    import torch

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cuda": torch.cuda.is_available(),
        "platform": platform.platform(),
    }
    try:
        import subprocess

        env["git_sha"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        pass
    return env


def finished_seeds(work: Path, results: Path, cfg: SettingConfig) -> dict[int, dict[str, Any]]:
    """The seeds an earlier run of the same config finished: the committed ``results/results.json`` first, then the
    work directory's ``seed-*/seed.json`` (newer, so it wins). Each seed record is self-contained (its held-out
    per-pair outcomes included), so a run spread over sessions or machines adds seeds by committing results.
    Committed seeds are matched by the config stored beside them (re-hashed now, so a change in what the hash
    covers does not orphan them); work-directory seeds by the hash they were written with."""
    found: dict[int, dict[str, Any]] = {}
    committed = results / "results.json"
    if committed.exists():
        summary = json.loads(committed.read_text())
        if _stored_config_hash(summary.get("config")) == cfg.config_hash():
            found.update({int(rec["seed"]): rec for rec in summary.get("seeds", [])})
    for done in sorted(work.glob("seed-*/seed.json")):
        rec = json.loads(done.read_text())
        if rec.get("config_hash") == cfg.config_hash():
            found[int(rec["seed"])] = rec
    return found


def _stored_config_hash(stored: dict[str, Any] | None) -> str | None:
    from pydantic import ValidationError

    try:
        return SettingConfig.model_validate(stored).config_hash() if stored else None
    except ValidationError:  # written by an older schema: not the same config
        return None


def run_setting(
    cfg: SettingConfig,
    work: Path,
    results: Path,
    *,
    quick: bool = False,
    fresh: bool = True,
    keep_models: bool = False,
) -> dict[str, Any]:
    """Run every seed of the setting; after each finished seed, aggregate the seeds so far and write
    ``results.json``, ``results.md`` and the plots (an interrupted run leaves its finished seeds reported).
    With ``fresh=False`` (``--resume``) the seeds of :func:`finished_seeds` are reused, not re-run."""
    from congrad_ray.ray_env import ensure_ray

    for key, value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(key, value)
    if fresh:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    loads = [round(os.getloadavg()[0], 2)]
    reusable = {} if fresh else finished_seeds(work, results, cfg)
    seeds: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for seed in cfg.seeds:
        if seed in reusable:
            log(f"seed {seed}: reusing the finished seed of an earlier run")
            rec = reusable[seed]
            loads += [rec["load_avg_1m"]] if "load_avg_1m" in rec else []
        else:
            ensure_ray(cfg.num_cpus)
            rec = run_seed(cfg, seed, work / f"seed-{seed}", keep_models)
            rec["config_hash"] = cfg.config_hash()
            (work / f"seed-{seed}" / "seed.json").write_text(json.dumps(rec, indent=1, default=str))
            loads.append(round(os.getloadavg()[0], 2))
        seeds.append(rec)
        summary = _report(cfg, results, seeds, loads, t0, quick)
    log(f"{cfg.setting}: {len(seeds)} seed(s) in {summary['wall_s']:.0f} s; results in {results}")
    return summary


def _report(
    cfg: SettingConfig, results: Path, seeds: list[dict[str, Any]], loads: list[float], t0: float, quick: bool
) -> dict[str, Any]:
    """Aggregate the seeds finished so far and write the report."""
    from .aggregate import aggregate
    from .report import write_report

    summary = {
        "setting": cfg.setting,
        "quick": quick,
        "config": cfg.model_dump(mode="json"),
        "config_hash": cfg.config_hash(),
        "environment": {**environment(), "load_avg_1m_samples": loads},
        # seeds reused from an earlier run (--resume) count with the time they took then
        "wall_s": round(max(time.perf_counter() - t0, sum(float(s["wall_s"]) for s in seeds)), 1),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "seeds": seeds,
    }
    summary["aggregate"] = aggregate(summary)
    write_report(summary, results)
    return summary
