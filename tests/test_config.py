"""Config validation: every shipped config loads, overrides apply, every problem is reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from congrad_ray.config import FilterConfig, load_filter_config
from congrad_ray.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FILTER_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if not p.name.startswith(("train-", "iterate-")))


@pytest.mark.parametrize("path", FILTER_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_filter_config_loads(path):
    cfg = load_filter_config(path, check_paths=False)
    assert isinstance(cfg, FilterConfig)
    assert cfg.sketch.k & (cfg.sketch.k - 1) == 0


def test_tiny_config_passes_the_full_check():
    cfg = load_filter_config(CONFIGS / "tiny-cpu.yaml")
    assert cfg.model.name_or_path.startswith("tiny://") and cfg.input.paths == ["demo://train"]
    assert cfg.resources.cpus_per_actor < 1  # fractional: no deadlock on 2 cores


def test_gpu_configs_ask_for_gpus():
    for name in ("gemma2-2b.yaml", "llama3-8b.yaml"):
        cfg = load_filter_config(CONFIGS / name, input_paths=["s3://bucket/prefs/"], check_paths=True)
        assert cfg.resources.gpus_per_actor >= 1 and cfg.model.dtype == "bfloat16"
    assert load_filter_config(CONFIGS / "llama3-8b.yaml", check_paths=False).sketch.scope == "lora"


def test_overrides_and_path_flags():
    cfg = load_filter_config(
        CONFIGS / "tiny-cpu.yaml",
        ["selection.rho=0.25", "sketch.k=1024", "languages.unseen=[hi, ja]"],
        input_paths=["demo://heldout"],
        output="/tmp/x",
    )
    assert (cfg.selection.rho, cfg.sketch.k, cfg.languages.unseen) == (0.25, 1024, ["hi", "ja"])
    assert cfg.input.paths == ["demo://heldout"] and cfg.run.output == "/tmp/x"


def test_all_problems_reported_together_with_their_fix(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "sketch:\n  k: 3000\n  scope: lora\nselection:\n  rule: global_top_k\nresources:\n"
        "  actors_min: 4\n  actors_max: 2\nmodell: {}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_filter_config(bad, ["dpo.beta=-1", "no_equals_sign"], input_paths=["/does/not/exist"])
    text = str(err.value)
    for expected in (
        "sketch.k: must be a power of two",
        "selection: rule global_top_k needs top_k >= 1 (set selection.top_k)",
        "resources: actors_min=4 > actors_max=2: raise actors_max",
        "modell: unknown key",
        "dpo.beta",
        "expected dotted.key=value",
        "/does/not/exist does not exist",
    ):
        assert expected in text, expected
    assert len(err.value.problems) >= 7


def test_semantic_checks(tmp_path):
    with pytest.raises(ConfigError, match="needs model.lora"):
        load_filter_config(None, ["sketch.scope=lora"], input_paths=["demo://train"])
    with pytest.raises(ConfigError, match="both seen and unseen"):
        load_filter_config(None, ["languages.seen=[en, fr]", "languages.unseen=[fr]"], input_paths=["demo://train"])
    with pytest.raises(ConfigError, match="reference_path is unset"):
        load_filter_config(None, ["model.reference=model"], input_paths=["demo://train"])
    with pytest.raises(ConfigError, match="unknown tiny model"):
        load_filter_config(None, ["model.name_or_path=tiny://gpt5"], input_paths=["demo://train"])


def test_config_hash_is_stable_and_sensitive():
    a = load_filter_config(CONFIGS / "tiny-cpu.yaml")
    b = load_filter_config(CONFIGS / "tiny-cpu.yaml")
    c = load_filter_config(CONFIGS / "tiny-cpu.yaml", ["selection.rho=0.3"])
    assert a.config_hash() == b.config_hash() != c.config_hash()
    assert FilterConfig.model_validate(__import__("yaml").safe_load(a.to_yaml())) == a


def test_run_seed_is_part_of_the_selection_fingerprint_not_the_sketch_one():
    """``run.seed`` draws the random baseline: a changed seed must redo the selection (``congrad-ray select`` once
    returned the old kept set), and must not invalidate the stored sketches."""
    from congrad_ray.pipeline.filter_run import sketch_fingerprint
    from congrad_ray.pipeline.select_run import select_fingerprint

    a, b = (load_filter_config(None, [f"run.seed={s}"], check_paths=False) for s in (0, 1))
    assert select_fingerprint(a) != select_fingerprint(b)
    assert sketch_fingerprint(a, []) == sketch_fingerprint(b, [])
    c = load_filter_config(None, ["run.seed=0", "selection.budgets=agreement"], check_paths=False)
    assert select_fingerprint(c) != select_fingerprint(a) and sketch_fingerprint(c, []) == sketch_fingerprint(a, [])
