"""The filter at the mission's scale (issue 11): 1,000,000 demo pairs end to end on embedded Ray, against 100,000,
and one single 1M-row file against 40 shards.

Every run is a fresh process (``python -m benchmarks.filter_1m SPEC.json``; its own RSS sampled every 0.1 s:
:class:`OwnPeak`) on a fresh embedded Ray in its own temp dir; it samples its process tree and the object store
every second. Figures:

* ``filter_1m_sketch_share``: rows/s of the whole job over rows/s of the sketch work alone (the actors' summed
  bucket seconds over the actor count), i.e. the share of the wall time the model work is; goal >= 0.85 (every
  non-sketch stage together <= 15 %).
* ``filter_1m_first_bucket_share``: seconds from the job's start to the first bucket sketched, over the sketch
  stage's active span (first bucket started -> last bucket done): idle actors waiting on the id-hash group-by
  barrier; goal <= 0.10.
* ``driver_peak_rss_1m_vs_100k``, ``actor_peak_rss_1m_vs_100k``: goal <= 1.2 each.
* ``filter_1m_single_file_vs_sharded``: wall time of one 1M-row file over 40 shards; goal <= 1.2.
* ``store_float16_kept_jaccard_1m``, ``store_bfloat16_...``: the kept set with a 16-bit sketch store against the
  float32 one (:func:`store_precision`); goal >= 0.999.
* reported, not judged: object-store peak and spilled bytes, sketch-store and output sizes, stage timings.

``BENCH_1M_K`` (comma-separated sketch widths, default 1024) and ``BENCH_1M_LAYOUTS`` (``sharded,single``) pick
the runs; ``--quick`` does 1,000 vs 2,000 rows at k 256, sharded only.

* ``plan_estimate_vs_measured_<rows>``: the actor-seconds ``congrad-ray plan --calibrate`` predicts for the run
  (its calibration: one actor's thread timed alone on this machine) over the actors' measured bucket seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._common import figure

MODEL = "tiny://llama?hidden_size=32&intermediate_size=64&num_attention_heads=1&num_key_value_heads=1"
ROWS_PER_SHARD = 25_000


def _corpus(out: Path, rows: int, single: bool) -> Path:
    from congrad_ray.demo import CorpusSpec, write_corpus

    if not (out / "ground_truth.json").exists():
        spec = CorpusSpec(pairs_per_language=rows // 8, heldout_per_language=1)
        write_corpus(spec, out, shards=1 if single else max(1, rows // ROWS_PER_SHARD))
    return out / "train"


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


class Sampler(threading.Thread):
    """Every ``period`` s: the largest RSS of any process in this process's tree (other than itself), and the
    object store's bytes in use (Ray's own store stats)."""

    def __init__(self, period: float = 1.0):
        super().__init__(daemon=True)
        self.period, self.stop = period, threading.Event()
        self.tree_peak_mb, self.tree_peak_name, self.store_peak_mb = 0.0, "", 0.0

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self.stop.wait(self.period):
            for child in me.children(recursive=True):
                try:
                    rss = child.memory_info().rss / 2**20
                    if rss > self.tree_peak_mb:
                        self.tree_peak_mb, self.tree_peak_name = rss, " ".join(child.cmdline()[:2])[:80]
                except psutil.Error:
                    continue
            if (stats := _store_stats()) is not None:
                self.store_peak_mb = max(self.store_peak_mb, stats.object_store_bytes_used / 2**20)


class OwnPeak(threading.Thread):
    """Every ``period`` s this process's own RSS; ``peak_mb`` the largest. Not ``ru_maxrss``: Linux keeps that across
    ``fork`` + ``execve``, so a child started by a parent that had just written a 1M-row corpus reports the parent's
    size as its own peak (1.4 GB for a driver that never passed 0.63 GB)."""

    def __init__(self, period: float = 0.1):
        super().__init__(daemon=True)
        self.period, self.stop, self.peak_mb = period, threading.Event(), 0.0

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self.stop.wait(self.period):
            self.peak_mb = max(self.peak_mb, me.memory_info().rss / 2**20)


def _store_stats() -> Any:
    import ray
    from ray._private.internal_api import get_memory_info_reply, get_state_from_address

    if not ray.is_initialized():
        return None
    try:
        return get_memory_info_reply(get_state_from_address(), timeout_seconds=10).store_stats
    except Exception:  # the raylet busy or shutting down: skip this sample
        return None


def child(spec_path: str) -> None:
    """One filter run, measured: writes ``spec["result"]``."""
    from congrad_ray.config import load_filter_config
    from congrad_ray.pipeline.filter_run import run_filter

    spec = json.loads(Path(spec_path).read_text())
    cfg = load_filter_config(None, _overrides(spec["k"]), [spec["data"]], spec["run"])
    sampler, own = Sampler(), OwnPeak()
    sampler.start()
    own.start()
    called = time.time()
    manifest = run_filter(cfg)
    total = time.time() - called
    stats = _store_stats()
    sampler.stop.set()
    own.stop.set()
    run = Path(spec["run"])
    sketch = json.loads((run / "_state" / "sketch.json").read_text())
    result = {
        "rows": manifest["counts"]["input_rows"],
        "totals": manifest["counts"]["totals"],
        "total_s": round(total, 1),
        "timings_s": manifest["timings_s"],
        "actors": len(sketch["actor_pids"]),
        "bucket_seconds": sketch["bucket_seconds"],
        "buckets": sketch["buckets_sketched"],
        "first_bucket_after_s": round(sketch["stage_started_at"] + sketch["first_bucket_started_s"] - called, 1),
        "sketch_span_s": round(sketch["last_bucket_done_s"] - sketch["first_bucket_started_s"], 1),
        "driver_peak_rss_mb": round(own.peak_mb, 1),
        "actor_peak_rss_mb": sketch["actor_peak_rss_mb"],
        "tree_peak_rss_mb": round(sampler.tree_peak_mb, 1),
        "tree_peak_process": sampler.tree_peak_name,
        "object_store_peak_mb": round(sampler.store_peak_mb, 1),
        "spilled_mb": round(stats.spilled_bytes_total / 2**20, 1) if stats is not None else None,
        "sketch_store_mb": round(_dir_bytes(run / "sketches") / 2**20, 1),
        "outputs_mb": round(sum(_dir_bytes(run / d) for d in ("kept", "dropped", "invalid")) / 2**20, 1),
        "run_dir_mb": round(_dir_bytes(run) / 2**20, 1),
    }
    Path(spec["result"]).write_text(json.dumps(result))


def _overrides(k: int) -> list[str]:
    return [
        f"model.name_or_path={MODEL}",
        f"sketch.k={k}",
        "dpo.max_length=96",
        "resources.batch_size=16",
        "resources.actors_min=2",
        "resources.actors_max=2",
        "resources.cpus_per_actor=0.5",
    ]


def _planned(tmp: Path, data: Path, run: str, k: int) -> dict[str, Any]:
    """``congrad-ray plan --calibrate --json`` of the same run, in a process of its own: the estimate the user
    would have had before starting it (the calibration times one actor's thread on this machine, alone)."""
    config = tmp / "plan.yaml"
    config.write_text("{}\n")
    sets = [item for o in _overrides(k) for item in ("--set", o)]
    cmd = [sys.executable, "-m", "congrad_ray.cli", "plan", "--config", str(config), "--calibrate", "--json"]
    out = subprocess.run(
        [*cmd, *sets, "--input", str(data), "--output", run], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["estimate"]


def _measure(tmp: Path, rows: int, k: int, single: bool) -> dict[str, Any]:
    layout = "single" if single else "sharded"
    data = _corpus(tmp / f"corpus-{rows}-{layout}", rows, single)
    spec = {"k": k, "data": str(data), "run": str(tmp / f"run-{rows}-{layout}-{k}"), "result": str(tmp / "r.json")}
    estimate = _planned(tmp, data, spec["run"], k)
    spec_file = tmp / "spec.json"
    spec_file.write_text(json.dumps(spec))
    ray_tmp = tempfile.mkdtemp(prefix="rb-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    env = {key: v for key, v in os.environ.items() if key != "RAY_ADDRESS"}  # always an embedded Ray
    env["RAY_TMPDIR"] = ray_tmp
    subprocess.run([sys.executable, "-m", "benchmarks.filter_1m", str(spec_file)], check=True, env=env)
    return {
        **json.loads(Path(spec["result"]).read_text()),
        "layout": layout,
        "k": k,
        "shards": len(list(data.glob("*.parquet"))),
        "estimate": estimate,
        "run_dir": spec["run"],
    }


def store_precision(run: Path) -> dict[str, dict[str, float]]:
    """A float32 run's sketch store re-encoded as each 16-bit store type and scored and selected again against the
    same ``g*``: exactly what a run with that ``sketch.store_dtype`` computes (its actors sketch in float32, take
    the sums before rounding and store the rounded values; tests/test_filter_integration.py checks this). Per type:
    Jaccard of the kept sets, the largest score change, the store's bytes."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from congrad_ray.config import load_filter_config
    from congrad_ray.pipeline.reduce import load_direction
    from congrad_ray.pipeline.select_stage import SCORE_SCHEMA, decide, score_batch
    from congrad_ray.pipeline.sketch_codec import encode_sketches, sketch_matrix
    from congrad_ray.storage import Location

    loc = Location.of(str(run))
    cfg = load_filter_config(run / "config.yaml", check_paths=False)
    seen = json.loads((run / "_state" / "decisions.json").read_text())["seen"]
    g_star = load_direction(loc)["g_star"]
    reference = pq.read_table(run / "scores.parquet", columns=["id", "keep", "gradient_score"]).sort_by("id")
    kept = set(reference.filter(reference["keep"])["id"].to_pylist())
    out = {}
    for dtype in ("float16", "bfloat16"):
        tables, nbytes = [], 0
        for f in sorted((run / "sketches").glob("*.parquet")):
            t = pq.read_table(f)
            ok = t.filter(pa.compute.equal(t["status"], "ok"))
            stored = encode_sketches(torch.from_numpy(sketch_matrix(ok["sketch"])), dtype)
            nbytes += stored.nbytes
            col = pa.chunked_array([stored]) if ok.num_rows else ok["sketch"]
            rest = t.filter(pa.compute.not_equal(t["status"], "ok"))
            ok = ok.set_column(ok.schema.get_field_index("sketch"), "sketch", col)
            tables.append(score_batch(ok, g_star, cfg.score.kind).cast(SCORE_SCHEMA))
            tables.append(score_batch(rest, g_star, cfg.score.kind).cast(SCORE_SCHEMA))  # duplicates: no sketch
        scored = pa.concat_tables(tables).sort_by([("id", "ascending"), ("_row", "ascending")])
        d = decide(scored, cfg, seen).sort_by("id")
        ours = set(d.filter(d["keep"])["id"].to_pylist())
        delta = np.abs(d["gradient_score"].to_numpy() - reference["gradient_score"].to_numpy())
        out[dtype] = {
            "kept_jaccard": len(ours & kept) / len(ours | kept),
            "kept_changed": len(ours ^ kept) // 2,
            "max_abs_score_change": float(np.nanmax(delta)),
            "sketch_values_mb": round(nbytes / 2**20, 1),
        }
    return out


def _label(rows: int) -> str:
    return (
        f"{rows // 1_000_000}m"
        if rows >= 1_000_000 and rows % 1_000_000 == 0
        else f"{rows // 1000}k"
        if rows >= 1000
        else str(rows)
    )


def run(quick: bool) -> Iterator[dict[str, Any]]:
    small, large = (1000, 2000) if quick else (100_000, 1_000_000)
    widths = [256] if quick else [int(k) for k in os.environ.get("BENCH_1M_K", "1024").split(",")]
    layouts = os.environ.get("BENCH_1M_LAYOUTS", "sharded" if quick else "sharded,single").split(",")
    base = os.environ.get("BENCH_1M_DIR")  # keep the corpora between invocations (1M rows take a minute to write)
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        for k in widths:
            a = _measure(Path(tmp), small, k, single=False)
            b = _measure(Path(tmp), large, k, single=False)
            yield from _figures(a, b, k, quick)
            for dtype, measured in store_precision(Path(b["run_dir"])).items():
                yield figure(
                    f"store_{dtype}_kept_jaccard_{_label(large)}" + ("" if k == 1024 else f"_k{k}"),
                    "jaccard",
                    measured["kept_jaccard"],
                    ">= 0.999",
                    {"quick": quick, **measured, "float32_store_mb": b["sketch_store_mb"]},
                )
            if "single" in layouts:
                c = _measure(Path(tmp), large, k, single=True)
                yield figure(
                    f"filter_{_label(large)}_single_file_vs_sharded" + ("" if k == 1024 else f"_k{k}"),
                    "ratio",
                    c["total_s"] / b["total_s"],
                    "<= 1.2",
                    {"quick": quick, "single": c, "sharded_total_s": b["total_s"]},
                )


def _figures(a: dict[str, Any], b: dict[str, Any], k: int, quick: bool) -> Iterator[dict[str, Any]]:
    big, small = _label(b["rows"]), _label(a["rows"])
    suffix = "" if k == 1024 else f"_k{k}"
    common = {"quick": quick, "k": k, "model": MODEL, "actors": b["actors"]}
    sketch_alone = b["bucket_seconds"] / max(1, b["actors"])
    yield figure(
        f"filter_{big}_sketch_share{suffix}",
        "ratio",
        sketch_alone / b["total_s"],
        ">= 0.85",
        {**common, "run": b, "small": a},
    )
    yield figure(
        f"filter_{big}_first_bucket_share{suffix}",
        "ratio",
        b["first_bucket_after_s"] / max(1e-9, b["sketch_span_s"]),
        "<= 0.1",
        {**common, "first_bucket_after_s": b["first_bucket_after_s"], "sketch_span_s": b["sketch_span_s"]},
    )
    for run in (a, b):
        yield figure(
            f"plan_estimate_vs_measured_{_label(run['rows'])}{suffix}",
            "ratio",
            run["estimate"]["actor_s"] / run["bucket_seconds"],
            None,
            {
                **common,
                "estimate": run["estimate"],
                "measured_actor_s": run["bucket_seconds"],
                "total_s": run["total_s"],
            },
        )
    for what in ("driver", "actor"):
        key = f"{what}_peak_rss_mb"
        yield figure(
            f"{what}_peak_rss_{big}_vs_{small}{suffix}",
            "ratio",
            b[key] / a[key],
            "<= 1.2",
            {**common, key: [a[key], b[key]]},
        )


if __name__ == "__main__":
    child(sys.argv[1])
