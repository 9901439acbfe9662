"""The run configuration: one YAML, validated once before Ray starts, with every error reported together.

Each section mirrors a step of DESIGN.md; every choice the paper leaves open is an option with a documented default.
``load_config(path, overrides)`` applies ``--set dotted.key=value`` overrides, validates the structure (pydantic,
unknown keys refused), then checks what can be checked before any work starts (paths, model directory, resources),
and raises one :class:`ConfigError` listing every problem with its fix.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .storage import missing_local_path


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunSection(Section):
    name: str = "congrad"
    output: str = Field("runs/congrad", description="run directory (local path or pyarrow/fsspec URL)")
    seed: int = 0


class InputSection(Section):
    paths: list[str] = Field(default_factory=list, description="Parquet files, directories or globs; local or URLs")
    id_column: str = "id"
    lang_column: str = "lang"
    ref_chosen_column: str = "ref_chosen_logps"
    ref_rejected_column: str = "ref_rejected_logps"
    rows_per_unit: int = Field(4096, ge=1, description="rows read and validated per task")
    truth_column: str | None = Field(
        "is_flipped",
        description="ground truth, when the input has it: a boolean column, True for a pair known to conflict (the "
        "demo corpus's is_flipped; benchmarks, audits). Only the report reads it (known conflicts dropped vs clean "
        "pairs, how the scores separate them per language); the filter never does. Absent from the input, or null: "
        "no ground-truth section",
    )

    @field_validator("paths", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class LoraSection(Section):
    rank: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    target_modules: list[str] | str = "all-linear"
    adapter_path: str | None = Field(None, description="an existing adapter to load instead of a fresh one")


class ModelSection(Section):
    name_or_path: str = Field("tiny://llama", description="local dir, hub id, or tiny://llama|qwen2 (offline demo)")
    revision: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    trust_remote_code: bool = False
    attn_implementation: str | None = "sdpa"
    lora: LoraSection | None = None
    reference: Literal["auto", "same", "model", "disabled_adapter", "columns"] = Field(
        "auto",
        description="auto: disabled_adapter for LoRA, else columns when present, else same; "
        "same: the policy itself; model: reference_path; columns: precomputed ref log-prob columns",
    )
    reference_path: str | None = None


class SketchSection(Section):
    k: int = Field(4096, description="sketch width (power of two)")
    seed: int = 0
    scope: Literal["linear", "lora", "last_k"] = "linear"
    last_k: int = Field(2, ge=1)
    buckets: int | Literal["auto"] = Field(
        "auto",
        description="id-hash buckets: the unit of sketch work, resume and determinism; auto = rows / rows_per_bucket",
    )
    rows_per_bucket: int = Field(1024, ge=1, description="target bucket size when buckets is auto")
    route: Literal["auto", "fft", "explicit"] = Field(
        "auto",
        description="per-layer sketch of per-sample weight gradients: fft (TensorSketch, never forms a per-sample "
        "gradient), explicit (forms one layer's per-sample blocks, bounded, then hashes), auto (the cheaper: fft for "
        "wide layers, explicit when d_out*d_in is below ~25 k log2 k)",
    )

    @field_validator("buckets")
    @classmethod
    def _positive(cls, b: int | str) -> int | str:
        if isinstance(b, int) and b < 1:
            raise ValueError(f"must be >= 1 or 'auto' (got {b})")
        return b

    @field_validator("k")
    @classmethod
    def _power_of_two(cls, k: int) -> int:
        if k < 2 or k & (k - 1):
            raise ValueError(f"must be a power of two such as 1024, 4096 or 8192 (got {k})")
        return k


class DPOSection(Section):
    beta: float = Field(0.1, gt=0)
    alpha: float = Field(0.0, description="LP-DPO length term; 0 = plain DPO")
    max_length: int | None = Field(1024, ge=2)
    truncation_mode: Literal["keep_start", "keep_end"] = "keep_start"


class LanguagesSection(Section):
    seen: Literal["infer"] | list[str] = "infer"
    unseen: list[str] = Field(default_factory=list, description="evaluation-only languages: never kept, no direction")


class AggregationSection(Section):
    method: Literal["mean", "ema"] = "mean"
    gamma: float = Field(0.9, ge=0, lt=1)
    ema_batch_size: int = Field(32, ge=1)
    debias: bool = True


class SurgerySection(Section):
    method: Literal["pcgrad", "mean", "per_language"] = Field(
        "pcgrad", description="pcgrad (CONGRAD); mean: no surgery; per_language: each pair vs its own G_l (ablation)"
    )
    seed: int = 0


class ScoreSection(Section):
    kind: Literal["cosine", "dot", "hybrid", "margin"] = Field(
        "cosine",
        description="cosine (the paper): cos(S(g_i), g*); dot: <S(g_i), g*>; hybrid: (1 - hybrid_weight) x the "
        "within-language percentile of the cosine + hybrid_weight x that of the policy's own length-normalised "
        "margin (recorded by the same sketch pass); margin: the policy margin alone (the loss/margin baseline)",
    )
    hybrid_weight: float = Field(0.5, ge=0, le=1, description="weight of the policy margin in the hybrid score")


class SelectionSection(Section):
    rule: Literal["top_rho", "threshold", "global_top_k", "random"] = Field(
        "top_rho", description="random: the same per-language quota as top_rho, drawn at random (baseline)"
    )
    rho: float = Field(0.5, gt=0, le=1)
    tau: float = 0.0
    top_k: int = Field(0, ge=0)
    min_per_language: int = Field(1, ge=0)
    budgets: Literal["uniform", "agreement"] = Field(
        "uniform",
        description="top_rho/random quotas. uniform (the paper): ceil(rho n_l) per language; agreement: the same "
        "total, shared by D'Hondt over n_l max(a_l, 0), a_l = cos(G_l, mean of the other languages' G_m), after "
        "floors, so a language whose gradient conflicts with the others gives up its pairs down to its floor",
    )
    budget_floor: float = Field(
        0.1,
        ge=0,
        le=1,
        description="agreement budgets: every language keeps at least this fraction (and min_per_language)",
    )

    @model_validator(mode="after")
    def _top_k_needs_value(self) -> SelectionSection:
        if self.rule == "global_top_k" and self.top_k < 1:
            raise ValueError("rule global_top_k needs top_k >= 1 (set selection.top_k)")
        if self.budgets == "agreement" and self.rule not in ("top_rho", "random"):
            raise ValueError(
                f"budgets 'agreement' shares the top_rho budget; use rule top_rho or random (got {self.rule})"
            )
        return self


class ResourcesSection(Section):
    actors_min: int = Field(1, ge=1)
    actors_max: int = Field(2, ge=1)
    gpus_per_actor: float = Field(0.0, ge=0)
    cpus_per_actor: float = Field(0.5, gt=0, description="fractional on small machines so the read tasks still run")
    batch_size: int = Field(8, ge=1, description="pairs per sketch forward/backward")
    num_cpus: int | None = Field(None, description="CPUs for an embedded Ray (ignored on a cluster)")
    driver_score_max_mb: float = Field(
        256.0,
        ge=0,
        description="a sketch store up to this size is scored on the driver; a larger one by Ray Data tasks "
        "(0 = always Ray Data)",
    )

    @model_validator(mode="after")
    def _min_le_max(self) -> ResourcesSection:
        if self.actors_min > self.actors_max:
            raise ValueError(f"actors_min={self.actors_min} > actors_max={self.actors_max}: raise actors_max")
        return self


class FilterConfig(Section):
    run: RunSection = RunSection()
    input: InputSection = InputSection()
    model: ModelSection = ModelSection()
    sketch: SketchSection = SketchSection()
    dpo: DPOSection = DPOSection()
    languages: LanguagesSection = LanguagesSection()
    aggregation: AggregationSection = AggregationSection()
    surgery: SurgerySection = SurgerySection()
    score: ScoreSection = ScoreSection()
    selection: SelectionSection = SelectionSection()
    resources: ResourcesSection = ResourcesSection()

    def config_hash(self) -> str:
        """sha256 of the canonical JSON of the resolved config (first 16 hex digits)."""
        canon = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canon.encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> list[str]:
    """Apply ``dotted.key=value`` overrides in place (values parsed as YAML); returns problems found."""
    problems = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"--set {item!r}: expected dotted.key=value, e.g. --set selection.rho=0.3")
            continue
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                problems.append(f"--set {key}: {part} is not a section")
                break
        else:
            node[parts[-1]] = yaml.safe_load(value)
    return problems


def format_validation_error(err: ValidationError) -> list[str]:
    """One line per pydantic error: ``dotted.key: message (got value)``, with a hint for unknown keys."""
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key; remove it or check its spelling against configs/tiny-cpu.yaml")
        elif e["type"] == "value_error":
            lines.append(f"{where}: {e['msg'].removeprefix('Value error, ')}")
        else:
            got = e.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"{where}: {e['msg']}{shown}")
    return lines


def load_raw(path: str | Path | None) -> tuple[dict[str, Any], list[str]]:
    if path is None:
        return {}, []
    p = Path(path)
    if not p.is_file():
        return {}, [f"config file {p} not found: pass --config with a YAML file such as configs/tiny-cpu.yaml"]
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        return {}, [f"config file {p} is not valid YAML: {str(e).splitlines()[0]}"]
    if not isinstance(raw, dict):
        return {}, [f"config file {p} must hold a mapping of sections (run, input, model, ...)"]
    return raw, []


def build_config(raw: dict[str, Any], model_cls: type[BaseModel]) -> tuple[Any, list[str]]:
    try:
        return model_cls.model_validate(raw), []
    except ValidationError as e:
        return None, format_validation_error(e)


def check_filter_config(cfg: FilterConfig) -> list[str]:
    """Checks that need the outside world (paths, model dir); all returned together."""
    problems = []
    if not cfg.input.paths:
        problems.append("input.paths is empty: set it in the config or pass --input DIR")
    for p in cfg.input.paths:
        if missing_local_path(p):
            problems.append(f"input.paths: {p} does not exist (check the path or pass --input)")
    problems += check_model_source(cfg.model.name_or_path, "model.name_or_path")
    if cfg.model.reference == "model":
        if not cfg.model.reference_path:
            problems.append("model.reference is 'model' but model.reference_path is unset: set it to a checkpoint")
        else:
            problems += check_model_source(cfg.model.reference_path, "model.reference_path")
    if cfg.model.reference == "disabled_adapter" and cfg.model.lora is None:
        problems.append("model.reference 'disabled_adapter' needs model.lora (or use reference: same)")
    if cfg.sketch.scope == "lora" and cfg.model.lora is None:
        problems.append("sketch.scope 'lora' needs model.lora set (or use scope: linear)")
    overlap = set(cfg.languages.unseen) & set(cfg.languages.seen if isinstance(cfg.languages.seen, list) else [])
    if overlap:
        problems.append(f"languages: {sorted(overlap)} are both seen and unseen; list each language once")
    return problems


def check_model_source(name: str, key: str) -> list[str]:
    """A local model directory must exist and hold a config.json; hub ids and tiny:// pass through."""
    if name.startswith("tiny://"):
        arch = name.removeprefix("tiny://").split("?")[0]
        return (
            []
            if arch in ("llama", "qwen2")
            else [f"{key}: unknown tiny model {name!r}; use tiny://llama or tiny://qwen2"]
        )
    looks_local = name.startswith(("/", "./", "../", "~")) or Path(name).exists()
    if looks_local:
        path = Path(name).expanduser()
        if not path.is_dir():
            return [f"{key}: model directory {name} does not exist; point it at a saved checkpoint or a hub id"]
        if not (path / "config.json").is_file():
            return [f"{key}: {name} has no config.json; is it a Hugging Face checkpoint directory?"]
    return []


def _check_raw_sources(raw: dict[str, Any]) -> list[str]:
    """Path checks on a config that failed structural validation, so those problems are reported too."""
    problems = []
    model = raw.get("model", {}) if isinstance(raw.get("model"), dict) else {}
    name = model.get("name_or_path")
    if isinstance(name, str):
        problems += check_model_source(name, "model.name_or_path")
    paths = raw.get("input", {}).get("paths", []) if isinstance(raw.get("input"), dict) else []
    for p in [paths] if isinstance(paths, str) else paths if isinstance(paths, list) else []:
        if isinstance(p, str) and missing_local_path(p):
            problems.append(f"input.paths: {p} does not exist (check the path or pass --input)")
    return problems


def load_filter_config(
    path: str | Path | None,
    overrides: list[str] = (),
    input_paths: list[str] | None = None,
    output: str | None = None,
    check_paths: bool = True,
) -> FilterConfig:
    """Load, override, validate and check a filter config; raises :class:`ConfigError` listing every problem."""
    raw, problems = load_raw(path)
    problems += apply_overrides(raw, list(overrides))
    if input_paths:
        raw.setdefault("input", {})["paths"] = list(input_paths)
    if output:
        raw.setdefault("run", {})["output"] = output
    cfg, structural = build_config(raw, FilterConfig)
    problems += structural
    if check_paths:
        problems += check_filter_config(cfg) if cfg is not None else _check_raw_sources(raw)
    if problems:
        raise ConfigError(problems)
    return cfg
