"""Score + select, write and report, driver side. Past a small store (``resources.driver_score_max_mb``), every
per-row step runs in a Ray task or Ray Data job next to the data and the driver holds the direction and a few
counts, never a row, so a million-row run costs the driver what a thousand-row one does (issue 11); a small store
is scored and selected on the driver by the same function (a worker's imports would cost more than the work). The
decisions travel through the run directory: ``scores.parquet``, sorted by ``_row`` in small row groups, from which
each write unit reads only its own key range.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa

from ..config import FilterConfig
from ..core import language_agreement
from ..errors import ConfigError
from ..storage import Location
from .reduce import direction_of, language_gradients, merged_partials, save_direction
from .select_stage import decide, score_all
from .units import units_to_items
from .write_stage import WriteSpec, write_units

SELECT_SECTIONS = ("languages", "aggregation", "surgery", "score", "selection")
SCORES_ROW_GROUP = 16_384  # rows per row group of scores.parquet: a write unit reads one or two of them


def select_fingerprint(cfg: FilterConfig) -> str:
    """Of what decides the selection from stored sketches; ``run.seed`` draws the random baseline's subset; an
    appended segment changes the pairs selected from."""
    extra = {"run.seed": cfg.run.seed, **({"segments": len(cfg.input.appended)} if cfg.input.appended else {})}
    return cfg.fingerprint(SELECT_SECTIONS, extra)


def seen_languages(cfg: FilterConfig, present: list[str]) -> list[str]:
    if cfg.languages.seen == "infer":
        return sorted(set(present) - set(cfg.languages.unseen))
    return sorted(cfg.languages.seen)


def select_stage(fr: Any) -> dict[str, Any]:
    """Direction (on the driver: per-language sums only), then scores and decisions (:func:`score_and_decide`, in
    one Ray task for a store above ``resources.driver_score_max_mb``), redone when the selection-side config changed;
    returns the selection's summary (:func:`selection_summary`, and ``where`` it ran)."""
    import ray

    cfg, run = fr.cfg, fr.run
    fp = select_fingerprint(cfg)
    state = run.join("_state", "decisions.json")
    if state.exists() and run.join("scores.parquet").exists():
        recorded = state.read_json()
        if recorded["fingerprint"] == fp and "summary" in recorded:
            fr.skipped.append("select")
            return recorded["summary"]
    if not run.join("sketches").exists():
        raise ConfigError(
            [
                f"{run.uri}: its sketch store was deleted after scoring (run.keep_sketches: false), so it cannot be "
                "re-selected with other options; run `congrad-ray filter` with --fresh (and run.keep_sketches: true)"
            ]
        )
    for stale in ("kept", "dropped", "invalid", "_state/write"):
        run.join(stale).delete_dir()
    t0 = time.perf_counter()
    sums = merged_partials(run, cfg.sketch.k)
    seen = seen_languages(cfg, sums.langs)
    langs, g, counts = language_gradients(run, cfg, seen, sums)
    g_star, per_language, agreement = np.zeros(cfg.sketch.k), None, None
    if langs:  # else every row is invalid or unseen: nothing to score, the outputs still get written
        direction = direction_of(cfg, langs, g)
        per_lang = language_agreement(g, direction)
        save_direction(run, direction, g, counts, per_lang)
        agreement = {lang: float(a) for lang, a in zip(per_lang.langs, per_lang.others)}
        g_star = direction.g_star.numpy()
        if cfg.surgery.method == "per_language":
            per_language = {lang: g[j].numpy() for j, lang in enumerate(langs)}
    fr.stage("reduce", time.perf_counter() - t0)
    t1 = time.perf_counter()
    args = (run.uri, cfg.model_dump_json(), g_star, per_language, agreement, seen)
    store_mb = sum(f.size() for f in run.join("sketches").list(".parquet")) / 2**20
    if store_mb <= cfg.resources.driver_score_max_mb:  # a few thousand rows: not worth a worker's imports
        summary = {**score_and_decide(*args), "where": "driver"}
    else:  # num_cpus 0: the task mostly waits on the Ray Data scoring job it starts, which needs the CPUs itself
        summary = {**ray.get(ray.remote(num_cpus=0)(score_and_decide).remote(*args)), "where": "task"}
    state.write_json({"fingerprint": fp, "seen": seen, "summary": summary})
    if not cfg.run.keep_sketches:  # every pair's scores are in scores.parquet now
        run.join("sketches").delete_dir()
    fr.stage("score_select", time.perf_counter() - t1)
    return summary


def score_and_decide(
    run_uri: str,
    config_json: str,
    g_star: np.ndarray,
    per_language: dict[str, np.ndarray] | None,
    agreement: dict[str, float] | None,
    seen: list[str],
) -> dict[str, Any]:
    """Ray task body: every stored pair scored (:func:`score_all`) and decided (:func:`decide`), written to
    ``scores.parquet`` sorted by ``_row``; returns :func:`selection_summary`."""
    from ..ray_env import quiet_data_progress

    quiet_data_progress()
    cfg = FilterConfig.model_validate_json(config_json)
    run = Location.of(run_uri)
    scored = score_all(run, g_star, cfg.score.kind, per_language, cfg.resources.driver_score_max_mb)
    decisions = decide(scored, cfg, seen, agreement).sort_by([("_row", "ascending")])
    del scored
    run.join("scores.parquet").write_table(decisions, row_group_size=SCORES_ROW_GROUP)
    return selection_summary(decisions)


def selection_summary(decisions: pa.Table) -> dict[str, Any]:
    """``rows`` decided, ``kept``, and the ``scored`` rows (finite score) with their ``mean`` score."""
    scores = decisions.column("score").to_numpy(zero_copy_only=False)
    finite = scores[np.isfinite(scores)]
    return {
        "rows": decisions.num_rows,
        "kept": int(np.count_nonzero(decisions.column("keep").to_numpy(zero_copy_only=False))),
        "scored": int(finite.size),
        "mean": float(finite.mean()) if finite.size else None,
    }


def write_stage(fr: Any) -> list[dict[str, Any]]:
    """Every unit's rows to kept/, dropped/ or invalid/ (Ray Data tasks; each reads its own decisions); returns the
    units' completion records."""
    import ray.data

    cfg, run = fr.cfg, fr.run
    t0 = time.perf_counter()
    records_dir = run.join("_state", "write")
    done = {f.path.rsplit("/", 1)[1].removesuffix(".json") for f in records_dir.list(".json")}
    todo = [u for u in fr.units if u.name not in done]
    if todo:
        spec = WriteSpec(run.uri, cfg.input.id_column, cfg.input.lang_column, fr.truth_column)
        ds = ray.data.from_items(units_to_items(todo), override_num_blocks=len(todo))
        ds.map_batches(
            write_units,
            batch_size=1,
            batch_format="numpy",
            num_cpus=cfg.resources.cpus_per_actor,
            fn_kwargs={"spec": spec},
        ).materialize()
    else:
        fr.skipped.append("write")
    fr.stage("write", time.perf_counter() - t0)
    return [f.read_json() for f in records_dir.list(".json")]


def report_stage(fr: Any, selected: dict[str, Any], counts: dict[str, Any], truth: dict[str, Any] | None) -> None:
    """The report (pipeline/report.py) from ``scores.parquet``, where the selection ran (``selected["where"]``: the
    driver for a small store, else one Ray task)."""
    import ray

    from .report import write_report_from_scores

    t0 = time.perf_counter()
    with fr.progress.stage("report"):
        if selected.get("where") == "task":
            ray.get(ray.remote(num_cpus=0)(write_report_from_scores).remote(fr.run.uri, counts, truth))
        else:
            write_report_from_scores(fr.run.uri, counts, truth)
    fr.stage("report", time.perf_counter() - t0)
