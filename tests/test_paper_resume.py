"""``--resume`` of the paper benchmark adds seeds across sessions: a finished seed is reused from the committed
``results.json`` or from the work directory (the newer one wins), only when its config hash matches, and a run
whose seeds are all finished re-runs nothing and redraws the report from them."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from benchmarks.paper.settings import load_setting

run_mod = importlib.import_module("benchmarks.paper.run")  # the package exports a function of that name

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "benchmarks" / "results" / "small-issue15" / "results.json"


def _seed_record(config_hash: str, seed: int = 0) -> dict:
    """A real finished seed of the small setting (committed), relabelled with the given config hash."""
    rec = json.loads(COMMITTED.read_text())["seeds"][0]
    return {**rec, "seed": seed, "config_hash": config_hash}


def test_finished_seeds_prefers_the_work_directory_and_skips_other_configs(tmp_path):
    work, results = tmp_path / "work", tmp_path / "results"
    results.mkdir()
    committed = [{"seed": 0, "config_hash": "h", "from": "results"}, {"seed": 1, "config_hash": "other"}]
    (results / "results.json").write_text(json.dumps({"seeds": committed}))
    for seed, origin in ((0, "work"), (2, "work")):
        (work / f"seed-{seed}").mkdir(parents=True)
        (work / f"seed-{seed}" / "seed.json").write_text(json.dumps({"seed": seed, "config_hash": "h", "from": origin}))
    (work / "seed-3").mkdir()
    (work / "seed-3" / "seed.json").write_text(json.dumps({"seed": 3, "config_hash": "other"}))

    found = run_mod.finished_seeds(work, results, "h")

    assert sorted(found) == [0, 2]
    assert found[0]["from"] == "work" and found[2]["from"] == "work"
    assert run_mod.finished_seeds(tmp_path / "none", tmp_path / "none", "h") == {}


def test_resume_reuses_committed_seeds_without_running_any(tmp_path, monkeypatch):
    cfg = load_setting("small", [], quick=False, seeds=2)
    results = tmp_path / "results"
    results.mkdir()
    seeds = [_seed_record(cfg.config_hash(), 0), _seed_record(cfg.config_hash(), 1)]
    (results / "results.json").write_text(json.dumps({"seeds": seeds}))

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished seed was run again")

    monkeypatch.setattr(run_mod, "run_seed", must_not_run)
    summary = run_mod.run_setting(cfg, tmp_path / "work", results, fresh=False)

    assert [s["seed"] for s in summary["seeds"]] == [0, 1]
    written = json.loads((results / "results.json").read_text())
    assert [s["seed"] for s in written["seeds"]] == [0, 1] and written["config_hash"] == cfg.config_hash()
    assert "2 seed(s)" in (results / "results.md").read_text()


def test_fresh_run_ignores_committed_seeds(tmp_path, monkeypatch):
    cfg = load_setting("small", [], quick=False, seeds=1)
    results = tmp_path / "results"
    results.mkdir()
    (results / "results.json").write_text(json.dumps({"seeds": [_seed_record(cfg.config_hash())]}))
    import congrad_ray.ray_env

    monkeypatch.setattr(congrad_ray.ray_env, "ensure_ray", lambda *a: None)

    class Ran(Exception):
        pass

    def run_seed(*args, **kwargs):
        raise Ran

    monkeypatch.setattr(run_mod, "run_seed", run_seed)
    with pytest.raises(Ran):
        run_mod.run_setting(cfg, tmp_path / "work", results, fresh=True)
