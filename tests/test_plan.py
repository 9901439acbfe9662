"""``congrad-ray plan``: what a filter run will do and cost, said before Ray starts (issue 11).

The token count comes from a sample, the store size from ``k``, the actor-hours from a per-token calibration of the
sketch pass stored beside the config; a calibration for another model or sketch setting is refused by name.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from congrad_ray.cli import main
from congrad_ray.config import calibration_path, load_filter_config
from congrad_ray.errors import ConfigError
from congrad_ray.pipeline.cost import calibrate, calibration_key, estimate, pair_tokens, sample_pairs
from congrad_ray.pipeline.filter_run import survey
from congrad_ray.tokenization import TokenizedPair
from tests.filter_helpers import TINY_MODEL, small_config, small_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return small_corpus(tmp_path_factory.mktemp("plan") / "data")


def _config_file(tmp_path: Path, corpus: Path, **extra) -> Path:
    raw = {
        "input": {"paths": [str(corpus)], "rows_per_unit": 50},
        "run": {"output": str(tmp_path / "run")},
        "model": {"name_or_path": TINY_MODEL},
        "sketch": {"k": 512, "buckets": 4},
        "dpo": {"max_length": 96},
        "resources": {"batch_size": 8, "actors_max": 2, **extra},
    }
    path = tmp_path / "filter.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_pair_tokens_counts_both_sequences_truncated():
    pair = TokenizedPair([1] * 10, [2] * 5, [3] * 30)
    assert pair_tokens(pair, None) == 15 + 40
    assert pair_tokens(pair, 32) == 15 + 32


def test_sample_is_deterministic_and_valid(corpus, tmp_path):
    cfg = survey(small_config(str(corpus), tmp_path / "run"), with_cost=False).cfg
    s = survey(cfg, with_cost=False)
    a, b = sample_pairs(cfg, s.units, rows=64), sample_pairs(cfg, s.units, rows=64)
    assert a == b and 32 <= len(a) <= 64
    assert all(p.chosen_ids and p.rejected_ids for p in a)


def test_estimate_without_calibration_says_how_to_get_one(corpus, tmp_path):
    s = survey(small_config(str(corpus), tmp_path / "run"))
    assert "plan --calibrate" in s.cost["cost"]
    est = s.cost["estimate"]
    assert est["tokens"] == pytest.approx(est["tokens_per_pair"] * 240, rel=1e-3)
    assert est["store_bytes"] == 240 * (4 * 512 + 620)
    assert "actor_s" not in est
    assert not (tmp_path / "run").exists()  # a survey writes nothing


def test_calibration_beside_the_config_is_read_and_scaled(corpus, tmp_path):
    path = _config_file(tmp_path, corpus)
    cfg = load_filter_config(path)
    assert cfg.resources.calibration is None  # none yet
    s = survey(cfg, with_cost=False)
    calibration = {"seconds_per_token": 2e-5, "device": "test CPU", "measured_at": "2026-12-02T00:00:00+00:00"}
    calibration_path(path).write_text(json.dumps({**calibration, "key": calibration_key(s.cfg)}))
    cfg = load_filter_config(path)
    assert cfg.resources.calibration == str(calibration_path(path))
    out = estimate(survey(cfg, with_cost=False).cfg, 1000, sample_pairs(s.cfg, s.units, rows=32))
    est = out["estimate"]
    assert est["actor_s"] == pytest.approx(est["tokens"] * 2e-5, rel=1e-3)
    assert est["wall_s"] == pytest.approx(est["actor_s"] / 2, rel=1e-3)
    assert "actor-hours" in out["cost"] and "test CPU" in out["cost"]


def test_a_calibration_of_another_setting_is_refused_by_name(corpus, tmp_path):
    path = _config_file(tmp_path, corpus)
    s = survey(load_filter_config(path), with_cost=False)
    key = {**calibration_key(s.cfg), "k": 4096, "batch_size": 32}
    calibration_path(path).write_text(json.dumps({"seconds_per_token": 1e-5, "key": key}))
    line = estimate(survey(load_filter_config(path), with_cost=False).cfg, 100, [])["cost"]
    assert "batch_size, k" in line and "rerun" in line


def test_calibrate_measures_this_machine(corpus, tmp_path):
    cfg = survey(small_config(str(corpus), tmp_path / "run"), with_cost=False).cfg
    s = survey(cfg, with_cost=False)
    result = calibrate(cfg, sample_pairs(cfg, s.units, rows=48), max_pairs=24)
    assert result["pairs"] == 24 and result["tokens"] > 24 * 20
    assert 0 < result["seconds_per_token"] < 1e-2
    assert result["key"] == calibration_key(cfg) and "CPU x 1" in result["device"]


def test_calibrate_refuses_a_gpu_config_without_cuda(corpus, tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cfg = survey(small_config(str(corpus), tmp_path / "run", "resources.gpus_per_actor=1"), with_cost=False).cfg
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        calibrate(cfg, [])


def test_plan_command_calibrates_then_estimates(corpus, tmp_path, capsys):
    path = _config_file(tmp_path, corpus)
    assert main(["plan", "--config", str(path), "--json"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["plan"]["rows"] == 240 and "plan --calibrate" in first["plan"]["cost"]
    assert main(["plan", "--config", str(path), "--calibrate", "--json"]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert calibration_path(path).exists()
    assert second["estimate"]["actor_s"] > 0 and "actor-hours" in second["plan"]["cost"]
    assert not (tmp_path / "run").exists()  # plan never touches the run directory


def test_an_embedded_ray_listens_on_loopback_only():
    """The switch is read when Ray is imported: a fresh interpreter shows what an embedded run gets."""
    code = (
        "import os; from congrad_ray.ray_env import _embedded_defaults; _embedded_defaults(); "
        "from ray._private import ray_constants, services; "
        "print(ray_constants.ENABLE_RAY_CLUSTER, services.get_node_ip_address())"
    )
    env = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.split() == ["False", "127.0.0.1"], out.stderr[-2000:]
