"""Smoke test of the benchmark entry point: ``python -m benchmarks --only core --quick`` runs and prints one
well-formed JSON record per line. Timings are machine-dependent, so nothing here asserts on them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"bench", "group", "metric", "value", "goal", "met", "details"}
CORE_FIGURES = {
    "count_sketch_vs_clone",
    "count_sketch_vs_dense_projection",
    "sketch_pass_vs_train_step",
    "sketch_pass_fft_route_vs_train_step",
    "sketch_pass_vs_loop",
    "sketch_cosine_rmse_k1024",
    "sketch_cosine_rmse_k4096",
    "sketch_cosine_rmse_k8192",
}


def _run_quick(group: str, timeout: float = 280) -> subprocess.CompletedProcess:
    """``python -m benchmarks --only GROUP --quick``, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", "--only", group, "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.integration  # about 20 s of CPU: it runs every core figure, so it sits with the heavy tier
@pytest.mark.timeout(300)
def test_core_benchmarks_quick_print_json_lines():
    proc = _run_quick("core")
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines, proc.stderr[-4000:]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    for record in records:
        assert set(record) == KEYS, record
        assert record["group"] == "core"
        assert isinstance(record["value"], (int, float))
        assert isinstance(record["details"], dict)
        assert record["goal"] is None or record["goal"].split(" ")[0] in ("<=", ">=")
        assert record["met"] is None if record["goal"] is None else isinstance(record["met"], bool)
        assert record["details"]["quick"] is True
    assert {r["bench"] for r in records} == CORE_FIGURES


def test_unknown_group_is_an_error():
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--only", "no_such_group"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "no_such_group" in proc.stderr and "core" in proc.stderr


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_filter_benchmarks_quick_print_json_lines():
    proc = _run_quick("filter", timeout=880)
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert [r["bench"] for r in records] == [
        "tokenize_batched_vs_per_pair",
        "filter_rows_per_s_vs_in_process",
        "actor_peak_rss_2000_vs_500",
    ]
    assert all(set(r) == KEYS and r["value"] > 0 for r in records)


@pytest.mark.integration  # about 20 s of CPU
@pytest.mark.timeout(300)
def test_peers_benchmark_quick_runs_with_or_without_bergson():
    """Where bergson is not installed (CI) its contestants are skipped with a line naming the recipe; congrad-ray's
    own figures (vs the activation-only floor, vs the dense-JL reference, the bs=1 loop) are measured either way."""
    import importlib.util

    proc = _run_quick("peers")
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = {r["bench"]: r for r in map(json.loads, filter(str.strip, proc.stdout.splitlines()))}
    assert all(set(r) == KEYS and r["group"] == "peers" for r in records.values())
    table = records["peers_table_h128"]["details"]["table"]
    assert {"train_step", "floor", "congrad_auto", "congrad_fft", "congrad_explicit", "dense_jl"} <= set(table)
    assert all(0 < table[n]["cosine_rmse"]["shared_prefix"] < 0.2 for n in ("congrad_auto", "dense_jl"))
    assert records["sketch_pass_vs_floor_h128"]["value"] > 0 and "sketch_rmse_vs_dense_jl_h128" in records
    has_bergson = importlib.util.find_spec("bergson") is not None
    assert ("sketch_pass_vs_bergson_h128" in records) == has_bergson == ("bergson_p16" in table)
    assert has_bergson or "bergson is not installed" in proc.stderr


@pytest.mark.integration  # two measured filter runs of 1,000 and 2,000 rows, each a fresh process and Ray
@pytest.mark.timeout(600)
def test_filter_1m_benchmark_quick_prints_its_figures():
    proc = _run_quick("filter_1m", timeout=580)
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert [r["bench"] for r in records] == [
        "filter_2k_sketch_share_k256",
        "filter_2k_first_bucket_share_k256",
        "plan_estimate_vs_measured_1k_k256",
        "plan_estimate_vs_measured_2k_k256",
        "driver_peak_rss_2k_vs_1k_k256",
        "actor_peak_rss_2k_vs_1k_k256",
        "store_float16_kept_jaccard_2k_k256",
        "store_bfloat16_kept_jaccard_2k_k256",
    ]
    assert all(set(r) == KEYS and r["value"] > 0 for r in records)
    run = records[0]["details"]["run"]
    assert run["rows"] == 2000 and run["totals"]["kept"] + run["totals"]["dropped"] == 2000
    assert run["sketch_store_mb"] > 0 and run["first_bucket_after_s"] > 0


@pytest.mark.integration  # a few seconds of CPU
@pytest.mark.timeout(300)
def test_routes_benchmark_quick_reports_the_cost_model_regret():
    proc = _run_quick("routes")
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = {r["bench"]: r for r in map(json.loads, filter(str.strip, proc.stdout.splitlines()))}
    assert set(records) == {"route_model_regret_k1024_t32", "fft_batch_spill_ratio_k1024", "fft_route_share_rfft_k1024"}
    regret = records["route_model_regret_k1024_t32"]
    assert regret["value"] >= 1.0 and regret["goal"] == "<= 1.1"  # the picked route is never faster than the faster
    for shape in regret["details"]["shapes"].values():
        assert shape["model_picks"] in ("fft", "explicit") and shape["fft_ms"] > 0 and shape["explicit_ms"] > 0
    assert records["fft_route_share_rfft_k1024"]["value"] > 0


@pytest.mark.integration  # a few seconds of CPU: three hash families on the quick model, one seed
@pytest.mark.timeout(300)
def test_maps_benchmark_quick_compares_hash_families_with_dense_jl():
    proc = _run_quick("maps")
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = {r["bench"]: r for r in map(json.loads, filter(str.strip, proc.stdout.splitlines()))}
    assert set(records) == {f"map_rmse_vs_dense_jl_h128_{f}" for f in ("independent", "tensor", "tensor_q16", "engine")}
    for record in records.values():
        assert set(record) == KEYS and record["value"] > 0
        assert 0 < record["details"]["rmse"]["shared_prefix"] < 0.5


def test_maps_engine_row_is_the_sketch_pass_by_its_definition():
    """The ``maps`` group's ``engine`` family (the definition of ``S`` on exact gradients, shared inputs declared)
    is what the sketch pass computes: the row speaks for the engine."""
    import torch

    from benchmarks.maps import engine_sketched, shared_inputs
    from congrad_ray.core import CountSketch, scoped_linears, sequence_gradients_loop, sketch_sequence_gradients
    from congrad_ray.models import build_tiny_model, build_tiny_tokenizer

    model = build_tiny_model(build_tiny_tokenizer()).eval()
    ids = torch.randint(3, 400, (3, 10), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    linears = scoped_linears(model, "linear")
    grads = {
        n: g.flatten(2) if g.dim() > 2 else g.unsqueeze(1)
        for n, g in sequence_gradients_loop(model, ids, mask, linears).items()
    }
    by_definition = engine_sketched(grads, shared_inputs(model, linears, ids, mask), 256, 7)
    fast = sketch_sequence_gradients(model, ids, mask, linears, CountSketch(256, 7))[0]
    torch.testing.assert_close(fast, by_definition, rtol=1e-4, atol=1e-5 * by_definition.abs().max().item())
