"""The filter config: one section per step of ``docs/design.md``, every choice the paper leaves open an option with
a documented default; loaded and checked once by :func:`load_filter_config` (the shared loader is
:mod:`congrad_ray.config_loading`)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .config_loading import Command, LoadContext, Section, TopConfig, input_path_problems, load_config
from .models import model_source_problems
from .storage import output_problems


class RunSection(Section):
    name: str = "congrad"
    output: str = Field("runs/congrad", description="run directory (local path or pyarrow/fsspec URL)")
    seed: int = 0
    shared_filesystem: bool = Field(
        False,
        description="local paths (run.output, input.paths) are on a filesystem mounted at the same place on every "
        "node (NFS, EFS, Lustre); without it a multi-node cluster refuses them: use an object store URL",
    )
    keep_sketches: bool = Field(
        True,
        description="keep the sketch store (run.output/sketches, k values per pair) after scoring, for `congrad-ray "
        "select` to re-select without the model; false deletes it once every pair is scored (scores.parquet keeps "
        "each pair's scores), and re-selecting with other options then means sketching again (--fresh)",
    )


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

    appended: list[list[str]] = Field(
        default_factory=list,
        description="input segments appended to the run by `congrad-ray filter --append NEW --run-dir R`, in order "
        "(written into the run's config.yaml by that command): each is sketched into buckets of its own, and the "
        "selection is over every segment",
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
        "wide layers, explicit when d_out*d_in is below ~12 k log2 k)",
    )

    store_dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float32",
        description="precision of the stored sketches (the sketch store's bytes per pair: 4k, 2k, 2k); the math is "
        "float32/float64 either way and the per-language sums are taken before rounding. float16 changed no kept "
        "pair in the measured runs (README, Benchmarks)",
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
    seen: Literal["infer"] | list[str] = Field("infer", description="infer: every language of the input")
    unseen: list[str] = Field(default_factory=list, description="evaluation-only languages: never kept, no direction")

    @field_validator("seen", "unseen")
    @classmethod
    def _canonical(cls, v: Any) -> Any:
        """Language codes as the rows' are read: trimmed, BCP-47 case (``EN_us`` -> ``en-US``)."""
        from .core.rows import canonical_lang

        return v if isinstance(v, str) else [canonical_lang(x) for x in v]

    def problems(self, key: str) -> list[str]:
        overlap = set(self.unseen) & set(self.seen if isinstance(self.seen, list) else [])
        if overlap:
            return [f"{key}: {sorted(overlap)} are both seen and unseen; list each language once"]
        return []


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
    scheduling_strategy: Literal["DEFAULT", "SPREAD"] = Field(
        "DEFAULT", description="Ray's placement of the sketch actors; SPREAD puts them on as many nodes as it can"
    )
    actor_start_timeout_s: float = Field(
        900.0,
        gt=0,
        description="how long to wait for the first sketch actors (an autoscaler starting GPU nodes) before failing "
        "with the resources the cluster lacks",
    )
    driver_score_max_mb: float = Field(
        256.0,
        ge=0,
        description="a sketch store up to this size is scored and selected on the driver; a larger one in one "
        "Ray task, which scores it with Ray Data tasks next to the data (0 = always the task)",
    )

    calibration: str | None = Field(
        None,
        description="the sketch pass's measured cost per token (written by `congrad-ray plan --calibrate`), read by "
        "every plan and run for its actor-hours estimate; default: <config>.calibration.json beside the config file "
        "when it exists",
    )

    @model_validator(mode="after")
    def _min_le_max(self) -> ResourcesSection:
        if self.actors_min > self.actors_max:
            raise ValueError(f"actors_min={self.actors_min} > actors_max={self.actors_max}: raise actors_max")
        return self


class FilterConfig(TopConfig):
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

    def problems(self, ctx: LoadContext) -> list[str]:
        """Checks across sections, and (``ctx.check_paths``) of inputs, model and output; all returned together."""
        m = self.model
        problems = []
        if m.reference == "model" and not m.reference_path:
            problems.append("model.reference is 'model' but model.reference_path is unset: set it to a checkpoint")
        if m.reference == "disabled_adapter" and m.lora is None:
            problems.append("model.reference 'disabled_adapter' needs model.lora (or use reference: same)")
        if self.sketch.scope == "lora" and m.lora is None:
            problems.append("sketch.scope 'lora' needs model.lora set (or use scope: linear)")
        problems += self.languages.problems("languages")
        if not ctx.check_paths:
            return problems
        problems += input_path_problems(self.input.paths, ctx.command)
        problems += model_source_problems(m.name_or_path, "model.name_or_path")
        if m.reference == "model" and m.reference_path:
            problems += model_source_problems(m.reference_path, "model.reference_path", tokenizer=False)
        if m.lora is not None and m.lora.adapter_path:
            problems += model_source_problems(m.lora.adapter_path, "model.lora.adapter_path", adapter=True)
        return problems + output_problems(self.run.output, "run.output", ctx.command.how_to_set("run.output"))

    def finished(self, ctx: LoadContext) -> FilterConfig:
        """The calibration beside the config file, when there is one and none is set."""
        if self.resources.calibration is not None or ctx.config_path is None:
            return self
        beside = calibration_path(ctx.config_path)
        if not beside.exists():
            return self
        return self.model_copy(update={"resources": self.resources.model_copy(update={"calibration": str(beside)})})

    @classmethod
    def raw_problems(cls, raw: dict[str, Any], ctx: LoadContext) -> list[str]:
        if not ctx.check_paths:
            return []
        problems = []
        name = _section(raw, "model").get("name_or_path")
        if isinstance(name, str):
            problems += model_source_problems(name, "model.name_or_path")
        paths = _section(raw, "input").get("paths", [])
        paths = [paths] if isinstance(paths, str) else paths if isinstance(paths, list) else []
        return problems + input_path_problems([p for p in paths if isinstance(p, str)], ctx.command, empty_ok=True)


def _section(raw: dict[str, Any], name: str) -> dict[str, Any]:
    return raw[name] if isinstance(raw.get(name), dict) else {}


def calibration_path(config_path: str | Path) -> Path:
    """Where ``plan --calibrate`` stores a config's calibration: beside it, ``<stem>.calibration.json``."""
    p = Path(config_path)
    return p.with_name(f"{p.stem}.calibration.json")


FILTER_COMMAND = Command(flags={"input.paths": "--input", "run.output": "--output"})


def load_filter_config(
    path: str | Path | None,
    overrides: Iterable[str] = (),
    input_paths: list[str] | None = None,
    output: str | None = None,
    check_paths: bool = True,
    command: Command = FILTER_COMMAND,
) -> FilterConfig:
    """:func:`load_config` for a filter config, with ``--input`` and ``--output``."""
    values = {"input.paths": list(input_paths) if input_paths else None, "run.output": output}
    return load_config(FilterConfig, path, overrides, values, check_paths, command)
