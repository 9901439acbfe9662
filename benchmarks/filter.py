"""Filter-engine figures (issue 3): end-to-end throughput on embedded Ray vs the in-process core on the same rows,
and the sketch actors' peak memory at 10k vs 100k rows (streaming: it must not grow with the data).

* ``filter_rows_per_s_vs_in_process``: rows/s of ``run_filter`` (validate, tokenise, bucket, sketch on 2 actors,
  reduce, score, select, write outputs and report) on a freshly started embedded Ray (its start not timed), over
  rows/s of the same work done by the core in one process (tokenise, sketch in the same micro-batches with all CPUs,
  aggregate, PCGrad, score, select, no writes), at 32k rows; ``..._8k`` the same at 8k rows, where Ray's fixed
  start-up cost weighs more. Goal >= 0.7. ``filter_steady_rows_per_s_vs_in_process``: the ratio of the slopes (rows/s once started),
  with each side's fixed cost in its details.
* ``actor_peak_rss_100k_vs_10k``: the largest peak RSS of any sketch actor at 100k rows over that at 10k rows.
  Goal <= 1.1.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._common import cpu_count, figure, setup_torch

MODEL = "tiny://llama?hidden_size=64&intermediate_size=128&num_attention_heads=2&num_key_value_heads=1"
RSS_MODEL = (
    "tiny://llama?hidden_size=32&intermediate_size=64&num_attention_heads=1&num_key_value_heads=1&num_hidden_layers=1"
)


def _corpus(out: Path, rows: int) -> Path:
    from congrad_ray.demo import CorpusSpec, write_corpus

    spec = CorpusSpec(pairs_per_language=rows // 8, heldout_per_language=0)
    write_corpus(spec, out, shards=max(1, rows // 5000))
    return out / "train"


def _config(data: Path, out: Path, model: str, k: int, *extra: str) -> Any:
    from congrad_ray.config import load_filter_config

    overrides = [
        f"model.name_or_path={model}",
        f"sketch.k={k}",
        "dpo.max_length=96",
        "resources.batch_size=16",
        "resources.actors_min=2",
        "resources.actors_max=2",
        "sketch.rows_per_bucket=1024",
        *extra,
    ]
    return load_filter_config(None, overrides, [str(data)], str(out))


def in_process(cfg: Any) -> int:
    """The same work as the filter, by the core in this process; returns the rows handled."""
    import numpy as np
    import pyarrow.parquet as pq
    import torch

    from congrad_ray.core import LanguageSums, SelectionRule, pcgrad, score, select
    from congrad_ray.engine import SketchEngine
    from congrad_ray.inputs import materialize_inputs
    from congrad_ray.tokenization import tokenize_pair

    table = pq.read_table(materialize_inputs(cfg.input.paths)[0]).to_pylist()
    engine = SketchEngine.from_config(cfg, device="cpu")
    pairs = [tokenize_pair(engine.tokenizer, r["prompt"], r["chosen"], r["rejected"]) for r in table]
    order = sorted(
        range(len(pairs)), key=lambda i: (len(pairs[i].prompt_ids) + len(pairs[i].chosen_ids), table[i]["id"])
    )
    sketches = torch.zeros(len(pairs), cfg.sketch.k)
    b = cfg.resources.batch_size
    for s in range(0, len(order), b):
        idx = order[s : s + b]
        sketches[idx] = engine.sketch_pairs([pairs[i] for i in idx]).sketch
    langs = [r["lang"] for r in table]
    sums = LanguageSums.of(sketches, langs)
    direction = pcgrad(sums.means(), sums.langs, cfg.surgery.seed)
    scores = score(sketches, direction.g_star).numpy()
    select(scores, np.array(langs), np.array([r["id"] for r in table]), SelectionRule("top_rho", cfg.selection.rho))
    return len(table)


def _timed_pair(rows: int, tmp: Path) -> dict[str, Any]:
    """In-process core, then the filter on a freshly started embedded Ray, on the same ``rows``.

    Ray is started (and its start not timed) for each size, so that every size pays the same cold start of the
    worker processes; the in-process side's imports are done before its timer starts.
    """
    import ray

    from congrad_ray.pipeline.filter_run import run_filter

    data = _corpus(tmp / f"corpus-{rows}", rows)
    cfg = _config(data, tmp / f"run-{rows}", MODEL, 1024)
    start = time.perf_counter()
    n = in_process(cfg)
    local_s = time.perf_counter() - start
    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=cpu_count(), include_dashboard=False)
    init_s = time.perf_counter() - t0
    try:
        start = time.perf_counter()
        manifest = run_filter(cfg)
        ray_s = time.perf_counter() - start
    finally:
        ray.shutdown()
    assert manifest["counts"]["input_rows"] == n
    return {
        "rows": n,
        "in_process_s": local_s,
        "ray_s": ray_s,
        "ray_init_s": round(init_s, 2),
        "stage_timings_s": manifest["timings_s"],
    }


def throughput(sizes: tuple[int, ...]) -> Iterator[dict[str, Any]]:
    """One figure per corpus size, then (with two sizes) the start-up cost and the steady-state ratio.

    A run costs ``fixed + rows / rate``: Ray's fixed part is its worker processes importing torch / transformers /
    TRL and building the model (seconds on 2 cores, paid once per run); the slope is what a large corpus sees.
    From two sizes: ``rate = (n2 - n1) / (t2 - t1)`` for each side, ``fixed = t1 - n1 / rate``.
    """
    import congrad_ray.engine  # noqa: F401  (the in-process side's imports, outside its timer)
    import congrad_ray.tokenization  # noqa: F401

    env = setup_torch()
    with tempfile.TemporaryDirectory() as tmp:
        pairs = [_timed_pair(rows, Path(tmp)) for rows in sizes]
    common = {**env, "actors": 2, "model": MODEL, "k": 1024}
    for p in pairs:
        n = p["rows"]
        suffix = "" if p is pairs[-1] else f"_{n // 1000}k" if n >= 1000 else f"_{n}"
        yield figure(
            f"filter_rows_per_s_vs_in_process{suffix}",
            "ratio",
            p["in_process_s"] / p["ray_s"],
            ">= 0.7",
            {
                **common,
                "rows": n,
                "ray_init_s": p["ray_init_s"],
                "ray_rows_per_s": round(n / p["ray_s"], 1),
                "in_process_rows_per_s": round(n / p["in_process_s"], 1),
                "stage_timings_s": p["stage_timings_s"],
            },
        )
    if len(pairs) == 2:
        a, b = pairs
        dn = b["rows"] - a["rows"]
        ray_rate, local_rate = dn / (b["ray_s"] - a["ray_s"]), dn / (b["in_process_s"] - a["in_process_s"])
        yield figure(
            "filter_steady_rows_per_s_vs_in_process",
            "ratio",
            ray_rate / local_rate,
            None,
            {
                **common,
                "rows": [a["rows"], b["rows"]],
                "ray_steady_rows_per_s": round(ray_rate, 1),
                "in_process_steady_rows_per_s": round(local_rate, 1),
                "ray_fixed_s": round(a["ray_s"] - a["rows"] / ray_rate, 1),
                "in_process_fixed_s": round(a["in_process_s"] - a["rows"] / local_rate, 1),
            },
        )


def peak_rss(rows_small: int, rows_large: int) -> Iterator[dict[str, Any]]:
    import ray

    from congrad_ray.pipeline.filter_run import run_filter
    from congrad_ray.storage import Location

    peaks, seconds = {}, {}
    ray.init(address="local", num_cpus=cpu_count(), include_dashboard=False)
    try:
        for rows in (rows_small, rows_large):
            with tempfile.TemporaryDirectory() as tmp:
                data = _corpus(Path(tmp) / "corpus", rows)
                run = Path(tmp) / "run"
                start = time.perf_counter()
                run_filter(_config(data, run, RSS_MODEL, 256), report=False)
                seconds[rows] = round(time.perf_counter() - start, 1)
                peaks[rows] = Location.of(str(run)).join("_state", "sketch.json").read_json()["actor_peak_rss_mb"]
    finally:
        ray.shutdown()
    yield figure(
        "actor_peak_rss_100k_vs_10k" if rows_large == 100_000 else f"actor_peak_rss_{rows_large}_vs_{rows_small}",
        "ratio",
        peaks[rows_large] / peaks[rows_small],
        "<= 1.1",
        {
            "rows": [rows_small, rows_large],
            "peak_rss_mb": [peaks[rows_small], peaks[rows_large]],
            "run_s": [seconds[rows_small], seconds[rows_large]],
            "rows_per_bucket": 1024,
            "model": RSS_MODEL,
            "k": 256,
        },
    )


def tokenize_speed(rows: int) -> Iterator[dict[str, Any]]:
    """The sketch actor's batched tokenisation of a bucket against one pair at a time (TRL's way, its twin), side
    by side on the same demo rows (the actor pays it per bucket, before its model work)."""
    from congrad_ray.demo import CorpusSpec, generate_pairs
    from congrad_ray.models import load_tokenizer, resolve_model_path
    from congrad_ray.tokenization import tokenize_pair, tokenize_pairs

    from ._common import race

    tok = load_tokenizer(resolve_model_path(MODEL))
    texts = [
        (r["prompt"], r["chosen"], r["rejected"]) for r in generate_pairs(CorpusSpec(pairs_per_language=rows // 8))
    ]
    texts = texts[:rows]
    best = race(
        {"batched": lambda: tokenize_pairs(tok, texts), "per_pair": lambda: [tokenize_pair(tok, *t) for t in texts]},
        repeat=3,
    )
    yield figure(
        "tokenize_batched_vs_per_pair",
        "ratio",
        best["per_pair"] / best["batched"],
        ">= 2",
        {"rows": len(texts), "batched_s": round(best["batched"], 3), "per_pair_s": round(best["per_pair"], 3)},
    )


def run(quick: bool) -> Iterator[dict[str, Any]]:
    yield from tokenize_speed(1000 if quick else 4096)
    yield from throughput((400,) if quick else (8000, 32000))
    yield from peak_rss(*((500, 2000) if quick else (10_000, 100_000)))
