"""The training configuration (``congrad-ray train``): one YAML, validated before Ray starts, every problem at once.

Sections: ``run`` (name, output directory, seed), ``data`` (what to train and evaluate on), ``model`` and ``dpo``
(the same sections as the filter's, so a filter config's model and loss carry over), ``optim``, ``scaling`` (Ray
Train workers), ``checkpoint`` (Ray Train checkpoints and retries) and ``eval`` (held-out per-language evaluation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from ..config import DPOSection, LanguagesSection, ModelSection
from ..config_loading import Command, LoadContext, Section, TopConfig, load_config
from ..models import model_source_problems
from ..storage import has_glob, is_local_path, output_problems


def _listify(v: Any) -> Any:
    return [v] if isinstance(v, str) else v


class TrainRunSection(Section):
    name: str = Field("congrad-dpo", description="the Ray Train run name (checkpoints live under output/ray/NAME)")
    output: str = Field("runs/train", description="run directory: model/, adapter/, metrics.json, eval.png, ray/")
    seed: int = 0
    shared_filesystem: bool = Field(
        False,
        description="local paths (run.output, where Ray Train checkpoints; data.train, data.eval) are on a "
        "filesystem mounted at the same place on every node; without it a multi-node cluster refuses them",
    )


class TrainDataSection(Section):
    train: list[str] = Field(
        default_factory=list,
        description="a filter run directory (its kept/ is used), Parquet files/dirs/globs/URLs, or demo://train",
    )
    eval: list[str] = Field(default_factory=list, description="held-out pairs (Parquet or demo://heldout); may be []")
    id_column: str = "id"
    lang_column: str = "lang"

    @field_validator("train", "eval", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return _listify(v)


class TrainDPOSection(DPOSection):
    """The filter's DPO section (beta, alpha, max_length, truncation_mode) plus reference precomputation."""

    precompute_ref_log_probs: bool = Field(
        False, description="compute log pi_ref once before training (TRL); full fine-tuning then keeps no reference"
    )


class OptimSection(Section):
    learning_rate: float = Field(5e-6, gt=0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    warmup: float = Field(0.0, ge=0, description="warmup steps if >= 1, else a fraction of the total steps")
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    batch_size: int = Field(4, ge=1, description="pairs per worker per micro-step (2x rows: chosen and rejected)")
    gradient_accumulation_steps: int = Field(1, ge=1)
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; overrides epochs when set")
    bf16: bool = Field(False, description="bf16 mixed precision (GPU only)")
    gradient_checkpointing: bool = False
    logging_steps: int = Field(10, ge=1)


class ScalingSection(Section):
    num_workers: int = Field(2, ge=1, description="Ray Train workers (data-parallel replicas)")
    use_gpu: bool = False
    cpus_per_worker: float = Field(0.5, gt=0, description="fractional on small machines so data tasks still run")
    torch_threads: int | None = Field(
        None, ge=1, description="intra-op threads of each worker once its shard is read (None: what Ray gives it)"
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs for an embedded Ray (ignored on a cluster)")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="Ray Train's placement of the workers: PACK fills few nodes, SPREAD uses many"
    )


class CheckpointSection(Section):
    every_steps: int = Field(50, ge=1, description="a Ray Train checkpoint every N optimizer steps (and at the end)")
    num_to_keep: int = Field(2, ge=1)
    max_failures: int = Field(2, ge=-1, description="worker-group restarts from the last checkpoint (-1: unlimited)")


class EvalSection(Section):
    every_steps: int = Field(0, ge=0, description="held-out evaluation every N steps during training (0: only after)")
    batch_size: int = Field(16, ge=1)
    max_pairs_per_language: int | None = Field(None, ge=1, description="cap (by id) for cheap evaluation")
    languages: LanguagesSection = LanguagesSection()
    plot: bool = True


class TrainConfig(TopConfig):
    example: ClassVar[str] = "configs/train-tiny-cpu.yaml"

    run: TrainRunSection = TrainRunSection()
    data: TrainDataSection = TrainDataSection()
    model: ModelSection = ModelSection()
    dpo: TrainDPOSection = TrainDPOSection()
    optim: OptimSection = OptimSection()
    scaling: ScalingSection = ScalingSection()
    checkpoint: CheckpointSection = CheckpointSection()
    eval: EvalSection = EvalSection()

    def problems(self, ctx: LoadContext) -> list[str]:
        return check_train_config(self, ctx)

    @classmethod
    def raw_problems(cls, raw: dict[str, Any], ctx: LoadContext) -> list[str]:
        return _check_raw_sources(raw) if ctx.check_paths else []

    def reference_mode(self) -> str:
        """``auto`` resolved: the base with adapters disabled for LoRA, else a frozen copy of the initial policy."""
        ref = self.model.reference
        if ref == "auto" or (ref == "same" and self.model.lora is not None):
            return "disabled_adapter" if self.model.lora is not None else "same"
        return ref


def check_data_path(path: str, key: str) -> list[str]:
    """A local path must exist; a filter run directory must have finished (manifest.json) and kept something."""
    if path.startswith("demo://"):
        split = path.removeprefix("demo://") or "train"
        return [] if split in ("train", "heldout") else [f"{key}: {path} unknown; use demo://train or demo://heldout"]
    if not is_local_path(path) or has_glob(path):
        return []
    p = Path(path).expanduser()
    if not p.exists():
        return [
            f"{key}: {path} does not exist; point it at a filter run directory or Parquet files (or run `congrad-ray filter` first)"
        ]
    if p.is_dir() and (p / "_state").is_dir() and not (p / "manifest.json").exists():
        return [
            f"{key}: {path} is a filter run that has not finished (no manifest.json); run `congrad-ray filter` on it"
        ]
    if p.is_dir() and (p / "manifest.json").exists() and not any((p / "kept").glob("*.parquet")):
        return [f"{key}: the filter run {path} kept no pairs (kept/ is empty); relax its selection and re-select"]
    return []


def check_train_config(cfg: TrainConfig, ctx: LoadContext) -> list[str]:
    """Checks that span sections, and (``ctx.check_paths``) those that need the outside world; all together."""
    problems = []
    if ctx.check_paths:
        if not cfg.data.train:
            how = ctx.command.how_to_set("data.train")
            problems.append(
                f"data.train is empty: set it to a filter run directory, Parquet paths or demo://train ({how})"
            )
        for p in cfg.data.train:
            problems += check_data_path(p, "data.train")
        for p in cfg.data.eval:
            problems += check_data_path(p, "data.eval")
        problems += model_source_problems(cfg.model.name_or_path, "model.name_or_path")
        problems += output_problems(cfg.run.output, "run.output", ctx.command.how_to_set("run.output"))
    m, ref = cfg.model, cfg.model.reference
    if ref == "columns":
        problems.append(
            "model.reference 'columns' is a filter option; for training set dpo.precompute_ref_log_probs: true "
            "(TRL computes log pi_ref once) and model.reference: auto"
        )
    if ref == "disabled_adapter" and m.lora is None:
        problems.append("model.reference 'disabled_adapter' needs model.lora (or use reference: auto)")
    if ref == "model":
        if not m.reference_path:
            problems.append("model.reference is 'model' but model.reference_path is unset: set it to a checkpoint")
        elif ctx.check_paths:
            problems += model_source_problems(m.reference_path, "model.reference_path", tokenizer=False)
    if ctx.check_paths and m.lora is not None and m.lora.adapter_path:
        problems += model_source_problems(m.lora.adapter_path, "model.lora.adapter_path", adapter=True)
    if cfg.optim.bf16 and not cfg.scaling.use_gpu:
        problems.append("optim.bf16 needs scaling.use_gpu: true; set optim.bf16: false for CPU runs")
    n = cfg.scaling.num_cpus
    if n is not None and not cfg.scaling.use_gpu and cfg.scaling.cpus_per_worker * cfg.scaling.num_workers > n:
        problems.append(
            f"scaling: {cfg.scaling.num_workers} workers x {cfg.scaling.cpus_per_worker} CPUs exceed num_cpus={n}; "
            "lower scaling.cpus_per_worker (fractions such as 0.5 are fine)"
        )
    return problems + cfg.eval.languages.problems("eval.languages")


def _check_raw_sources(raw: dict[str, Any]) -> list[str]:
    """Path checks on a config that failed structural validation, so those problems are reported too."""
    problems = []
    model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    if isinstance(model.get("name_or_path"), str):
        problems += model_source_problems(model["name_or_path"], "model.name_or_path")
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    for key in ("train", "eval"):
        for p in _listify(data.get(key)) or []:
            if isinstance(p, str):
                problems += check_data_path(p, f"data.{key}")
    return problems


TRAIN_COMMAND = Command(flags={"data.train": "--train", "data.eval": "--eval", "run.output": "--output"})


def load_train_config(
    path: str | Path | None,
    overrides: list[str] = (),
    train: list[str] | None = None,
    eval: list[str] | None = None,
    output: str | None = None,
    check_paths: bool = True,
    command: Command = TRAIN_COMMAND,
) -> TrainConfig:
    """:func:`~congrad_ray.config.load_config` for a training config, with ``--train``, ``--eval``, ``--output``."""
    values = {
        "data.train": list(train) if train else None,
        "data.eval": list(eval) if eval else None,
        "run.output": output,
    }
    return load_config(TrainConfig, path, overrides, values, check_paths, command)
