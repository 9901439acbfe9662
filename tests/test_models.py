"""The tiny factory and the real from_pretrained path, on a model saved to disk."""

from __future__ import annotations

import pytest
import torch

from congrad_ray.errors import ConfigError
from congrad_ray.models import TinyModelSpec, build_tiny_model, build_tiny_tokenizer, load_model, load_tokenizer


def test_saved_tiny_model_reloads_identically(tiny_dir, reference_model):
    assert (tiny_dir / "model.safetensors").exists()
    rebuilt = build_tiny_model(load_tokenizer(str(tiny_dir)), TinyModelSpec())
    for (name, a), (_, b) in zip(rebuilt.state_dict().items(), reference_model.state_dict().items()):
        assert torch.equal(a, b), name
    assert not reference_model.training


def test_tiny_tokenizer_is_deterministic_and_has_chat_template():
    a, b = build_tiny_tokenizer(), build_tiny_tokenizer()
    text = "Bonjour 世界 — привет"
    assert a(text)["input_ids"] == b(text)["input_ids"]
    assert a.decode(a(text)["input_ids"]) == text
    rendered = a.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert rendered.endswith("<|im_start|>assistant\n")


def test_only_safetensors_are_loaded(tiny_dir, tmp_path):
    import shutil

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_dir, pickled)
    model = load_model(str(tiny_dir))
    (pickled / "model.safetensors").unlink()
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(ConfigError, match=f"cannot load the model at {pickled}"):
        load_model(str(pickled))


def test_remote_code_is_refused_by_default(tiny_dir, tmp_path):
    import json
    import shutil

    custom = tmp_path / "custom"
    shutil.copytree(tiny_dir, custom)
    config = json.loads((custom / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    config["model_type"] = "evil-unknown"
    (custom / "config.json").write_text(json.dumps(config))
    (custom / "modeling_evil.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(ConfigError, match="cannot load the model at"):
        load_model(str(custom))


def test_bf16_dtype_and_missing_path(tiny_dir):
    assert load_model(str(tiny_dir), dtype="bfloat16").dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="cannot load the model at /nonexistent/model-dir"):
        load_model("/nonexistent/model-dir")


def test_fresh_lora_adapter_is_the_same_on_every_actor(tmp_path):
    """A fresh adapter's random lora_A is drawn from the sketch seed: two engines built from one config (two actors)
    hold identical adapters, so their lora-scope sketches agree; another seed draws another adapter."""
    from congrad_ray.config import load_filter_config
    from congrad_ray.engine import SketchEngine

    def engine(seed: int) -> SketchEngine:
        overrides = [
            "model.name_or_path=tiny://llama?hidden_size=32&intermediate_size=64",
            "model.lora={rank: 4, alpha: 8}",
            "sketch.scope=lora",
            f"sketch.seed={seed}",
        ]
        return SketchEngine.from_config(load_filter_config(None, overrides, ["demo://train"], str(tmp_path)))

    def adapter(e: SketchEngine) -> dict:
        return {n: p.detach().clone() for n, p in e.policy.named_parameters() if "lora_" in n}

    torch.manual_seed(1)
    a = adapter(engine(0))
    torch.manual_seed(2)  # the global RNG state of the process must not matter
    b = adapter(engine(0))
    c = adapter(engine(1))
    assert a and a.keys() == b.keys()
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a if "lora_A" in n)
