"""After training (a Ray task, on a GPU when training used GPUs): the final model in Hugging Face format and its
held-out evaluation.

* ``model/``: safetensors weights + config + tokenizer, loadable by ``from_pretrained`` and by vLLM; a LoRA run is
  merged into its base (``merge_and_unload``) for this copy;
* ``adapter/``: the LoRA adapter itself (PEFT format, with the tokenizer), for LoRA runs;
* the evaluation reloads ``model/`` from disk, so a model that does not reload fails here, not in production.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..core import DPOParams
from ..models import resolve_model_path
from ..storage import Location
from .config import TrainConfig

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
TRAINING_STATE = ("optimizer.pt", "scheduler.pt", "scaler.pt", "trainer_state.json", "training_args.bin", "README.md")


def export_model(checkpoint_dir: Path, cfg: TrainConfig, out: Path) -> dict[str, Any]:
    """Write ``out/model`` (and ``out/adapter`` for LoRA) from a Trainer checkpoint directory."""
    from ..models import load_model, load_tokenizer

    m = cfg.model
    base_path = resolve_model_path(m.name_or_path)
    tokenizer = load_tokenizer(base_path, m.revision, m.trust_remote_code)
    model_dir, adapter_dir = out / "model", out / "adapter"
    for d in (model_dir, adapter_dir):
        shutil.rmtree(d, ignore_errors=True)
    lora = (checkpoint_dir / "adapter_config.json").exists()
    if lora:
        from peft import PeftModel

        adapter_dir.mkdir(parents=True)
        for name in ADAPTER_FILES:
            shutil.copy2(checkpoint_dir / name, adapter_dir / name)
        tokenizer.save_pretrained(adapter_dir)
        base = load_model(base_path, m.dtype, m.revision, m.trust_remote_code, m.attn_implementation)
        merged = PeftModel.from_pretrained(base, str(checkpoint_dir)).merge_and_unload()
        merged.save_pretrained(model_dir, safe_serialization=True)
    else:
        model_dir.mkdir(parents=True)
        for f in checkpoint_dir.iterdir():
            if f.is_file() and f.name not in TRAINING_STATE and not f.name.startswith("rng_state"):
                shutil.copy2(f, model_dir / f.name)
    tokenizer.save_pretrained(model_dir)
    if not list(model_dir.glob("*.safetensors")):
        raise RuntimeError(f"the exported model in {model_dir} has no safetensors weights")
    return {"lora": lora, "files": sorted(f.name for f in model_dir.iterdir())}


def _reference(cfg: TrainConfig, reference_mode: str) -> Any:
    """The frozen reference: the base (or the initial adapter on it), or ``model.reference_path``."""
    from ..models import load_model

    m = cfg.model
    path = m.reference_path if reference_mode == "model" else m.name_or_path
    model = load_model(resolve_model_path(path), m.dtype, m.revision, m.trust_remote_code, m.attn_implementation)
    if reference_mode != "model" and m.lora is not None and m.lora.adapter_path:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, resolve_model_path(m.lora.adapter_path)).eval()
    return model


def evaluate_model(
    model_dir: str,
    cfg: TrainConfig,
    reference_mode: str,
    heldout: pa.Table,
    groups: dict[str, list[str]],
    pairs_out: Location | None = None,
) -> dict[str, Any]:
    """Per-language / per-group held-out statistics of the saved model in ``model_dir`` against the reference, and
    the policy's own preference accuracy before (the initial policy) and after DPO (``preference``); with
    ``pairs_out``, also every pair's implicit rewards there (``id, lang, chosen_reward, rejected_reward, margin``:
    what paired statistics between runs need)."""
    import torch

    from ..core import preference_accuracy
    from ..models import load_model, load_tokenizer
    from .evaluate import HeldoutSet, heldout_logps, reward_metrics

    device = "cuda" if cfg.scaling.use_gpu and torch.cuda.is_available() else "cpu"
    m, e, d = cfg.model, cfg.eval, cfg.dpo
    tokenizer = load_tokenizer(model_dir)
    held = HeldoutSet.from_table(heldout, tokenizer)
    args = (held, tokenizer.pad_token_id, e.batch_size, d.max_length, d.truncation_mode)
    reference = _reference(cfg, reference_mode).to(device)
    ref_logps, lengths = heldout_logps(reference, *args)
    del reference
    # The reference is the initial policy except with a separate reference model: then the initial one is read too.
    initial_logps = (
        ref_logps if reference_mode != "model" else heldout_logps(_reference(cfg, "same").to(device), *args)[0]
    )
    policy = load_model(model_dir, m.dtype, None, m.trust_remote_code, m.attn_implementation).to(device)
    policy_logps, _ = heldout_logps(policy, *args)
    params = DPOParams(d.beta, d.alpha)
    if pairs_out is not None:
        from ..core import lp_dpo_terms

        terms = lp_dpo_terms(policy_logps, ref_logps, lengths, params)
        w, lo = terms.chosen_reward.double(), terms.rejected_reward.double()
        pairs_out.write_table(
            pa.table(
                {
                    "id": pa.array(held.ids, pa.string()),
                    "lang": pa.array(held.langs, pa.string()),
                    "chosen_reward": pa.array(w.numpy()),
                    "rejected_reward": pa.array(lo.numpy()),
                    "margin": pa.array((w - lo).numpy()),
                }
            )
        )
    out = reward_metrics(policy_logps, ref_logps, lengths, held.langs, params, groups)
    out["preference"] = {
        "before": preference_accuracy(initial_logps, lengths, held.langs, groups),
        "after": preference_accuracy(policy_logps, lengths, held.langs, groups),
    }
    return out


def finalize(
    cfg: TrainConfig,
    reference_mode: str,
    checkpoint: Any,
    heldout: pa.Table | None,
    groups: dict[str, list[str]],
) -> dict[str, Any]:
    """Export the model of a Ray Train checkpoint to ``run.output`` and evaluate it; returns the results."""
    import pyarrow.fs as pafs

    out = Location.of(cfg.run.output)
    local = isinstance(out.fs, pafs.LocalFileSystem)
    staging = Path(out.path) if local else Path(tempfile.mkdtemp(prefix="congrad-export-"))
    with checkpoint.as_directory() as directory:
        exported = export_model(Path(directory) / "checkpoint", cfg, staging)
    result: dict[str, Any] = {
        "model": {
            "path": out.join("model").uri,
            "adapter": out.join("adapter").uri if exported["lora"] else None,
            "merged_lora": exported["lora"],
            "files": exported["files"],
            "format": "safetensors",
        }
    }
    if heldout is not None and heldout.num_rows:
        pairs = out.join("eval_pairs.parquet")
        result["final"] = evaluate_model(str(staging / "model"), cfg, reference_mode, heldout, groups, pairs)
        result["final"]["pairs"] = pairs.uri
    if not local:
        for name in ("model", "adapter"):
            if (staging / name).exists():
                out.join(name).delete_dir()
                pafs.copy_files(str(staging / name), out.join(name).path, destination_filesystem=out.fs)
        shutil.rmtree(staging, ignore_errors=True)
    return result
