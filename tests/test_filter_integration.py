"""The filter engine on a local Ray cluster: count invariant, determinism, resume, actor fault, select."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.filter_helpers import outcome_ids, read_dir, small_config, small_corpus

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return small_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def baseline(ray_local, corpus, tmp_path_factory):
    from congrad_ray.pipeline.filter_run import run_filter

    run = tmp_path_factory.mktemp("baseline") / "run"
    manifest = run_filter(small_config(str(corpus), run, "resources.actors_min=2", "resources.actors_max=2"))
    return run, manifest


def test_every_row_lands_in_exactly_one_output(baseline, corpus):
    run, manifest = baseline
    source = pq.read_table(str(corpus)).to_pandas()
    ids = outcome_ids(run)
    assert (
        not (ids["kept"] & ids["dropped"])
        and not (ids["kept"] & ids["invalid"])
        and not (ids["dropped"] & ids["invalid"])
    )
    frames = [read_dir(run / n) for n in ("kept", "dropped", "invalid")]
    total = sum(len(f) for f in frames if f is not None)
    assert total == len(source) == manifest["counts"]["input_rows"]
    assert ids["kept"] | ids["dropped"] | ids["invalid"] == set(source["id"])
    kept = read_dir(run / "kept")
    assert kept["id"].is_unique
    # original columns carried through, plus score and reason
    assert {"prompt", "chosen", "rejected", "lang", "is_flipped", "score", "reason"} <= set(kept.columns)
    t = manifest["counts"]["totals"]
    assert t["kept"] == len(ids["kept"]) and t["dropped"] == len(ids["dropped"])
    # top-rho 0.5 per language: half of each language kept
    for lang, c in manifest["counts"]["per_language"].items():
        assert c["kept"] == (c["kept"] + c["dropped"] + 1) // 2, lang


def test_manifest_direction_and_report(baseline):
    run, manifest = baseline
    assert manifest["config_hash"] and manifest["versions"]["torch"] and manifest["seeds"]["sketch"] == 0
    assert set(manifest["direction"]["langs"]) == {"de", "en", "fr", "sw"}
    assert manifest["timings_s"]["sketch"] > 0
    for name in ("conflict_heatmap.png", "score_histograms.png", "kept_fraction.png", "summary.md", "summary.html"):
        assert (run / "report" / name).stat().st_size > 0
    sketches = read_dir(run / "sketches")
    assert {"id", "lang", "sketch", "loss", "margin", "policy_margin", "n_tokens"} <= set(sketches.columns)
    assert len(sketches["sketch"].iloc[0]) == 512 and sketches["policy_margin"].notna().all()
    # the per-language diagnosis, with separation: the demo corpus carries its ground truth (is_flipped)
    diagnosis = json.loads((run / "report" / "diagnosis.json").read_text())
    assert set(diagnosis) == {"de", "en", "fr", "sw"} and all("others" in d for d in diagnosis.values())
    assert any(0.0 <= d["auroc"] <= 1.0 for d in diagnosis.values() if "auroc" in d)
    assert "## Per-language diagnosis" in (run / "report" / "summary.md").read_text()
    assert (run / "config.yaml").exists()


def test_kept_set_loads_in_datasets_for_trl(baseline):
    from datasets import load_dataset

    run, _ = baseline
    ds = load_dataset("parquet", data_files=str(run / "kept" / "*.parquet"), split="train")
    assert {"prompt", "chosen", "rejected"} <= set(ds.column_names) and len(ds) > 0


def test_kept_set_is_identical_for_one_actor_and_other_block_sizes(ray_local, corpus, baseline, tmp_path):
    from congrad_ray.pipeline.filter_run import run_filter

    run = tmp_path / "one-actor"
    run_filter(
        small_config(str(corpus), run, "resources.actors_min=1", "resources.actors_max=1", "input.rows_per_unit=17")
    )
    assert outcome_ids(run) == outcome_ids(baseline[0])
    a = read_dir(run / "kept").set_index("id")["score"].sort_index()
    b = read_dir(baseline[0] / "kept").set_index("id")["score"].sort_index()
    assert (a == b).all()  # bitwise: sketches depend on bucket content only


def test_select_reruns_from_stored_sketches(ray_local, baseline, tmp_path):
    import shutil

    from congrad_ray.config import load_filter_config
    from congrad_ray.pipeline.filter_run import reselect

    run = tmp_path / "reselect"
    shutil.copytree(baseline[0], run)
    cfg = load_filter_config(run / "config.yaml", ["selection.rho=0.25", f"run.output={run}"])
    manifest = reselect(cfg)
    assert "sketch" in manifest["resumed_stages"]
    for lang, c in manifest["counts"]["per_language"].items():
        n = c["kept"] + c["dropped"]
        assert c["kept"] == -(-n // 4), lang
    assert outcome_ids(run)["kept"] < outcome_ids(baseline[0])["kept"]  # the best quarter is inside the best half


@pytest.mark.parametrize("per_language", [False, True], ids=["g_star", "per_language"])
def test_driver_and_ray_data_scoring_agree(ray_local, baseline, per_language):
    import numpy as np

    from congrad_ray.pipeline.select_stage import score_all
    from congrad_ray.storage import Location

    run = Location.of(str(baseline[0]))
    k = baseline[1]["config"]["sketch"]["k"]
    rng = np.random.default_rng(0)
    g_star = rng.standard_normal(k)
    langs = sorted(baseline[1]["counts"]["per_language"])
    directions = {lang: rng.standard_normal(k) for lang in langs} if per_language else None
    on_driver = score_all(run, g_star, "cosine", directions, driver_max_mb=1e6)
    on_ray = score_all(run, g_star, "cosine", directions, driver_max_mb=0.0)
    assert on_driver.num_rows == on_ray.num_rows > 0
    assert on_driver.equals(on_ray)


def test_selection_in_a_ray_task_is_the_one_on_the_driver(ray_local, baseline, tmp_path):
    """Past ``driver_score_max_mb`` the selection and the report run in one Ray task (the driver holds no row): the
    same scores.parquet (sorted by _row, in row groups), outputs, counts and report as on the driver."""
    import shutil

    from congrad_ray.config import load_filter_config
    from congrad_ray.pipeline.filter_run import reselect

    run = tmp_path / "in-task"
    shutil.copytree(baseline[0], run, ignore=shutil.ignore_patterns("kept", "dropped", "invalid", "report"))
    (run / "_state" / "decisions.json").unlink()
    cfg = load_filter_config(run / "config.yaml", ["resources.driver_score_max_mb=0", f"run.output={run}"])
    manifest = reselect(cfg)
    assert json.loads((run / "_state" / "decisions.json").read_text())["summary"]["where"] == "task"
    assert manifest["counts"] == baseline[1]["counts"] and manifest["scores"] == baseline[1]["scores"]
    mine, theirs = pq.read_table(run / "scores.parquet"), pq.read_table(baseline[0] / "scores.parquet")
    assert mine.equals(theirs)
    assert mine.column("_row").to_pylist() == sorted(mine.column("_row").to_pylist())
    assert outcome_ids(run) == outcome_ids(baseline[0])
    assert (run / "report" / "diagnosis.json").read_text() == (baseline[0] / "report" / "diagnosis.json").read_text()


def test_actor_killed_mid_run_is_restarted_and_result_unchanged(ray_local, corpus, baseline, tmp_path):
    from congrad_ray.pipeline.filter_run import run_filter

    run = tmp_path / "fault"
    killed: list[int] = []

    def killer():
        import psutil

        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            if list((run / "partials").glob("*.parquet")):  # one bucket done, more to go
                # this test's own Ray only (its raylet and workers descend from this process): never another
                # run's actor on a shared machine
                for proc in psutil.Process().children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        if "GradientSketcher" in " ".join(proc.cmdline()):
                            os.kill(proc.pid, signal.SIGKILL)  # the actor's process, as a crash would
                            killed.append(proc.pid)
                            return
            time.sleep(0.1)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    run_filter(small_config(str(corpus), run, "resources.actors_min=1", "resources.actors_max=1", "sketch.buckets=8"))
    t.join(timeout=5)
    assert killed, "no sketch actor was killed (the run finished first?)"
    baseline_8 = tmp_path / "clean-8"
    run_filter(small_config(str(corpus), baseline_8, "sketch.buckets=8"))
    assert outcome_ids(run) == outcome_ids(baseline_8)


def _settled_count(partials: Path, quiet_s: float = 3.0, timeout_s: float = 60.0) -> int:
    """Finished buckets (not a killed writer's ``_tmp-*`` file) once no new one has appeared for ``quiet_s``."""
    count, since, deadline = -1, time.time(), time.time() + timeout_s
    while time.time() < deadline:
        now = len(list(partials.glob("bucket-*.parquet")))
        if now != count:
            count, since = now, time.time()
        elif time.time() - since >= quiet_s:
            break
        time.sleep(0.2)
    return count


def test_killed_run_resumes_to_the_same_result(corpus, baseline, tmp_path):
    run = tmp_path / "resume"
    cfg = small_config(str(corpus), run, "sketch.buckets=4")
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(cfg.to_yaml())
    cmd = [sys.executable, str(ROOT / "jobs" / "filter.py"), "--config", str(cfg_file)]
    env = {**os.environ, "RAY_ADDRESS": ""}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list((run / "partials").glob("*.parquet")):
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = _settled_count(run / "partials")  # Ray's workers die with their driver, a moment later
    assert done_before >= 1 and not (run / "manifest.json").exists()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    import json

    sketch_state = json.loads((run / "_state" / "sketch.json").read_text())
    assert sketch_state["buckets_resumed"] == done_before  # finished buckets were not sketched again
    assert sketch_state["buckets_resumed"] + sketch_state["buckets_sketched"] == 4
    assert outcome_ids(run) == outcome_ids(baseline[0])


@pytest.mark.parametrize(
    "overrides",
    [
        ["aggregation.method=ema", "aggregation.ema_batch_size=4"],
        ["surgery.method=per_language"],
        ["surgery.method=mean", "score.kind=dot"],
        ["selection.rule=random"],
        ["selection.rule=threshold", "selection.tau=0.0", "selection.min_per_language=3"],
        ["score.kind=hybrid", "selection.budgets=agreement"],
    ],
    ids=["ema", "per_language", "mean_dot", "random", "threshold", "hybrid_budgets"],
)
def test_every_ablation_reselects_from_stored_sketches(ray_local, baseline, tmp_path, overrides):
    import shutil

    from congrad_ray.config import load_filter_config
    from congrad_ray.pipeline.filter_run import reselect

    run = tmp_path / "ablation"
    shutil.copytree(baseline[0], run)
    manifest = reselect(load_filter_config(run / "config.yaml", [*overrides, f"run.output={run}"]))
    counts = manifest["counts"]
    assert counts["input_rows"] == baseline[1]["counts"]["input_rows"]
    for lang, c in counts["per_language"].items():
        assert c["kept"] >= min(3 if "threshold" in overrides[0] else 1, c["kept"] + c["dropped"]), lang
    ids = outcome_ids(run)
    assert ids["kept"] | ids["dropped"] == outcome_ids(baseline[0])["kept"] | outcome_ids(baseline[0])["dropped"]
    if overrides[0] != "selection.rule=random":
        assert read_dir(run / "kept")["score"].notna().all()


def test_select_with_another_run_seed_redraws_the_random_baseline(ray_local, baseline, tmp_path):
    """``run.seed`` draws the random baseline: ``select`` must redo the selection when only it changes (it is part
    of the selection fingerprint), not return the kept set of the old seed."""
    import shutil

    from congrad_ray.config import load_filter_config
    from congrad_ray.pipeline.filter_run import reselect

    run = tmp_path / "random"
    shutil.copytree(baseline[0], run)
    kept = []
    for seed in (0, 1):
        overrides = ["selection.rule=random", f"run.seed={seed}", f"run.output={run}"]
        manifest = reselect(load_filter_config(run / "config.yaml", overrides))
        assert manifest["seeds"]["run"] == seed
        kept.append(outcome_ids(run)["kept"])
    assert kept[0] != kept[1] and len(kept[0]) == len(kept[1])


def test_a_16_bit_store_is_the_float32_store_rounded(ray_local, corpus, baseline, tmp_path):
    """sketch.store_dtype bfloat16: the stored sketches are the float32 run's rounded (torch's rounding, the twin),
    the per-language sums and g* are the float32 run's bitwise (taken before rounding), and every score is the
    cosine of the rounded sketch with that g*."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import torch

    from congrad_ray.core import score
    from congrad_ray.pipeline.filter_run import run_filter
    from congrad_ray.pipeline.reduce import load_direction
    from congrad_ray.pipeline.sketch_codec import sketch_matrix
    from congrad_ray.storage import Location

    run = tmp_path / "bf16"
    run_filter(small_config(str(corpus), run, "sketch.store_dtype=bfloat16"), report=False)
    ours, base = (pq.read_table(str(r / "sketches")) for r in (run, baseline[0]))
    ours, base = (t.filter(pc.equal(t["status"], "ok")).sort_by("id") for t in (ours, base))
    assert ours.schema.field("sketch").type.value_type == pa.uint16()
    rounded = torch.from_numpy(sketch_matrix(base["sketch"])).to(torch.bfloat16).float().numpy()
    assert np.array_equal(sketch_matrix(ours["sketch"]), rounded)
    directions = [load_direction(Location.of(str(r))) for r in (run, baseline[0])]
    for name in ("g_star", "language_gradients"):
        assert np.array_equal(directions[0][name], directions[1][name])
    expected = score(torch.from_numpy(rounded), torch.tensor(directions[0]["g_star"])).numpy()
    scored = pq.read_table(run / "scores.parquet").to_pandas().set_index("id")
    got = scored.loc[ours["id"].to_pylist(), "gradient_score"].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    fp32 = pq.read_table(baseline[0] / "scores.parquet").to_pandas().set_index("id")
    assert not np.array_equal(got, fp32.loc[ours["id"].to_pylist(), "gradient_score"].to_numpy())  # it did round


def test_without_kept_sketches_the_store_is_gone_and_the_result_the_same(ray_local, baseline, tmp_path):
    """run.keep_sketches false: the same outputs as the baseline (sketches reused from it, so no model runs), no
    sketch store left; re-selecting with other options is refused in one line, the same options are a no-op."""
    import shutil

    from congrad_ray.config import load_filter_config
    from congrad_ray.errors import ConfigError
    from congrad_ray.pipeline.filter_run import reselect

    run = tmp_path / "transient"
    shutil.copytree(baseline[0], run, ignore=shutil.ignore_patterns("kept", "dropped", "invalid", "scores.parquet"))
    cfg = load_filter_config(run / "config.yaml", [f"run.output={run}", "run.keep_sketches=false"])
    manifest = reselect(cfg)
    assert not (run / "sketches").exists() and manifest["outputs"]["sketches"] is None
    assert outcome_ids(run) == outcome_ids(baseline[0])
    assert reselect(cfg)["counts"] == manifest["counts"]  # same options: scores.parquet is reused
    with pytest.raises(ConfigError, match="keep_sketches"):
        reselect(load_filter_config(run / "config.yaml", [f"run.output={run}", "selection.rho=0.25"]))


def test_append_grows_a_run_to_the_fresh_run_over_the_union(ray_local, corpus, baseline, tmp_path):
    """Two shards filtered, then the third appended (`filter --append`): only the new rows are sketched (one new
    bucket), and the selection over everything is the fresh three-shard run's: the same kept and dropped pairs,
    counts and scores up to the last bits of the appended pairs' sketches (their micro-batch mates differ). A row
    of the append whose id the run already has is a duplicate_id; an append of a file already in the run is
    refused."""
    import numpy as np
    import pandas as pd

    from congrad_ray.cli import main
    from congrad_ray.pipeline.filter_run import run_filter

    shards = sorted(corpus.glob("*.parquet"))
    run = tmp_path / "grown"
    run_filter(small_config([str(f) for f in shards[:2]], run), report=False)
    dup = pq.read_table(shards[0]).slice(0, 1)
    (tmp_path / "more").mkdir()
    pq.write_table(dup, tmp_path / "more" / "dup.parquet")
    assert main(["filter", "--append", str(shards[2]), str(tmp_path / "more"), "--run-dir", str(run)]) == 0
    state = json.loads((run / "_state" / "sketch.json").read_text())
    assert state["segments"] == 2 and state["buckets_sketched"] == 1 and state["buckets_resumed"] == 4
    ours, fresh = outcome_ids(run), outcome_ids(baseline[0])
    assert ours["kept"] == fresh["kept"] and ours["dropped"] == fresh["dropped"]
    invalid = read_dir(run / "invalid")
    assert invalid[invalid["id"] == dup["id"][0].as_py()]["reason"].tolist() == ["duplicate_id"]
    a, b = (
        pd.concat([read_dir(r / "kept"), read_dir(r / "dropped")]).set_index("id")["score"] for r in (run, baseline[0])
    )
    np.testing.assert_allclose(a.sort_index().to_numpy(), b.sort_index().to_numpy(), rtol=0, atol=1e-5)
    assert main(["filter", "--append", str(shards[1]), "--run-dir", str(run)]) == 2  # already in the run
