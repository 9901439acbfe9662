"""Batch inference on Ray Data: render requests with the model's chat template, generate, return one row per
completion. Used by both the generation and the judge stage.

Requests are rows ``request_id, user, prefix, seed``: ``user`` is the user message, ``prefix`` text the assistant
turn starts with (the constrained judge's ``Score:``), ``seed`` the request's own seed. The result has
``request_id, prompt`` (the rendered text the model saw), ``index, text, n_tokens, finish_reason, seconds``.

Paths: GPU + ``ray.data.llm`` importable (``generation.vllm.ray_data_llm: auto|on``): Ray Data's vLLM processor
(``build_processor`` with ``vLLMEngineProcessorConfig``; one row per candidate, as the processor keeps one output per
row). Otherwise :class:`~.backends.GenerateActor` (transformers or plain ``vllm.LLM``) in an actor pool.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from .backends import OUTPUT_SCHEMA, BackendSpec, GenerateActor, SamplingSpec
from .config import RENDER_CPUS

_TOKENIZERS: dict[str, Any] = {}


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from the parts (sha256 of their repr): far apart for neighbouring requests, as vLLM seeds
    a request's ``n`` samples with consecutive values."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "big") & 0x7FFFFFFF


def tokenizer_for(path: str, revision: str | None = None, trust_remote_code: bool = False) -> Any:
    key = f"{path}@{revision}"
    if key not in _TOKENIZERS:
        from ..models import load_tokenizer

        _TOKENIZERS[key] = load_tokenizer(path, revision, trust_remote_code)
    return _TOKENIZERS[key]


def render_prompt(tokenizer: Any, user: str, chat_template: str = "auto", prefix: str = "") -> str:
    """The text the model sees: the chat template with a generation prompt when the tokenizer has one (and
    ``chat_template`` is not ``never``), else ``user`` as is; then ``prefix``. A BOS the template writes is removed
    when the tokenizer adds one itself, so the prompt is tokenised exactly as TRL and the filter tokenise it."""
    if chat_template != "never" and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
        )
        bos = tokenizer.bos_token
        if bos and text.startswith(bos) and tokenizer("x").input_ids[:1] == [tokenizer.bos_token_id]:
            text = text[len(bos) :]
    else:
        text = user
    return text + prefix


@dataclass(frozen=True)
class RenderSpec:
    tokenizer_path: str
    revision: str | None
    trust_remote_code: bool
    chat_template: str


def render_batch(batch: pa.Table, spec: RenderSpec) -> pa.Table:
    """Ray Data ``map_batches`` body: adds ``prompt``."""
    tok = tokenizer_for(spec.tokenizer_path, spec.revision, spec.trust_remote_code)
    users, prefixes = batch.column("user").to_pylist(), batch.column("prefix").to_pylist()
    prompts = [render_prompt(tok, u, spec.chat_template, p) for u, p in zip(users, prefixes)]
    return batch.append_column("prompt", pa.array(prompts, pa.string()))


@dataclass(frozen=True)
class PoolSpec:
    actors: int = 1
    batch_size: int = 8
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    ray_data_llm: str = "auto"  # auto | on | off


def use_ray_data_llm(backend: BackendSpec, pool: PoolSpec) -> bool:
    if backend.kind != "vllm" or pool.ray_data_llm == "off":
        return False
    if pool.ray_data_llm == "on":
        return True
    if pool.gpus_per_actor <= 0:
        return False
    try:
        import ray.data.llm  # noqa: F401
    except ImportError:
        return False
    return True


def run_requests(
    requests: pa.Table, backend: BackendSpec, params: SamplingSpec, pool: PoolSpec, render: RenderSpec
) -> pa.Table:
    """Generate ``params.n`` completions for every request (embedded or cluster Ray must be up)."""
    import ray.data

    if requests.num_rows == 0:
        return OUTPUT_SCHEMA.empty_table()
    blocks = max(1, min(requests.num_rows, pool.actors * 4))
    ds = ray.data.from_arrow(requests).repartition(blocks)
    ds = ds.map_batches(render_batch, batch_format="pyarrow", fn_kwargs={"spec": render}, num_cpus=RENDER_CPUS)
    if use_ray_data_llm(backend, pool):
        return _ray_data_llm(ds, backend, params, pool)
    out = ds.map_batches(
        GenerateActor,
        fn_constructor_args=(backend, params),
        batch_format="pyarrow",
        batch_size=pool.batch_size,
        compute=ray.data.ActorPoolStrategy(size=pool.actors),
        num_cpus=pool.cpus_per_actor,
        num_gpus=pool.gpus_per_actor or None,
    )
    tables = ray.get(out.to_arrow_refs())
    return pa.concat_tables([t.cast(OUTPUT_SCHEMA) for t in tables]) if tables else OUTPUT_SCHEMA.empty_table()


def _ray_data_llm(ds: Any, backend: BackendSpec, params: SamplingSpec, pool: PoolSpec) -> pa.Table:
    """GPU clusters: Ray Data's vLLM processor; each candidate is its own row (seed + index)."""
    import ray.data.llm as rdl

    build = getattr(rdl, "build_processor", None) or rdl.build_llm_processor
    opts = {k: v for k, v in backend.vllm.items() if k not in ("in_process", "kv_cache_space_gib", "ray_data_llm")}
    engine_kwargs = {**{k: v for k, v in opts.items() if k != "engine_kwargs" and v is not None}}
    engine_kwargs.update(opts.get("engine_kwargs") or {})
    engine_kwargs.setdefault("trust_remote_code", backend.trust_remote_code)
    config = rdl.vLLMEngineProcessorConfig(
        model_source=backend.model_path,
        engine_kwargs=engine_kwargs,
        concurrency=pool.actors,
        batch_size=pool.batch_size,
        chat_template_stage=False,
        tokenize_stage=False,
        detokenize_stage=False,
    )
    n = params.n
    greedy = params.temperature == 0
    allowed = list(params.allowed_token_ids) if params.allowed_token_ids else None
    max_tokens = 1 if allowed else params.max_new_tokens

    def explode(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        reps = 1 if greedy else n
        out = {k: np.repeat(v, reps) for k, v in batch.items()}
        out["index"] = np.tile(np.arange(reps), len(batch["request_id"]))
        out["seed"] = (out["seed"].astype(np.int64) + out["index"] * 7919) & 0x7FFFFFFF
        return out

    def pre(row: dict) -> dict:
        sampling = {"n": 1, "temperature": params.temperature, "top_p": params.top_p, "max_tokens": max_tokens}
        sampling["seed"] = int(row["seed"])
        if allowed:
            sampling["allowed_token_ids"] = allowed
        # the processor carries the other columns (request_id, index) through to postprocess
        return {"prompt": row["prompt"], "sampling_params": sampling}

    def post(row: dict) -> dict:
        k = int(row.get("num_generated_tokens") or 0)
        return {
            "request_id": row["request_id"],
            "prompt": row["prompt"],
            "index": int(row["index"]),
            "text": row["generated_text"],
            "n_tokens": k,
            "finish_reason": "length" if k >= max_tokens else "stop",
            "seconds": 0.0,
        }

    processor = build(config, preprocess=pre, postprocess=post)
    rows = processor(ds.map_batches(explode, batch_format="numpy")).take_all()
    if greedy and n > 1:
        rows = [{**r, "index": j} for r in rows for j in range(n)]
    return pa.Table.from_pylist(rows, schema=OUTPUT_SCHEMA)
