"""The six stages of one round, in :data:`STAGES` (name, function, outputs). Each reads its inputs from the round
directory, writes its outputs atomically and returns the summary that :mod:`.loop` stores as the stage's completion
record; ``outputs`` are what it writes in the round directory (so a re-run can invalidate them)."""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from .backends import BackendSpec, SamplingSpec
from .config import IterateConfig, resolve_backend
from .context import RoundContext
from .inference import PoolSpec, RenderSpec, derive_seed, run_requests, tokenizer_for

CANDIDATE_SCHEMA = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("lang", pa.string()),
        ("instruction", pa.string()),
        ("prompt", pa.string()),
        ("candidate_index", pa.int32()),
        ("text", pa.string()),
        ("n_tokens", pa.int32()),
        ("finish_reason", pa.string()),
    ]
)
REQUEST_SCHEMA = pa.schema(
    [("request_id", pa.string()), ("user", pa.string()), ("prefix", pa.string()), ("seed", pa.int64())]
)


def backend_spec(cfg: IterateConfig, model_path: str) -> BackendSpec:
    g, v = cfg.generation, cfg.generation.vllm
    initial = model_path == _model_path(cfg.model.name_or_path)
    vllm = v.model_dump(exclude={"ray_data_llm"})
    vllm["dtype"] = v.dtype or cfg.model.dtype
    return BackendSpec(
        kind=resolve_backend(cfg),
        model_path=model_path,
        dtype=cfg.model.dtype,
        revision=cfg.model.revision if initial else None,
        trust_remote_code=cfg.model.trust_remote_code,
        use_gpu=g.gpus_per_actor > 0,
        threads=max(1, int(g.cpus_per_actor)),
        seed=cfg.run.seed,
        vllm=vllm,
    )


def _model_path(name: str) -> str:
    from ..models import resolve_model_path

    return resolve_model_path(name)


def _infer(rc: RoundContext, model_path: str, requests: list[dict], params: SamplingSpec) -> tuple[pa.Table, float]:
    cfg, g = rc.cfg, rc.cfg.generation
    spec = backend_spec(cfg, model_path)
    pool = PoolSpec(g.actors, g.batch_size, g.cpus_per_actor, g.gpus_per_actor, g.vllm.ray_data_llm)
    render = RenderSpec(model_path, spec.revision, spec.trust_remote_code, cfg.model.chat_template)
    t0 = time.perf_counter()
    out = run_requests(pa.Table.from_pylist(requests, schema=REQUEST_SCHEMA), spec, params, pool, render)
    return out, time.perf_counter() - t0


def generate(rc: RoundContext) -> dict[str, Any]:
    from .prompts import round_prompts

    cfg, g = rc.cfg, rc.cfg.generation
    prompts = round_prompts(rc.pool, rc.index, cfg.prompts.per_language_per_round, cfg.run.seed)
    rc.dir.join("prompts.parquet").write_table(pa.Table.from_pylist(prompts))
    requests = [
        {
            "request_id": p["prompt_id"],
            "user": p["prompt"],
            "prefix": "",
            "seed": derive_seed(cfg.run.seed, g.seed, "gen", rc.index, p["prompt_id"]),
        }
        for p in prompts
    ]
    params = SamplingSpec(g.n, g.temperature, g.top_p, g.max_new_tokens)
    out, wall = _infer(rc, rc.model_in, requests, params)
    meta = {p["prompt_id"]: p for p in prompts}
    rows = [
        {
            "prompt_id": o["request_id"],
            "lang": meta[o["request_id"]]["lang"],
            "instruction": meta[o["request_id"]]["prompt"],
            "prompt": o["prompt"],
            "candidate_index": o["index"],
            "text": o["text"],
            "n_tokens": o["n_tokens"],
            "finish_reason": o["finish_reason"],
        }
        for o in out.to_pylist()
    ]
    rows.sort(key=lambda r: (r["prompt_id"], r["candidate_index"]))
    rc.dir.join("candidates.parquet").write_table(pa.Table.from_pylist(rows, schema=CANDIDATE_SCHEMA))
    tokens = sum(r["n_tokens"] for r in rows)
    engine = float(pc.sum(out.column("seconds")).as_py() or 0.0)
    return {
        "backend": resolve_backend(cfg),
        "prompts": len(prompts),
        "candidates": len(rows),
        "empty": sum(not r["text"].strip() for r in rows),
        "tokens": tokens,
        "finish_reasons": dict(Counter(r["finish_reason"] for r in rows)),
        "wall_seconds": round(wall, 3),
        "engine_seconds": round(engine, 3),
        "tokens_per_s_wall": round(tokens / wall, 2) if wall else None,
        "tokens_per_s_engine": round(tokens / engine, 2) if engine else None,
    }


def judge(rc: RoundContext) -> dict[str, Any]:
    from .judge import judge_requests, parse_judgements, score_prefix, templates_by_lang

    cfg, j = rc.cfg, rc.cfg.judge
    judge_path = rc.model_in if j.model == "same" else _model_path(j.model)
    candidates = rc.dir.join("candidates.parquet").read_table().to_pylist()
    prefix, allowed = "", None
    if j.mode == "constrained":
        prefix, allowed = score_prefix(tokenizer_for(judge_path), j.scale_min, j.scale_max)
    shared, per_lang = templates_by_lang(j, None)
    requests = judge_requests(candidates, shared, per_lang, prefix, derive_seed(cfg.run.seed, j.seed), rc.index)
    params = SamplingSpec(j.k, j.temperature, j.top_p, j.max_new_tokens, allowed)
    out, wall = _infer(rc, judge_path, requests.to_pylist(), params)
    judgements = parse_judgements(out, prefix, j.scale_min, j.scale_max)
    rc.dir.join("judgements.parquet").write_table(judgements)
    rows = judgements.to_pylist()
    lang_of = {c["prompt_id"]: c["lang"] for c in candidates}
    per_lang: dict[str, list] = defaultdict(list)
    for r in rows:
        per_lang[lang_of[r["prompt_id"]]].append(r)
    return {
        "judge_model": judge_path,
        "mode": j.mode,
        "judgements": len(rows),
        "candidates_judged": requests.num_rows,
        "statuses": dict(sorted(Counter(r["status"] for r in rows).items())),
        "parse_failure_rate": (sum(r["status"] != "ok" for r in rows) / len(rows)) if rows else None,
        "per_language": {lang: _score_stats(rs) for lang, rs in sorted(per_lang.items())},
        "wall_seconds": round(wall, 3),
    }


def _score_stats(rows: list[dict]) -> dict[str, Any]:
    vals = [r["score"] for r in rows if r["score"] is not None]
    mean = sum(vals) / len(vals) if vals else None
    var = sum((v - mean) ** 2 for v in vals) / len(vals) if vals else None
    return {"n": len(rows), "valid": len(vals), "mean": mean, "std": var**0.5 if var is not None else None}


def pairs(rc: RoundContext) -> dict[str, Any]:
    from .pairing import build_pairs

    candidates = rc.dir.join("candidates.parquet").read_table().to_pylist()
    judgements = rc.dir.join("judgements.parquet").read_table().to_pylist()
    table, dropped, stats = build_pairs(rc.index, candidates, judgements, rc.cfg.pairs, rc.cfg.judge.min_valid)
    rc.dir.join("dropped_prompts.parquet").write_table(dropped)
    if table.num_rows:
        rc.dir.join("pairs", "part-00000.parquet").write_table(table)
    return stats


def _q(value: Any) -> str:
    return json.dumps(value)  # a YAML-safe scalar for --set style overrides


def filter_stage(rc: RoundContext) -> dict[str, Any]:
    from ..config import load_filter_config
    from ..pipeline.filter_run import run_filter

    if not rc.done("pairs")["pairs"]:
        return {"skipped": "no_pairs"}
    f = rc.cfg.filter
    loop_keys = [f"model.name_or_path={_q(rc.model_in)}"]
    base = load_filter_config(f.config, f.overrides, check_paths=False)
    if base.model.lora is None:  # the round's model is the reference (a fresh LoRA's disabled adapter is the same)
        loop_keys += ["model.reference=model", f"model.reference_path={_q(rc.model_in)}"]
    out = rc.dir.join("filter")
    cfg = load_filter_config(f.config, [*f.overrides, *loop_keys], [rc.dir.join("pairs").uri], out.uri)
    manifest = run_filter(cfg)
    counts = manifest["counts"]
    per_lang = counts["per_language"]
    return {
        "run_dir": out.uri,
        "kept_dir": out.join("kept").uri,
        "totals": counts["totals"],
        "per_language": per_lang,
        "kept_fraction": {
            lang: (c["kept"] / (c["kept"] + c["dropped"]) if c["kept"] + c["dropped"] else None)
            for lang, c in per_lang.items()
        },
    }


def train(rc: RoundContext) -> dict[str, Any]:
    from .training import train_round

    filt = rc.done("filter")
    if filt.get("skipped") or not filt["totals"]["kept"]:
        return {"skipped": filt.get("skipped") or "nothing_kept", "model_out": rc.model_in}
    return train_round(rc, filt["run_dir"])


def evaluate(rc: RoundContext) -> dict[str, Any]:
    from .report import round_stats

    records = {s: rc.done(s) for s in STAGE_NAMES if s != "eval"}
    stats = round_stats(rc.index, rc.model_in, records)
    rc.dir.join("stats.json").write_json(stats)
    return {"stats": rc.dir.join("stats.json").uri}


class Stage(NamedTuple):
    name: str
    run: Callable[[RoundContext], dict[str, Any]]
    outputs: tuple[str, ...]  # what it writes in the round directory (directories without a suffix)


STAGES = (
    Stage("generate", generate, ("prompts.parquet", "candidates.parquet")),
    Stage("judge", judge, ("judgements.parquet",)),
    Stage("pairs", pairs, ("pairs", "dropped_prompts.parquet")),
    Stage("filter", filter_stage, ("filter",)),
    Stage("train", train, ("train",)),
    Stage("eval", evaluate, ("stats.json",)),
)
STAGE_NAMES = tuple(s.name for s in STAGES)
