"""The sketch stage, driver side: per input segment (pipeline/segments.py), unit descriptors -> prepare tasks (status
files, valid rows as text) -> id-hash group-by -> the sketch actor pool, which tokenises and sketches each bucket
(pipeline/sketch_stage.py); then ``_state/sketch.json``.

A segment whose buckets are all done (and whose units all have status files) is skipped; within a segment, done
buckets are skipped: a re-submitted or appended run sketches only what is missing.
"""

from __future__ import annotations

import time
from typing import Any

import pyarrow.compute as pc

from ..core.rows import RowRules
from ..storage import Location
from .prepare import PrepareSpec, prepare_units
from .segments import earlier_ids
from .sketch_stage import GradientSketcher, actor_records, sketch_errors, take_all_or_explain
from .tracking import BucketsSketched, RowsValidated
from .units import Unit, units_to_items


def done_buckets(run: Location) -> set[int]:
    return {int(f.path.rsplit("bucket-", 1)[1].split(".")[0]) for f in run.join("partials").list(".parquet")}


def sketch_stage(fr: Any) -> None:
    """Prepare every unit (status files) and sketch every bucket not yet done, segment by segment (a later segment's
    duplicates of an earlier one's ids are found from the earlier status files)."""
    import ray

    run, segments = fr.run, fr.segments
    state = run.join("_state", "sketch.json")
    if state.exists() and state.read_json().get("segments", 1) >= segments.count:
        fr.skipped.append("sketch")
        fr.progress.skipped("read + validate + sketch", "done by an earlier run")
        return
    t0, wall0 = time.perf_counter(), time.time()
    done = done_buckets(run)
    have_status = {f.path.rsplit("/", 1)[1].removesuffix(".parquet") for f in run.join("rows").list(".parquet")}
    validated, sketched = RowsValidated(run, fr.units), BucketsSketched(run, segments.total_buckets)
    summaries: list[dict[str, Any]] = []
    with fr.progress.stage("read + validate", validated), fr.progress.stage("sketch", sketched):
        for s in range(segments.count):
            units = [u for u in fr.units if u.segment == s]
            if set(segments.buckets(s)) <= done and all(u.name in have_status for u in units):
                continue
            earlier = [u for u in fr.units if u.segment < s]
            ref = ray.put(earlier_ids(run, earlier)) if earlier else None
            summaries += _sketch_segment(fr, units, segments.ranges[s], done, ref)
    summary = {
        "segments": segments.count,
        "buckets_sketched": len(summaries),
        "buckets_resumed": len(done),
        "pairs": int(sum(s["pairs"] for s in summaries)),
        "duplicates": int(sum(s["duplicates"] for s in summaries)),
        "actor_pids": sorted({int(s["pid"]) for s in summaries}),
        "actors": actor_records(summaries),
        "actor_peak_rss_mb": max((float(s["peak_rss_mb"]) for s in summaries), default=None),
        "bucket_seconds": round(sum(float(s["seconds"]) for s in summaries), 3),
        **sketch_timeline(summaries, wall0),
        "language_codes": language_codes(run),
    }
    state.write_json(summary)
    fr.stage("sketch", time.perf_counter() - t0)


def _sketch_segment(
    fr: Any, units: list[Unit], buckets: tuple[int, int], done: set[int], earlier: Any
) -> list[dict[str, Any]]:
    """One segment: its units prepared, its buckets not yet done sketched; the per-bucket summaries (none when every
    bucket is done: then only the status files are written)."""
    import ray.data

    cfg, r = fr.cfg, fr.cfg.resources
    i, langs = cfg.input, cfg.languages
    known = None if langs.seen == "infer" else frozenset([*langs.seen, *langs.unseen])
    refs = (i.ref_chosen_column, i.ref_rejected_column) if cfg.model.reference == "columns" else None
    spec = PrepareSpec(
        rules=RowRules(i.id_column, i.lang_column, known, refs),
        buckets=buckets,
        run_uri=fr.run.uri,
        skip_buckets=frozenset(done),
        earlier_ids=earlier,
    )
    items = units_to_items(units)
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    prepared = ds.map_batches(
        prepare_units, batch_size=1, batch_format="numpy", fn_kwargs={"spec": spec}, num_cpus=r.cpus_per_actor
    )
    todo = len(set(range(buckets[0], buckets[0] + buckets[1])) - done)
    if not todo:
        prepared.materialize()  # status files only
        return []
    sketched = prepared.groupby("bucket", num_partitions=_shuffle_partitions(todo)).map_groups(
        GradientSketcher,
        batch_format="pyarrow",
        fn_constructor_args=(cfg.model_dump_json(), fr.run.uri),
        # one bucket at a time per actor: a bucket is a whole task's worth of work, so queuing more on one actor
        # buys nothing and lets the first actor up take every bucket while the rest of the pool idles
        compute=ray.data.ActorPoolStrategy(
            min_size=r.actors_min, max_size=r.actors_max, max_tasks_in_flight_per_actor=1
        ),
        num_cpus=r.cpus_per_actor,
        num_gpus=r.gpus_per_actor or None,
        scheduling_strategy=r.scheduling_strategy,
    )
    summaries = take_all_or_explain(sketched, cfg)
    if error := sketch_errors(summaries):
        raise error
    return summaries


def _shuffle_partitions(todo: int) -> int:
    """One hash partition per bucket still to sketch, at most Ray Data's default: never more partitions (each with
    its own reduce work) than there are groups."""
    import ray.data

    return max(1, min(ray.data.DataContext.get_current().default_hash_shuffle_parallelism, todo))


def sketch_timeline(summaries: list[dict[str, Any]], wall0: float) -> dict[str, float | None]:
    """When sketching began and ended, in seconds after the stage started (``wall0``, epoch): the wait before the
    first bucket is the read + validate + tokenise + id-hash group-by barrier, paid with idle actors."""
    if not summaries:
        return {"stage_started_at": round(wall0, 3), "first_bucket_started_s": None, "last_bucket_done_s": None}
    starts = [float(s["started"]) for s in summaries]
    ends = [float(s["started"]) + float(s["seconds"]) for s in summaries]
    return {
        "stage_started_at": round(wall0, 3),
        "first_bucket_started_s": round(min(starts) - wall0, 3),
        "last_bucket_done_s": round(max(ends) - wall0, 3),
    }


def language_codes(run: Location) -> dict[str, str]:
    """Each input language code that canonicalisation changed, and what it became (from the status files)."""
    mapping: dict[str, str] = {}
    for f in run.join("rows").list(".parquet"):
        table = f.read_table(["lang_input", "lang"])
        table = table.filter(pc.is_valid(table["lang_input"]))
        mapping.update(zip(table["lang_input"].to_pylist(), table["lang"].to_pylist()))
    return dict(sorted(mapping.items()))
