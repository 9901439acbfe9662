"""A multi-node cluster on this machine (a head with no CPUs for work, two 2-CPU worker nodes of `ray start`, token auth):
the filter and the DPO step run across the nodes with the single-node result, survive losing a node, and refuse
node-local paths or resources the cluster cannot offer before any work starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from congrad_ray import models
from tests.filter_helpers import TINY_MODEL, outcome_ids, read_dir, small_config
from tests.ray_cluster import ROOT, LocalCluster, run_driver, start_driver
from tests.s3_server import s3_server
from tests.test_train_integration import _registered_step, clean_corpus, train_overrides

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]  # fixtures count: cluster + two runs
SPREAD = ["resources.actors_min=2", "resources.actors_max=2", "resources.scheduling_strategy=SPREAD"]
SHARED = ["run.shared_filesystem=true"]  # /tmp is one filesystem for every node of this one machine


@pytest.fixture(scope="module")
def cluster():
    c = LocalCluster()
    try:
        c.start_head(num_cpus=0)
        c.add_worker(num_cpus=2)
        c.add_worker(num_cpus=2)
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def corpus(small_reference):
    return small_reference[0]


@pytest.fixture(scope="module")
def single_node(small_reference):
    """The same filter on an embedded single-node Ray (conftest): the result every cluster run must equal."""
    return small_reference[1]


def filter_job(corpus: Path, run: Path, *overrides: str) -> list[str]:
    cfg_file = run.parent / f"{run.name}.yaml"
    cfg_file.write_text(small_config(str(corpus), run, *SPREAD, *SHARED, *overrides).to_yaml())
    return [sys.executable, str(ROOT / "jobs" / "filter.py"), "--config", str(cfg_file)]


def train_job(corpus: Path, train: Path, out: Path, *extra: str) -> list[str]:
    from congrad_ray.train import load_train_config

    overrides = train_overrides(corpus, out, *SHARED, "scaling.placement_strategy=SPREAD", *extra, train=train)
    cfg_file = out.parent / f"{out.name}.yaml"
    cfg_file.write_text(load_train_config(None, overrides).to_yaml())
    return [sys.executable, str(ROOT / "jobs" / "train_dpo.py"), "--config", str(cfg_file)]


def scores(run: Path):
    return read_dir(run / "kept").set_index("id")["score"].sort_index()


def head_id(cluster: LocalCluster) -> str:
    return next(n["node_id"] for n in cluster.alive_nodes() if n["is_head_node"])


@pytest.fixture(scope="module")
def train_corpus(tmp_path_factory):
    return clean_corpus(tmp_path_factory.mktemp("train-corpus"))


DPO = ("optim.max_steps=12", "checkpoint.every_steps=4", "checkpoint.max_failures=2", "eval.max_pairs_per_language=6")


@pytest.fixture(scope="module")
def trained_across_nodes(cluster, train_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("dpo") / "run"
    cmd = train_job(train_corpus, train_corpus / "train", out, *DPO)
    done = run_driver(cmd, cluster.driver_env(), out.parent / "log.txt")
    assert done.returncode == 0, done.output[-3000:]
    return json.loads((out / "metrics.json").read_text())


def test_dpo_workers_run_on_two_nodes(cluster, trained_across_nodes):
    t = trained_across_nodes["training"]
    nodes = {w["node"] for w in t["workers"]}
    assert sorted(w["rank"] for w in t["workers"]) == [0, 1] and len(nodes) == 2 and head_id(cluster) not in nodes
    assert t["global_step"] == 12 and [h["step"] for h in t["loss_history"]] == list(range(1, 13))


def test_filter_across_nodes_equals_the_single_node_run(cluster, corpus, single_node, tmp_path):
    """Sketch actors on both worker nodes (the head offers no CPU): kept ids and scores equal the single-node run's."""
    run = tmp_path / "run"
    done = run_driver(filter_job(corpus, run), cluster.driver_env(), tmp_path / "log.txt")
    assert done.returncode == 0, done.output[-3000:]
    manifest = json.loads((run / "manifest.json").read_text())
    nodes = {a["node"] for a in manifest["sketch"]["actors"]}
    assert len(nodes) == 2 and head_id(cluster) not in nodes, manifest["sketch"]["actors"]
    assert all(a["device"] == "cpu" and a["gpu_ids"] == [] for a in manifest["sketch"]["actors"])
    assert manifest["cluster"]["nodes"] == 3 and not manifest["cluster"]["embedded"]
    ids = outcome_ids(run)
    assert sum(len(v) for v in ids.values()) == len(read_dir(corpus)) == manifest["counts"]["input_rows"]
    assert ids == outcome_ids(single_node) and (scores(run) == scores(single_node)).all()  # bitwise


def test_node_lost_mid_sketch_changes_nothing(cluster, corpus, single_node, tmp_path):
    """A worker node killed without grace mid-sketch, a replacement added: every input row lands once, and the
    result is the single-node one, bitwise."""
    run = tmp_path / "run"
    proc = start_driver(filter_job(corpus, run), cluster.driver_env(), tmp_path / "log.txt")
    deadline = time.time() + 300
    while not list((run / "partials").glob("bucket-*.parquet")):
        assert proc.poll() is None and time.time() < deadline, (tmp_path / "log.txt").read_text()[-3000:]
        time.sleep(0.1)
    victim = cluster.nodes[-1]
    cluster.kill_node(victim)  # mid-sketch: one bucket written, three to go
    cluster.add_worker(num_cpus=2)
    assert proc.wait(timeout=600) == 0, (tmp_path / "log.txt").read_text()[-4000:]
    manifest = json.loads((run / "manifest.json").read_text())
    assert head_id(cluster) not in {a["node"] for a in manifest["sketch"]["actors"]}
    ids = outcome_ids(run)
    assert sum(len(v) for v in ids.values()) == manifest["counts"]["input_rows"] == len(read_dir(corpus))
    assert ids == outcome_ids(single_node) and (scores(run) == scores(single_node)).all()  # bitwise


def test_node_lost_during_dpo_resumes_from_the_last_checkpoint(cluster, train_corpus, trained_across_nodes, tmp_path):
    out = tmp_path / "run"
    cmd = train_job(train_corpus, train_corpus / "train", out, *DPO)
    proc = start_driver(cmd, cluster.driver_env(), tmp_path / "log.txt")
    storage = out / "ray" / "congrad-dpo"
    deadline = time.time() + 400
    while _registered_step(storage) is None:
        assert proc.poll() is None and time.time() < deadline, (tmp_path / "log.txt").read_text()[-3000:]
        time.sleep(0.1)
    cluster.kill_node(cluster.nodes[-1])  # a worker node, with one Ray Train rank on it
    cluster.add_worker(num_cpus=2)
    assert proc.wait(timeout=600) == 0, (tmp_path / "log.txt").read_text()[-4000:]
    m = json.loads((out / "metrics.json").read_text())
    t, before = m["training"], trained_across_nodes["training"]
    assert t["resumed_from"] and t["resumed_from"][0] >= 4 and t["global_step"] == 12
    assert [h["step"] for h in t["loss_history"]] == list(range(1, 13))
    assert t["loss_history"] == before["loss_history"]  # the undisturbed run's losses, step for step
    measures = lambda e: {k: v for k, v in e["final"].items() if k != "pairs"}  # noqa: E731  (pairs: its run dir)
    assert measures(m["eval"]) == measures(trained_across_nodes["eval"])


def test_node_local_paths_are_refused_before_any_work(cluster, corpus, tmp_path):
    """`congrad-ray run` on a multi-node cluster with local paths and no shared filesystem declared: both steps'
    paths are refused, one line each naming the fix, before the filter starts."""
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "jobs" / "congrad.py"), "--input", str(corpus), "--output", str(out)]
    done = run_driver(cmd, cluster.driver_env(), tmp_path / "log.txt", timeout=120)
    assert done.returncode == 2, done.output[-3000:]
    errors = [line for line in done.output.splitlines() if line.startswith("error: ")]
    assert any(line.startswith(f"error: run.output: {out}/train is node-local") for line in errors), errors
    assert all("this cluster has 3 nodes" in e and "s3://" in e and "run.shared_filesystem: true" in e for e in errors)
    assert "Traceback" not in done.output and not out.exists()


def test_resources_the_cluster_lacks_fail_in_one_line(cluster, corpus, tmp_path):
    run = tmp_path / "run"
    cmd = filter_job(corpus, run, "resources.gpus_per_actor=1", "resources.actor_start_timeout_s=5")
    done = run_driver(cmd, cluster.driver_env(), tmp_path / "log.txt", timeout=240)
    assert done.returncode == 2, done.output[-3000:]
    line = next(line for line in done.output.splitlines() if line.startswith("error: resources:"))
    assert "GPU 1 each did not start within 5 s" in line and "3 node(s) offering CPU 4, GPU 0" in line, line
    assert not list((run / "partials").glob("*.parquet"))


def _job(cluster: LocalCluster, command: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return cluster.ray("job", command, "--address", cluster.dashboard, *args, timeout=timeout)


def _runtime_env(aws: dict[str, str], out: Path) -> Path:
    """The shipped runtime env plus what this store needs, the way a user adds credentials (outside the repo).
    Without its pip install of the working dir: these nodes run from this checkout's venv (as launcher nodes run the
    installed project), and Ray would give each node a copy of that whole venv to install into."""
    env = yaml.safe_load((ROOT / "configs" / "cluster" / "runtime_env.yaml").read_text())
    del env["pip"]
    env["env_vars"].update(aws, HF_HUB_OFFLINE="1", CONGRAD_RAY_CACHE=str(models.cache_dir()))
    out.write_text(yaml.safe_dump(env))
    return out


def test_job_submit_on_object_storage_resumes_trains_and_exports(cluster, corpus, single_node, tmp_path):
    """`ray job submit --working-dir .` of jobs/congrad.py (filter -> DPO -> evaluation) with input, run directory,
    Ray Train storage and the exported model on S3, credentials only in the runtime env. The first submission's
    driver is killed mid-sketch; the resubmitted job skips the finished buckets and gets the single-node kept set."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from congrad_ray.train import load_train_config

    with s3_server() as aws, pytest.MonkeyPatch.context() as mp:
        for key, value in aws.items():
            mp.setenv(key, value)
        s3, _ = pafs.FileSystem.from_uri("s3://congrad/")
        for split in ("train", "heldout"):
            pafs.copy_files(str(corpus.parent / split), f"congrad/input/{split}", destination_filesystem=s3)
        fcfg, tcfg = tmp_path / "filter.yaml", tmp_path / "train.yaml"
        fcfg.write_text(small_config("s3://congrad/input/train", tmp_path / "unused", *SPREAD).to_yaml())
        train_set = ["data.eval=[s3://congrad/input/heldout]", "scaling.placement_strategy=SPREAD"]
        train_set += ["scaling.num_workers=2", "scaling.cpus_per_worker=0.5", "dpo.max_length=96"]
        train_set += ["optim.max_steps=4", "optim.batch_size=4", "checkpoint.every_steps=2", "eval.batch_size=32"]
        train_set += [f"model.name_or_path={TINY_MODEL}", "eval.max_pairs_per_language=4"]
        tcfg.write_text(load_train_config(None, train_set, check_paths=False).to_yaml())
        out = "s3://congrad/runs/r1"
        entry = ["python", "jobs/congrad.py", "--filter", str(fcfg), "--train", str(tcfg), "--output", out]
        renv = ["--working-dir", str(ROOT), "--runtime-env", str(_runtime_env(aws, tmp_path / "renv.yaml"))]

        first = _job(cluster, "submit", "--no-wait", "--submission-id", "congrad-s3-1", *renv, "--", *entry)
        assert first.returncode == 0, first.stderr[-3000:]
        partials = "congrad/runs/r1/filter/partials"
        deadline = time.time() + 600
        while not [
            i for i in s3.get_file_info(pafs.FileSelector(partials, allow_not_found=True)) if "bucket-" in i.path
        ]:
            info = cluster.job_info("congrad-s3-1")
            assert info["status"] in ("PENDING", "RUNNING") and time.time() < deadline, info
            time.sleep(0.5)
        os.kill(int(cluster.job_info("congrad-s3-1")["driver_info"]["pid"]), signal.SIGKILL)  # the driver dies
        while cluster.job_info("congrad-s3-1")["status"] != "FAILED":
            assert time.time() < deadline
            time.sleep(0.5)

        second = _job(cluster, "submit", "--submission-id", "congrad-s3-2", *renv, "--", *entry)
        logs = second.stdout + second.stderr
        assert second.returncode == 0 and "succeeded" in logs.lower(), logs[-4000:]
        assert "congrad-ray run" in logs and "240 rows" in logs  # the plan and progress reach `ray job logs`

        read = lambda path: json.loads(s3.open_input_stream(path).read())  # noqa: E731
        sketch = read("congrad/runs/r1/filter/_state/sketch.json")
        assert sketch["buckets_resumed"] >= 1 and sketch["buckets_resumed"] + sketch["buckets_sketched"] == 4
        kept = pq.read_table("congrad/runs/r1/filter/kept", filesystem=s3).to_pandas().set_index("id")["score"]
        assert set(kept.index) == outcome_ids(single_node)["kept"]
        assert (kept.sort_index() == scores(single_node)).all()  # bitwise, after a resume on S3

        metrics = read("congrad/runs/r1/train/metrics.json")
        assert metrics["training"]["checkpoint"].startswith("s3://congrad/runs/r1/train/ray/")
        assert len({w["node"] for w in metrics["training"]["workers"]}) == 2
        model = tmp_path / "model"
        model.mkdir()  # pyarrow copies a prefix's files into an existing local directory
        pafs.copy_files("congrad/runs/r1/train/model", str(model), source_filesystem=s3)
        assert models.load_model(str(model)).config.vocab_size == len(models.load_tokenizer(str(model)))
