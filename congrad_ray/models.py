"""Models and tokenizers: a tiny offline factory (tests, demo, benchmarks), ``tiny://`` URIs resolved to a cached
checkpoint, and the real ``from_pretrained`` path."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from .errors import ConfigError

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# A little text in several scripts so the byte-level BPE merges common pieces of each.
SEED_CORPUS = [
    "The quick brown fox jumps over the lazy dog. Answer briefly and politely.",
    "Le renard brun saute par-dessus le chien paresseux. Réponds brièvement et poliment.",
    "Der schnelle braune Fuchs springt über den faulen Hund. Antworte kurz und höflich.",
    "El rápido zorro marrón salta sobre el perro perezoso. Responde breve y cortésmente.",
    "Быстрая коричневая лиса прыгает через ленивую собаку. Отвечай кратко и вежливо.",
    "Mbweha mwepesi wa kahawia anaruka juu ya mbwa mvivu. Jibu kwa ufupi na kwa adabu.",
    "敏捷的棕色狐狸跳过了懒狗。请简短而礼貌地回答。",
    "素早い茶色の狐が怠け者の犬を飛び越える。簡潔に丁寧に答えてください。",
    "الثعلب البني السريع يقفز فوق الكلب الكسول. أجب باختصار وبأدب.",
    "तेज़ भूरी लोमड़ी आलसी कुत्ते के ऊपर कूदती है। संक्षेप में और विनम्रता से उत्तर दें।",
]


@dataclass(frozen=True)
class TinyModelSpec:
    """A tiny random causal LM. The defaults give head_dim 64, which vLLM's CPU backend accepts."""

    arch: str = "llama"
    vocab_size: int = 512
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    num_key_value_heads: int = 1
    max_position_embeddings: int = 1024
    seed: int = 0


def default_tokenizer_corpus() -> list[str]:
    """Seed sentences, digit runs and the demo corpus's phrasings: the text the tiny tokenizer is trained on."""
    from .demo import demo_tokenizer_corpus

    digits = [" ".join(str(n) for n in range(start, start + 12)) for start in range(0, 100, 6)]
    return SEED_CORPUS + digits + demo_tokenizer_corpus()


def build_tiny_tokenizer(corpus: Iterable[str] | None = None, vocab_size: int = 512) -> Any:
    """A byte-level BPE tokenizer trained offline in well under a second, with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus if corpus is not None else default_tokenizer_corpus()), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|pad|>", chat_template=CHAT_TEMPLATE
    )


def build_tiny_model(tokenizer: Any, spec: TinyModelSpec = TinyModelSpec()) -> Any:
    """A randomly initialised (seeded) Llama or Qwen2 causal LM sized by ``spec``, in float32."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    classes = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}
    if spec.arch not in classes:
        raise ValueError(f"unknown tiny arch {spec.arch!r}: use one of {sorted(classes)}")
    config_cls, model_cls = classes[spec.arch]
    config = config_cls(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    import torch

    torch.manual_seed(spec.seed)
    return model_cls(config).eval()


def save_tiny_model(
    directory: str | Path, spec: TinyModelSpec = TinyModelSpec(), corpus: Iterable[str] = SEED_CORPUS
) -> Path:
    """Build the tiny tokenizer and model and save both (safetensors) to ``directory``; returns it."""
    directory = Path(directory)
    tokenizer = build_tiny_tokenizer(corpus, spec.vocab_size)
    model = build_tiny_model(tokenizer, spec)
    directory.mkdir(parents=True, exist_ok=True)
    quiet_progress_bars()
    tokenizer.save_pretrained(directory)
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def cache_dir() -> Path:
    return Path(os.environ.get("CONGRAD_RAY_CACHE", Path.home() / ".cache" / "congrad-ray"))


TINY_ARCHS = ("llama", "qwen2")


def tiny_spec(uri: str) -> TinyModelSpec:
    """``tiny://llama?seed=1&hidden_size=64`` -> :class:`TinyModelSpec`; ``ValueError`` naming the fix otherwise."""
    arch, _, query = uri.removeprefix("tiny://").partition("?")
    if arch not in TINY_ARCHS:
        raise ValueError(f"unknown tiny model {uri!r}; use tiny://llama or tiny://qwen2")
    options = sorted(f.name for f in fields(TinyModelSpec) if f.name != "arch")
    values: dict[str, Any] = {"arch": arch}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in options:
            raise ValueError(f"tiny model option {key!r} in {uri!r} unknown; use one of {', '.join(options)}")
        if not value.isdigit() or int(value) < (0 if key == "seed" else 1):
            raise ValueError(f"tiny model option {key}={value!r} in {uri!r} must be a positive integer")
        values[key] = int(value)
    return TinyModelSpec(**values)


WEIGHT_GLOBS = ("*.safetensors", "*.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


def model_source_problems(name: str, key: str, tokenizer: bool = True, adapter: bool = False) -> list[str]:
    """What is wrong with a model source, checked before Ray starts: a ``tiny://`` URI must parse; a local
    directory must hold a Hugging Face checkpoint (``config.json``, safetensors weights and, when ``tokenizer``, a
    tokenizer) or, when ``adapter``, a PEFT adapter. A hub id passes (it is resolved where it is loaded)."""
    if name.startswith("tiny://"):
        try:
            tiny_spec(name)
        except ValueError as e:
            return [f"{key}: {e}"]
        return []
    if not (name.startswith(("/", "./", "../", "~")) or Path(name).exists()):
        return []  # a hub id
    path = Path(name).expanduser()
    if not path.is_dir():
        if adapter:
            return [f"{key}: adapter directory {name} does not exist; point it at a saved PEFT adapter"]
        return [f"{key}: model directory {name} does not exist; point it at a saved checkpoint or a hub id"]
    if adapter:
        if not (path / "adapter_config.json").is_file():
            return [f"{key}: {name} has no adapter_config.json; point it at a saved PEFT adapter directory"]
        return []
    if not (path / "config.json").is_file():
        return [f"{key}: {name} has no config.json; is it a Hugging Face checkpoint directory?"]
    problems = []
    if not any(any(path.glob(g)) for g in WEIGHT_GLOBS):
        problems.append(
            f"{key}: {name} has no safetensors weights (*.safetensors); save the model there with "
            "save_pretrained(safe_serialization=True)"
        )
    if tokenizer and not any((path / f).is_file() for f in TOKENIZER_FILES):
        problems.append(f"{key}: {name} has no tokenizer ({' / '.join(TOKENIZER_FILES)}); save the tokenizer there")
    return problems


def resolve_model_path(name_or_path: str) -> str:
    """A ``tiny://`` model is built once per machine into the cache (atomically); other names pass through."""
    if not name_or_path.startswith("tiny://"):
        return name_or_path
    spec = tiny_spec(name_or_path)
    digest = hashlib.sha256(repr(sorted(asdict(spec).items())).encode()).hexdigest()[:12]
    target = cache_dir() / "tiny" / f"{spec.arch}-{digest}"
    if not (target / "model.safetensors").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".build-"))
        save_tiny_model(tmp, spec)
        try:
            tmp.rename(target)
        except OSError:  # another process won the race; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def load_tokenizer(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False) -> Any:
    """``AutoTokenizer`` with a pad token (EOS when the checkpoint has none)."""
    from transformers import AutoTokenizer

    with checkpoint_errors(name_or_path, "tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def quiet_progress_bars() -> None:
    """Turn off transformers' progress bars (loading weights, writing model shards) in this process: made for an
    interactive shell, they become a stream of lines from every actor and worker (``CONGRAD_RAY_VERBOSE=1`` keeps
    them)."""
    if os.environ.get("CONGRAD_RAY_VERBOSE", "") in ("", "0"):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def load_model(
    name_or_path: str,
    dtype: str = "float32",
    revision: str | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str | None = "sdpa",
) -> Any:
    """A causal LM from a local directory or hub id, safetensors only, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    quiet_progress_bars()
    with checkpoint_errors(name_or_path, "model"):
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path,
            revision=revision,
            dtype=getattr(torch, dtype),
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
            attn_implementation=attn_implementation,
        )
    return model.eval()


def check_loadable(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False) -> None:
    """Load what is cheap to load of a checkpoint (its config and tokenizer), so that a broken one is reported
    before Ray starts rather than from a worker; the weights are loaded by the workers."""
    from transformers import AutoConfig

    path = resolve_model_path(name_or_path)
    with checkpoint_errors(name_or_path, "model"):
        AutoConfig.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    load_tokenizer(path, revision, trust_remote_code)


@contextmanager
def checkpoint_errors(name_or_path: str, what: str) -> Iterator[None]:
    """A checkpoint that cannot be loaded (missing or corrupt files, an unknown architecture, remote code refused)
    as a one-line :class:`~congrad_ray.errors.ConfigError` naming it, also inside a Ray worker."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, ValueError, SafetensorError) as e:
        reason = (" ".join(str(e).split()) or type(e).__name__)[:300]
        raise ConfigError([f"cannot load the {what} at {name_or_path}: {reason}"]) from e


def add_lora(
    model: Any,
    rank: int = 8,
    alpha: int = 16,
    target_modules: list[str] | str = "all-linear",
    init_weights: bool = True,
) -> Any:
    """Wrap ``model`` with a fresh PEFT LoRA adapter (dropout 0); ``init_weights=False`` randomises ``lora_B`` too."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules=target_modules,
        task_type="CAUSAL_LM",
        init_lora_weights=init_weights,
    )
    return get_peft_model(model, config).eval()
