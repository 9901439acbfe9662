"""The filter run: plan -> prepare + sketch -> reduce -> score + select -> write -> report + manifest.

Each stage records completion in the run directory and is skipped when a re-submitted run finds it done:
sketching resumes per id-hash bucket, writing per unit. A run directory belongs to one input and one sketch
configuration (its fingerprint); selection-side options (aggregation, surgery, score, selection) may change between
runs, which redoes only the stages after sketching (this is what ``congrad-ray select`` does).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ..config import FilterConfig
from ..core import SKETCH_DEFINITION
from ..errors import ConfigError, InputError
from ..inputs import materialize_inputs
from ..models import check_loadable
from ..progress import NO_PROGRESS, Progress
from ..storage import RUN_DIR_FIX, Location, claim_run_dir
from . import manifest as manifest_mod
from .segments import Segments, check_recorded, segment_files, with_bucket_ranges
from .select_run import report_stage, select_stage, write_stage
from .sketch_pass import sketch_stage
from .tracking import UnitsWritten, filter_plan
from .units import Unit, language_counts, plan_units

SKETCH_SECTIONS = ("model", "sketch", "dpo", "languages")


@dataclass
class FilterRun:
    cfg: FilterConfig
    run: Location
    units: list[Unit] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    files: int = 0
    languages: dict[str, int] = field(default_factory=dict)  # rows per language of the input
    truth_column: str | None = None  # input.truth_column when the input has it
    progress: Progress = NO_PROGRESS
    segments: Segments = Segments(())

    def stage(self, name: str, seconds: float) -> None:
        self.timings[name] = round(self.timings.get(name, 0.0) + seconds, 3)


def resolve_config(cfg: FilterConfig, schema: pa.Schema | None, total_rows: int) -> FilterConfig:
    """Concrete choices for ``auto`` options (recorded in the run's resolved config); ``total_rows``: of the
    original input (segment 0: appended segments get buckets of their own)."""
    m, i, s = cfg.model, cfg.input, cfg.sketch
    if m.reference == "auto":
        has_columns = schema is not None and {i.ref_chosen_column, i.ref_rejected_column} <= set(schema.names)
        ref = "disabled_adapter" if m.lora is not None else "columns" if has_columns else "same"
        cfg = cfg.model_copy(update={"model": m.model_copy(update={"reference": ref})})
    if s.buckets == "auto":
        buckets = max(1, -(-total_rows // s.rows_per_bucket))
        cfg = cfg.model_copy(update={"sketch": s.model_copy(update={"buckets": buckets})})
    return cfg


def sketch_fingerprint(cfg: FilterConfig, files: list[Location]) -> str:
    """Of what the stored sketches depend on: the original input's files, the model, sketch, DPO and language
    settings (appended segments are checked against the run's own record of them: ``segments.check_recorded``)."""
    inputs = [(f.uri, f.fs.get_file_info(f.path).size) for f in files]
    # the ground-truth column is read by the report only: it never changes a sketch
    given = cfg.input.model_dump(mode="json", exclude={"truth_column", "appended"})
    extra = {
        "inputs": inputs,
        "input": given,
        "batch_size": cfg.resources.batch_size,
        "sketch_definition": SKETCH_DEFINITION,
    }
    return cfg.fingerprint(SKETCH_SECTIONS, extra)


def select_problems(overrides: list[str]) -> list[str]:
    """``congrad-ray select`` re-scores stored sketches: overrides of what they were computed with are refused."""
    problems = []
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key.split(".")[0] in (*SKETCH_SECTIONS, "input") or key in ("run.output", "resources.batch_size"):
            problems.append(
                f"--set {key}: the run's stored sketches fix it; run `congrad-ray filter` with it and a new --output"
            )
    return problems


@dataclass
class Survey:
    """What the input is, read from footers and a token sample; nothing written, no Ray."""

    cfg: FilterConfig  # with auto choices resolved and demo:// inputs materialised
    requested: list[str]
    files: list[Location]
    units: list[Unit]
    schema: pa.Schema
    languages: dict[str, int]
    cost: dict[str, Any]
    segments: Segments


def survey(cfg: FilterConfig, with_cost: bool = True) -> Survey:
    """Resolve inputs, read footers and language columns; ``with_cost``: sample tokens and estimate the cost
    (:mod:`.cost`: loads the tokenizer)."""
    requested = [*cfg.input.paths, *(p for seg in cfg.input.appended for p in seg)]
    paths = materialize_inputs(cfg.input.paths)
    segments = segment_files(cfg)
    cfg = cfg.model_copy(update={"input": cfg.input.model_copy(update={"paths": paths})})
    files = [f for seg in segments.files for f in seg]
    units, schema = plan_units(files, cfg.input.rows_per_unit, cfg.input.lang_column, segments.of_file())
    if not units:
        raise InputError(f"the input ({len(files)} file(s) under {cfg.input.paths}) has no rows")
    rows = sum(u.stop - u.start for u in units)
    cfg = resolve_config(cfg, schema, sum(u.stop - u.start for u in units if u.segment == 0))
    segments = with_bucket_ranges(segments, units, cfg)
    if cfg.model.reference == "columns" and not {cfg.input.ref_chosen_column, cfg.input.ref_rejected_column} <= set(
        schema.names
    ):
        raise ConfigError(
            [
                f"model.reference is 'columns' but the input lacks {cfg.input.ref_chosen_column} / "
                f"{cfg.input.ref_rejected_column}; add them or use reference: same"
            ]
        )
    languages = language_counts(files, cfg.input.lang_column)
    cost = _cost(cfg, rows, units) if with_cost else {}
    return Survey(cfg, requested, files, units, schema, languages, cost, segments)


def describe(s: Survey) -> dict[str, Any]:
    """The plan a filter run of ``s`` would show, with its cost; the run directory is named, not touched."""
    cfg = s.cfg
    fr = FilterRun(cfg, Location.of(cfg.run.output), s.units, files=len(s.files), languages=s.languages)
    fr.truth_column, fr.segments = _truth_column(cfg, s.schema), s.segments
    return filter_plan(fr, s.requested, s.cost)


def _cost(cfg: FilterConfig, rows: int, units: list[Unit]) -> dict[str, Any]:
    """The plan's cost lines; none when the tokenizer does not load (the model check says why, when the run needs
    the model: a finished run re-selecting does not)."""
    from .cost import estimate, sample_pairs

    try:
        return estimate(cfg, rows, sample_pairs(cfg, units))
    except ConfigError:
        return {}


def plan(
    cfg: FilterConfig,
    fresh: bool = False,
    fix: str = RUN_DIR_FIX,
    progress: Progress = NO_PROGRESS,
    with_cost: bool = True,
) -> FilterRun:
    """Survey the input, check the run directory; no Ray yet (errors surface in seconds). ``fix``: the advice when
    the run directory holds another run; ``progress`` is told the plan (with its cost unless not ``with_cost``)."""
    t0 = time.perf_counter()
    s = survey(cfg, with_cost)
    cfg = s.cfg
    truth = _truth_column(cfg, s.schema)
    holds = "a filter run of another input or model/sketch/dpo config"
    run = claim_run_dir(cfg.run.output, "sketch", sketch_fingerprint(cfg, list(s.segments.files[0])), holds, fresh, fix)
    check_recorded(run, s.segments)
    run.join("config.yaml").write_bytes(cfg.to_yaml().encode())
    if s.cost:
        run.join("_state", "plan.json").write_json(s.cost["estimate"])
    fr = FilterRun(cfg, run, s.units, files=len(s.files), languages=s.languages, truth_column=truth, progress=progress)
    fr.segments = s.segments
    fr.stage("plan", time.perf_counter() - t0)
    progress.plan(filter_plan(fr, s.requested, s.cost))
    return fr


def _truth_column(cfg: FilterConfig, schema: pa.Schema) -> str | None:
    """``input.truth_column`` if the input has it (a boolean column); None if it has not or none is configured."""
    name = cfg.input.truth_column
    if name is None or name not in schema.names:
        return None
    kind = schema.field(name).type
    if not (pa.types.is_boolean(kind) or pa.types.is_integer(kind)):
        raise ConfigError(
            [
                f"input.truth_column {name!r} is a {kind} column; ground truth must be boolean (True: a pair known to "
                "conflict), or set input.truth_column: null"
            ]
        )
    return name


def check_storage(cfg: FilterConfig) -> None:
    """On a multi-node cluster, refuse node-local input and output paths before any work starts."""
    from ..ray_env import require_shared_storage

    r = cfg.resources
    paths = {"input.paths": list(cfg.input.paths), "run.output": [cfg.run.output]}
    require_shared_storage(paths, cfg.run.shared_filesystem, {"CPU": r.cpus_per_actor, "GPU": r.gpus_per_actor})


def run_filter(
    cfg: FilterConfig, fresh: bool = False, report: bool = True, progress: Progress = NO_PROGRESS
) -> dict[str, Any]:
    """Run (or resume) the whole filter; returns the manifest. ``progress`` is told the plan and each stage."""
    from ..ray_env import ensure_ray

    t0 = time.perf_counter()
    check_storage(cfg)
    fr = plan(cfg, fresh, progress=progress)
    state = fr.run.join("_state", "sketch.json")
    if not state.exists() or state.read_json().get("segments", 1) < fr.segments.count:  # the model will be needed
        check_loadable(cfg.model.name_or_path, cfg.model.revision, cfg.model.trust_remote_code)
    ensure_ray(cfg.resources.num_cpus)
    sketch_stage(fr)
    return _finish(fr, report, t0)


def reselect(cfg: FilterConfig, report: bool = True, progress: Progress = NO_PROGRESS) -> dict[str, Any]:
    """Score and select again from a finished run's stored sketches (``congrad-ray select``): no model, no GPU."""
    from ..ray_env import ensure_ray

    t0 = time.perf_counter()
    check_storage(cfg)
    fix = "its input files changed since they were sketched; run `congrad-ray filter` on them"
    fr = plan(cfg, fix=fix, progress=progress, with_cost=False)
    state = fr.run.join("_state", "sketch.json")
    if not state.exists() or state.read_json().get("segments", 1) < fr.segments.count:
        raise ConfigError([f"{fr.run.uri} has not finished sketching; run `congrad-ray filter` on it first"])
    ensure_ray(cfg.resources.num_cpus)
    fr.skipped.append("sketch")
    return _finish(fr, report, t0)


def _finish(fr: FilterRun, report: bool, t0: float) -> dict[str, Any]:
    with fr.progress.stage("score + select") as stage:
        selected = select_stage(fr)
        stage.detail = f"{selected['kept']:,} of {selected['rows']:,} pairs kept"
    with fr.progress.stage("write", UnitsWritten(fr.run, fr.units)):
        records = write_stage(fr)
    counts = manifest_mod.count_outcomes(records)
    truth = manifest_mod.ground_truth(records, fr.truth_column)
    if report:
        report_stage(fr, selected, counts, truth)
    fr.stage("total", time.perf_counter() - t0)
    codes = fr.run.join("_state", "sketch.json").read_json().get("language_codes", {})
    scores = {"scored": selected["scored"], "mean": selected["mean"]}
    manifest = manifest_mod.build(fr.cfg, fr.run, counts, truth, fr.timings, fr.skipped, scores, codes)
    fr.run.join("manifest.json").write_json(manifest)
    return manifest
