"""Training config validation (no Ray, no TRL import): shipped configs load, every problem is reported at once."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from congrad_ray.errors import ConfigError
from congrad_ray.train.config import TrainConfig, load_train_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TRAIN_CONFIGS = sorted(CONFIGS.glob("train-*.yaml"))


def test_there_are_cpu_and_gpu_training_configs():
    assert {p.name for p in TRAIN_CONFIGS} >= {"train-tiny-cpu.yaml", "train-gemma2-2b.yaml", "train-llama3-8b.yaml"}


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_train_config_loads(path):
    cfg = load_train_config(path, check_paths=False)
    assert isinstance(cfg, TrainConfig)
    # the full check too, with data somewhere that exists
    full = load_train_config(path, train=["demo://train"], eval=["demo://heldout"], check_paths=True)
    assert full.data.train == ["demo://train"] and full.data.eval == ["demo://heldout"]
    assert TrainConfig.model_validate(__import__("yaml").safe_load(cfg.to_yaml())) == cfg


def test_tiny_config_is_cpu_safe():
    cfg = load_train_config(CONFIGS / "train-tiny-cpu.yaml", check_paths=False)
    assert cfg.data.train == ["runs/tiny-demo"] and cfg.data.eval == ["demo://heldout"]
    assert cfg.model.name_or_path.startswith("tiny://") and not cfg.scaling.use_gpu
    assert cfg.scaling.num_workers == 2 and cfg.scaling.cpus_per_worker * cfg.scaling.num_workers <= 1
    assert not cfg.optim.bf16 and not cfg.optim.gradient_checkpointing
    assert cfg.reference_mode() == "same"  # full fine-tuning against a frozen copy


@pytest.mark.parametrize("name", ["train-gemma2-2b.yaml", "train-llama3-8b.yaml"])
def test_gpu_configs_use_lora_bf16_and_gpus(name):
    cfg = load_train_config(CONFIGS / name, check_paths=False)
    assert cfg.scaling.use_gpu and cfg.optim.bf16 and cfg.model.dtype == "bfloat16"
    assert cfg.model.lora is not None and cfg.reference_mode() == "disabled_adapter"
    assert cfg.optim.batch_size * cfg.optim.gradient_accumulation_steps * cfg.scaling.num_workers >= 64
    assert cfg.model.name_or_path in ("google/gemma-2-2b-it", "meta-llama/Meta-Llama-3-8B-Instruct")


def test_overrides_and_flags():
    cfg = load_train_config(
        CONFIGS / "train-tiny-cpu.yaml",
        ["dpo.alpha=0.01", "optim.max_steps=7", "eval.languages.unseen=[hi, ja]"],
        train=["demo://train"],
        output="/tmp/x",
    )
    assert (cfg.dpo.alpha, cfg.optim.max_steps, cfg.eval.languages.unseen) == (0.01, 7, ["hi", "ja"])
    assert cfg.run.output == "/tmp/x" and cfg.data.train == ["demo://train"]


def test_all_problems_reported_together_with_their_fix(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "optim:\n  bf16: true\n  batch_size: 0\nscaling:\n  num_workers: 4\n  num_cpus: 1\n"
        "model:\n  reference: columns\n  lora_rank: 8\ndpo:\n  beta: -1\nevall: {}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_train_config(bad, ["no_equals_sign"], train=["/does/not/exist"], eval=["demo://nope"])
    text = str(err.value)
    for expected in (
        "optim.batch_size",
        "model.lora_rank: unknown key",
        "evall: unknown key",
        "dpo.beta",
        "expected dotted.key=value",
        "/does/not/exist does not exist",
        "demo://nope unknown",
    ):
        assert expected in text, expected
    assert len(err.value.problems) >= 7


def test_semantic_problems_are_reported_together():
    with pytest.raises(ConfigError) as err:
        load_train_config(
            None,
            [
                "optim.bf16=true",
                "scaling.num_cpus=1",
                "scaling.num_workers=4",
                "model.reference=columns",
                "eval.languages.seen=[en, fr]",
                "eval.languages.unseen=[fr]",
            ],
            train=["demo://train"],
        )
    problems = err.value.problems
    assert any("optim.bf16 needs scaling.use_gpu" in p for p in problems)
    assert any("exceed num_cpus=1" in p for p in problems)
    assert any("dpo.precompute_ref_log_probs" in p for p in problems)  # the fix for 'columns'
    assert any("both seen and unseen" in p for p in problems)
    with pytest.raises(ConfigError, match="needs model.lora"):
        load_train_config(None, ["model.reference=disabled_adapter"], train=["demo://train"])
    with pytest.raises(ConfigError, match="reference_path is unset"):
        load_train_config(None, ["model.reference=model"], train=["demo://train"])
    with pytest.raises(ConfigError, match="data.train is empty"):
        load_train_config(None)


def test_filter_run_directories_are_checked(tmp_path):
    unfinished = tmp_path / "unfinished"
    (unfinished / "_state").mkdir(parents=True)
    with pytest.raises(ConfigError, match="has not finished"):
        load_train_config(None, train=[str(unfinished)])
    empty = tmp_path / "empty"
    (empty / "kept").mkdir(parents=True)
    (empty / "manifest.json").write_text("{}")
    with pytest.raises(ConfigError, match="kept no pairs"):
        load_train_config(None, train=[str(empty)])


def test_loading_a_config_does_not_import_trl_or_ray_train():
    import subprocess

    code = (
        "import sys; from congrad_ray.train import load_train_config; "
        "load_train_config('configs/train-llama3-8b.yaml', check_paths=False); "
        "print(any(m.startswith(('trl', 'ray.train', 'peft')) for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=CONFIGS.parent)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


def test_cli_reports_config_errors_in_one_line_each_and_exits_2(capsys, tmp_path):
    from congrad_ray.cli import main

    rc = main(
        [
            "train",
            "--config",
            str(CONFIGS / "train-tiny-cpu.yaml"),
            "--train",
            str(tmp_path / "nope"),
            "--set",
            "optim.bf16=true",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 2 and all(line.startswith("error: ") for line in err)
    assert any("does not exist" in line for line in err) and any("optim.bf16" in line for line in err)
