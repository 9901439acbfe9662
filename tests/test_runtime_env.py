"""The shipped runtime env of `ray job submit` (configs/cluster/runtime_env.yaml): Ray parses it, and the working
dir it uploads from this checkout is the code only, whatever .gitignore says."""

from __future__ import annotations

import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_ENV = ROOT / "configs" / "cluster" / "runtime_env.yaml"


def test_runtime_env_is_valid_for_ray():
    from ray.runtime_env import RuntimeEnv

    raw = yaml.safe_load(RUNTIME_ENV.read_text())
    env = RuntimeEnv(**raw, working_dir=str(ROOT))  # what `--working-dir .` adds
    assert {".git", ".venv", "runs/", ".cache/", "__pycache__"} <= set(env["excludes"])
    assert all(isinstance(v, str) for v in env["env_vars"].values())
    assert not any(k.startswith("AWS_") for k in env["env_vars"])  # credentials never ship in the repo
    # stock Ray images (a KubeRay RayCluster) get the project by installing the uploaded working dir on each node
    assert env["pip"]["packages"] == ["${RAY_RUNTIME_ENV_CREATE_WORKING_DIR}"]


def test_upload_of_the_checkout_holds_code_not_venv_runs_or_caches(tmp_path):
    from ray._private.runtime_env.packaging import create_package

    package = tmp_path / "wd.zip"
    excludes = yaml.safe_load(RUNTIME_ENV.read_text())["excludes"]
    create_package(str(ROOT), package, include_gitignore=False, excludes=excludes)
    names = zipfile.ZipFile(package).namelist()
    assert "jobs/congrad.py" in names and "congrad_ray/cli.py" in names and "configs/tiny-cpu.yaml" in names
    banned = (".git/", ".venv/", "runs/", ".cache/", ".pytest_cache/", ".ruff_cache/", ".hypothesis/")
    assert not [n for n in names if n.startswith(banned) or "__pycache__" in n or n.endswith(".pyc")]
    assert package.stat().st_size < 20 * 1024 * 1024, package.stat().st_size  # Ray warns from 256 MiB
