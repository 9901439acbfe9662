"""``--resume`` of the paper benchmark adds seeds across sessions: a finished seed is reused from the committed
``results.json`` (matched by the config stored beside it) or from the work directory (by its config hash; the newer
one wins), and a run whose seeds are all finished re-runs nothing and redraws the report from them."""

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


def test_finished_seeds_matches_configs_and_prefers_the_work_directory(tmp_path):
    cfg = load_setting("small", [], quick=False, seeds=3)
    other = load_setting("small", ["rho=0.25"], quick=False, seeds=3)
    work, results = tmp_path / "work", tmp_path / "results"
    results.mkdir()
    committed = [{"seed": 0, "from": "results"}, {"seed": 1, "from": "results"}]
    stored = {**cfg.model_dump(mode="json"), "seeds": [7], "quick": {"rho": 0.9}}  # neither is part of the match
    (results / "results.json").write_text(json.dumps({"config": stored, "seeds": committed}))
    for seed, config_hash in ((0, cfg.config_hash()), (2, cfg.config_hash()), (3, other.config_hash())):
        (work / f"seed-{seed}").mkdir(parents=True)
        rec = {"seed": seed, "config_hash": config_hash, "from": "work"}
        (work / f"seed-{seed}" / "seed.json").write_text(json.dumps(rec))

    found = run_mod.finished_seeds(work, results, cfg)

    assert {s: r["from"] for s, r in found.items()} == {0: "work", 1: "results", 2: "work"}
    assert sorted(run_mod.finished_seeds(work, results, other)) == [3]  # the committed config is not rho=0.25's
    assert run_mod.finished_seeds(tmp_path / "none", tmp_path / "none", cfg) == {}


def test_committed_results_of_an_older_schema_are_not_reused(tmp_path):
    cfg = load_setting("small", [], quick=False, seeds=1)
    (tmp_path / "results.json").write_text(json.dumps({"config": {"rho": "half"}, "seeds": [{"seed": 0}]}))
    assert run_mod.finished_seeds(tmp_path / "work", tmp_path, cfg) == {}


def test_resume_reuses_committed_seeds_without_running_any(tmp_path, monkeypatch):
    cfg = load_setting("small", [], quick=False, seeds=2)
    results = tmp_path / "results"
    results.mkdir()
    seeds = [_seed_record(cfg.config_hash(), 0), _seed_record(cfg.config_hash(), 1)]
    (results / "results.json").write_text(json.dumps({"config": cfg.model_dump(mode="json"), "seeds": seeds}))

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
    stored = {"config": cfg.model_dump(mode="json"), "seeds": [_seed_record(cfg.config_hash())]}
    (results / "results.json").write_text(json.dumps(stored))
    import congrad_ray.ray_env

    monkeypatch.setattr(congrad_ray.ray_env, "ensure_ray", lambda *a: None)

    class Ran(Exception):
        pass

    def run_seed(*args, **kwargs):
        raise Ran

    monkeypatch.setattr(run_mod, "run_seed", run_seed)
    with pytest.raises(Ran):
        run_mod.run_setting(cfg, tmp_path / "work", results, fresh=True)
