"""`ray start --head` on loopback + `ray job submit` of jobs/filter.py: the way users run it on a cluster."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.filter_helpers import outcome_ids, small_config, small_corpus

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _ray(*args: str, timeout: int = 120, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), *args], capture_output=True, text=True, timeout=timeout, env=env)


def _stop_cluster(ray_tmp: Path) -> None:
    """Stop only this test's cluster: its processes carry its temp dir (`ray stop` would stop every Ray here)."""
    import psutil

    mine = [p for p in psutil.process_iter(["cmdline"]) if str(ray_tmp) in " ".join(p.info["cmdline"] or [])]
    for p in mine:
        p.terminate()
    _, alive = psutil.wait_procs(mine, timeout=15)
    for p in alive:
        p.kill()


def test_job_submit_to_a_local_cluster(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    ray_tmp = Path(tempfile.mkdtemp(prefix="crj-", dir="/tmp"))  # short: Ray's socket paths must stay < 108 bytes
    env["RAY_TMPDIR"] = str(ray_tmp)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # the job entrypoint `python` is this venv's
    env["RAY_AUTH_MODE"] = "token"  # Ray 2.60 default for new clusters; the CLI then sends ~/.ray/auth_token
    run = tmp_path / "run"
    cfg = tmp_path / "job.yaml"
    cfg.write_text(small_config(str(small_corpus(tmp_path / "corpus")), run).to_yaml())
    started = _ray(
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        "--port=6391",
        "--dashboard-port=8291",
        "--dashboard-host=127.0.0.1",
        "--num-cpus=2",
        "--disable-usage-stats",
        env=env,
    )
    assert started.returncode == 0, started.stderr[-3000:]
    try:
        runtime_env = json.dumps({"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}})
        job = _ray(
            "job",
            "submit",
            "--address",
            "http://127.0.0.1:8291",
            "--working-dir",
            str(ROOT),
            "--runtime-env-json",
            runtime_env,
            "--",
            "python",
            "jobs/filter.py",
            "--config",
            str(cfg),
            timeout=900,
            env=env,
        )
        assert job.returncode == 0, "\n".join((job.stdout + job.stderr).splitlines()[-40:])
        assert "succeeded" in (job.stdout + job.stderr).lower()
    finally:
        _stop_cluster(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    manifest = json.loads((run / "manifest.json").read_text())
    ids = outcome_ids(run)
    assert len(ids["kept"]) == manifest["counts"]["totals"]["kept"] > 0
    assert (run / "report" / "summary.html").exists()
