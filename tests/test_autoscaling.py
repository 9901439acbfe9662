"""Autoscaling: `resources.gpus_per_actor: 1` on Ray's fake multi-node autoscaler scales the fake-GPU worker type
up from 0 nodes for the sketch actor pool and back down when idle; the actors are scheduled with a GPU but compute on
CPU (no CUDA here), and the result is the single-node one.

``AutoscalingCluster`` runs ``ray stop --force`` (every Ray process on the machine): the body runs in its own
network, PID and mount namespaces (tests/autoscaling_body.py), where it can reach nothing else.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile

import pytest

from tests.filter_helpers import outcome_ids, read_dir, small_config
from tests.ray_cluster import ROOT, base_env

pytestmark = pytest.mark.integration
UNSHARE = ["unshare", "--net", "--pid", "--fork", "--mount-proc"]


def _isolation_problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network and PID namespaces (unshare); AutoscalingCluster runs `ray stop --force`"
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "needs util-linux `unshare` and iproute2 `ip` to isolate AutoscalingCluster's `ray stop --force`"
    probe = subprocess.run([*UNSHARE, "ip", "link", "set", "lo", "up"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create namespaces here ({probe.stderr.strip()}); AutoscalingCluster must not run unisolated"
    return None


@pytest.mark.timeout(900)
def test_gpu_actor_pool_scales_fake_gpu_nodes_from_zero_and_back(small_reference, tmp_path):
    problem = _isolation_problem()
    if problem:
        pytest.skip(problem)
    corpus, single_run = small_reference  # the same filter on an embedded single-node Ray (conftest)
    gpu_cfg = tmp_path / "gpu.yaml"
    gpu = ("resources.gpus_per_actor=1", "resources.actors_min=1", "resources.actors_max=2")
    gpu_cfg.write_text(small_config(str(corpus), tmp_path / "scaled", *gpu, "run.shared_filesystem=true").to_yaml())

    out = tmp_path / "autoscaling.json"
    ray_tmp = tempfile.mkdtemp(prefix="cas", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    body = f"ip link set lo up && exec {sys.executable} -m tests.autoscaling_body {out} {gpu_cfg}"
    env = {**base_env(), "RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    try:
        done = subprocess.run(
            [*UNSHARE, "bash", "-c", body], cwd=ROOT, env=env, capture_output=True, text=True, timeout=840
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0 and out.exists(), (done.stdout + done.stderr)[-5000:]
    result = json.loads(out.read_text())
    counts = [n for _, n in result["timeline"]]
    assert counts[0] == 0 and max(counts) >= 1, result["timeline"]  # scaled up from zero GPU nodes...
    assert result["gpu_nodes_at_end"] == 0, result["timeline"]  # ...and back down once idle
    actors = result["manifest"]["sketch"]["actors"]
    assert actors and all(a["gpu_ids"] and a["device"] == "cpu" for a in actors), actors  # GPU scheduled, no CUDA
    assert "scheduled with GPU" in done.stdout + done.stderr
    scaled = tmp_path / "scaled"
    assert outcome_ids(scaled) == outcome_ids(single_run)
    a = read_dir(scaled / "kept").set_index("id")["score"].sort_index()
    b = read_dir(single_run / "kept").set_index("id")["score"].sort_index()
    assert (a == b).all()
