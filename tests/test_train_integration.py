"""The DPO step on a local Ray cluster: 2 CPU workers train the tiny model and the loss falls, the final model is
saved in Hugging Face format and reloads and evaluates, and a killed run resumes from its last checkpoint."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.filter_helpers import TINY_MODEL

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
LN2 = math.log(2)


def clean_corpus(out: Path) -> Path:
    """3 seen languages (clean labels), 1 unseen held-out language, plus 3 rows that cannot be trained on."""
    from congrad_ray.demo import CorpusSpec, write_corpus

    spec = CorpusSpec(
        seen_languages=("en", "fr", "de"),
        unseen_languages=("hi",),
        pairs_per_language=48,
        heldout_per_language=12,
        flip_rate={},
        systematic_language=None,
    )
    write_corpus(spec, out, shards=2)
    first = sorted((out / "train").glob("*.parquet"))[0]
    bad = pq.read_table(first).slice(0, 3).to_pylist()
    bad[0]["prompt"] = None
    bad[1]["rejected"] = bad[1]["chosen"]
    bad[2]["prompt"] = "count " * 200  # longer than dpo.max_length
    for i, row in enumerate(bad):
        row["id"] = f"bad-{i}"
    schema = pa.schema([f.with_nullable(True) for f in pq.read_schema(first)])
    pq.write_table(pa.Table.from_pylist(bad, schema=schema), out / "train" / "part-bad.parquet")
    return out


def as_filter_run(corpus: Path) -> Path:
    """A finished filter run directory around the corpus: its train files as kept/, and a dropped/ that must not
    be trained on."""
    import shutil

    run = corpus / "filter-run"
    shutil.copytree(corpus / "train", run / "kept")
    dropped = pq.read_table(sorted((corpus / "train").glob("part-0*.parquet"))[0]).slice(0, 5)
    dropped = dropped.set_column(dropped.schema.get_field_index("id"), "id", pa.array([f"drop-{i}" for i in range(5)]))
    (run / "dropped").mkdir()
    pq.write_table(dropped, run / "dropped" / "part-0.parquet")
    (run / "_state").mkdir()
    (run / "manifest.json").write_text("{}")
    return run


def train_overrides(corpus: Path, output: Path, *extra: str, model: str = TINY_MODEL, train=None) -> list[str]:
    return [
        f"model.name_or_path={model}",
        f"data.train=[{train or corpus / 'train'}]",
        f"data.eval=[{corpus / 'heldout'}]",
        f"run.output={output}",
        "scaling.num_workers=2",
        "scaling.cpus_per_worker=0.5",
        "dpo.max_length=64",
        "optim.batch_size=8",
        "optim.learning_rate=2.0e-3",
        "optim.logging_steps=1",
        "eval.batch_size=32",
        *extra,
    ]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return clean_corpus(tmp_path_factory.mktemp("train-corpus"))


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """Full fine-tuning with precomputed reference log-probs (no reference model kept), 2 workers, 18 steps (2 epochs
    of each worker's 72-pair shard), checkpoints and held-out evaluations every 9 steps."""
    import ray

    from congrad_ray.train import load_train_config
    from congrad_ray.train.run import run_training

    out = tmp_path_factory.mktemp("trained") / "run"
    extra = (
        "optim.max_steps=18",
        "checkpoint.every_steps=9",
        "checkpoint.num_to_keep=2",
        "eval.every_steps=9",
        "dpo.precompute_ref_log_probs=true",
    )
    # the default tiny Llama (head_dim 64): vLLM's CPU backend can load what this run exports
    cfg = load_train_config(
        None, train_overrides(corpus, out, *extra, model="tiny://llama", train=as_filter_run(corpus))
    )
    t0 = time.perf_counter()
    metrics = run_training(cfg)
    metrics["_test_wall_s"] = time.perf_counter() - t0
    yield cfg, out, metrics
    ray.shutdown()


def test_two_workers_train_and_the_loss_falls(trained):
    cfg, out, m = trained
    t = m["training"]
    assert t["num_workers"] == 2 and t["global_step"] == t["max_steps"] == 18 and t["resumed_from"] == []
    losses = [h["loss"] for h in t["loss_history"]]
    assert [h["step"] for h in t["loss_history"]] == list(range(1, 19))
    # policy == reference at step 1: the log pi_ref each rank precomputed belong to its own rows
    assert losses[0] == pytest.approx(LN2, abs=1e-4)
    assert t["epochs"] == pytest.approx(2.0)  # each rank went twice through its whole shard (72 pairs / 8 per step)
    assert sum(losses[-3:]) / 3 < LN2 - 0.02, losses
    final = m["eval"]["final"]
    # held-out pairs (number ranges never trained on): the implicit reward prefers the chosen answer on average
    assert final["groups"]["seen"]["loss"] < LN2 - 0.005 and final["groups"]["seen"]["margin"] > 0
    assert set(final["groups"]) == {"all", "seen", "unseen"}
    assert m["languages"] == {"seen": ["de", "en", "fr"], "unseen": ["hi"]}
    assert final["per_language"]["hi"]["n"] == 12
    during = m["eval"]["during"]
    assert [e["step"] for e in during] == [9, 18]
    assert during[-1]["groups"]["seen"]["accuracy"] == pytest.approx(final["groups"]["seen"]["accuracy"], abs=1e-6)
    assert t["train_steps_per_s"] > 0
    # every held-out pair's rewards, for paired statistics between runs; they give the reported accuracy back
    import pyarrow.parquet as pq

    pairs = pq.read_table(out / "eval_pairs.parquet").to_pylist()
    assert len(pairs) == sum(s["n"] for s in final["per_language"].values())
    hi = [p["margin"] > 0 for p in pairs if p["lang"] == "hi"]
    assert sum(hi) / len(hi) == pytest.approx(final["per_language"]["hi"]["accuracy"])
    print(f"\nfit {m['timings_s']}, {t['train_steps_per_s']:.2f} steps/s, loss {losses[0]:.4f} -> {losses[-1]:.4f}")


def test_invalid_rows_are_data_with_a_reason(trained):
    _, out, m = trained
    d = m["data"]["train"]
    assert d["rows"] == 3 * 48 + 3 and d["valid"] == 3 * 48  # the filter run's kept/ only, not its dropped/
    assert d["files"] == 3
    assert d["skipped"] == {"chosen_equals_rejected": 1, "null_prompt": 1, "prompt_too_long": 1}
    skipped = pq.read_table(out / "skipped-train.parquet").to_pandas()
    assert set(skipped["id"]) == {"bad-0", "bad-1", "bad-2"} and skipped["_reason"].notna().all()
    assert m["data"]["shard_rows"] == 72 and m["data"]["padded_rows"] == 0


def test_ray_train_checkpoints_hold_every_rank(trained):
    cfg, out, m = trained
    storage = out / "ray" / cfg.run.name
    checkpoints = sorted(p for p in storage.glob("checkpoint_*") if p.is_dir())
    assert len(checkpoints) == cfg.checkpoint.num_to_keep
    for ckpt in checkpoints:
        files = {f.name for f in (ckpt / "checkpoint").iterdir()}
        assert {
            "model.safetensors",
            "optimizer.pt",
            "trainer_state.json",
            "rng_state_0.pth",
            "rng_state_1.pth",
        } <= files
    state = json.loads((Path(m["training"]["checkpoint"]) / "checkpoint" / "trainer_state.json").read_text())
    assert state["global_step"] == 18
    assert (out / "metrics.json").exists() and (out / "eval.png").stat().st_size > 0


def test_saved_model_reloads_and_evaluates(trained, corpus):
    """model/ is a plain Hugging Face checkpoint (safetensors + tokenizer); evaluating it again, in this process,
    gives the numbers of metrics.json."""
    from congrad_ray.models import load_model, load_tokenizer
    from congrad_ray.train.data import PrepareSpec, cap_per_language, prepare_rows, select_rows
    from congrad_ray.train.export import evaluate_model

    cfg, out, m = trained
    model_dir = Path(m["model"]["path"])
    names = {f.name for f in model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth")) for n in names) and m["model"]["adapter"] is None
    model, tokenizer = load_model(str(model_dir)), load_tokenizer(str(model_dir))
    assert model.config.vocab_size == len(tokenizer)
    spec = PrepareSpec(cfg.model.name_or_path, None, False, "id", "lang", cfg.dpo.max_length, "keep_start")
    rows = prepare_rows(pq.read_table(corpus / "heldout"), spec, "eval")
    heldout = cap_per_language(select_rows(rows, "eval", valid=True), None)
    groups = {"all": ["de", "en", "fr", "hi"], "seen": ["de", "en", "fr"], "unseen": ["hi"]}
    again = evaluate_model(str(model_dir), cfg, "same", heldout, groups)
    for lang, stats in m["eval"]["final"]["per_language"].items():
        assert again["per_language"][lang]["accuracy"] == pytest.approx(stats["accuracy"], abs=1e-9)
        assert again["per_language"][lang]["margin"] == pytest.approx(stats["margin"], abs=1e-5)


@pytest.mark.vllm
def test_exported_model_loads_in_vllm(trained):
    vllm = pytest.importorskip("vllm")
    _, _, m = trained
    llm = vllm.LLM(model=m["model"]["path"], max_model_len=256, enforce_eager=True, dtype="float32")
    outputs = llm.generate(["Count from 3 to 6:"], vllm.SamplingParams(max_tokens=4, temperature=0.0))
    assert len(outputs[0].outputs[0].token_ids) >= 1


def test_a_finished_run_is_not_redone(trained):
    from congrad_ray.train.run import run_training

    cfg, _, m = trained
    t0 = time.perf_counter()
    again = run_training(cfg)
    assert time.perf_counter() - t0 < 5
    assert again["training"] == json.loads(json.dumps(m["training"]))


def _registered_step(storage: Path) -> int | None:
    """The step of the last checkpoint Ray Train registered (its checkpoint manager snapshot), if any."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        snapshot = json.loads((storage / "checkpoint_manager_snapshot.json").read_text())
        return snapshot["latest_checkpoint_result"]["metrics"]["step"]
    return None


def _alive(p) -> bool:
    import psutil

    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_for(proc: subprocess.Popen, log: Path, ready, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)


def test_killed_lora_run_resumes_from_its_last_checkpoint(corpus, tmp_path):
    """`jobs/train_dpo.py` with LoRA: killed whole (the process group) after its first registered checkpoint, the
    same command continues from it; there, one Ray Train worker is killed after the next checkpoint, and
    FailureConfig restarts the worker group from that one. The run ends at the planned step, its loss history
    continuous."""
    import psutil

    from congrad_ray.train import load_train_config

    out = tmp_path / "run"
    extra = (
        "optim.max_steps=24",
        "optim.batch_size=4",
        "checkpoint.every_steps=4",
        "checkpoint.num_to_keep=3",
        "checkpoint.max_failures=1",
        "model.lora.rank=4",
        "model.lora.alpha=8",
        "eval.max_pairs_per_language=6",
    )
    cfg = load_train_config(None, train_overrides(corpus, out, *extra))
    cfg_file = tmp_path / "train.yaml"
    cfg_file.write_text(cfg.to_yaml())
    cmd = [sys.executable, str(ROOT / "jobs" / "train_dpo.py"), "--config", str(cfg_file)]
    env = {**os.environ, "RAY_ADDRESS": ""}
    storage = out / "ray" / cfg.run.name

    def start(name: str) -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"{name}.log"
        with log.open("w") as f:
            return subprocess.Popen(cmd, env=env, start_new_session=True, stdout=f, stderr=subprocess.STDOUT), log

    proc, log = start("first")
    _wait_for(proc, log, lambda: _registered_step(storage) is not None)
    family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    os.killpg(proc.pid, signal.SIGKILL)  # the driver, its embedded Ray and the workers
    proc.wait()
    deadline = time.time() + 30  # none left that could still register a checkpoint (zombies are dead enough)
    while time.time() < deadline and any(_alive(p) for p in family):
        time.sleep(0.1)
    first = _registered_step(storage)
    assert first < 24 and not (out / "metrics.json").exists()

    proc, log = start("second")
    _wait_for(proc, log, lambda: (_registered_step(storage) or 0) > first)
    second = _registered_step(storage)
    workers = [
        p
        for p in psutil.Process(proc.pid).children(recursive=True)
        if "RayTrainWorker" in p.name() + " ".join(p.cmdline())
    ]
    assert workers, "no Ray Train worker under the run"
    workers[-1].kill()
    assert proc.wait(timeout=600) == 0, log.read_text()[-4000:]
    m = json.loads((out / "metrics.json").read_text())
    t = m["training"]
    assert t["resumed_from"][0] == first and t["resumed_from"][1] >= second, (t["resumed_from"], first, second)
    assert len(t["resumed_from"]) == 2 and t["global_step"] == 24
    assert [h["step"] for h in t["loss_history"]] == list(range(1, 25))  # the history continues, once per step
    assert "resumed from step" in log.read_text()
    # LoRA: the adapter is kept and the merged model (what vLLM loads) is exported
    adapter = Path(m["model"]["adapter"])
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {f.name for f in adapter.iterdir()}
    assert m["model"]["merged_lora"] and m["eval"]["final"]["groups"]["seen"]["n"] == 18
    _merged_equals_adapter(Path(m["model"]["path"]), adapter, cfg)


def _merged_equals_adapter(model_dir: Path, adapter_dir: Path, cfg) -> None:
    import torch
    from peft import PeftModel

    from congrad_ray.core import sequence_logps
    from congrad_ray.models import load_model, load_tokenizer, resolve_model_path
    from congrad_ray.tokenization import collate, tokenize_pair
    from tests.conftest import MIXED_PAIRS

    tokenizer = load_tokenizer(str(model_dir))
    batch = collate([tokenize_pair(tokenizer, *row) for row in MIXED_PAIRS], tokenizer.pad_token_id)
    base = load_model(resolve_model_path(cfg.model.name_or_path))
    with torch.no_grad():
        before = sequence_logps(base, batch)
        adapted = sequence_logps(PeftModel.from_pretrained(base, str(adapter_dir)).eval(), batch)
        merged = sequence_logps(load_model(str(model_dir)), batch)
    torch.testing.assert_close(merged, adapted, atol=1e-4, rtol=1e-5)
    assert (adapted - before).abs().max() > 1e-3  # the adapter was trained
