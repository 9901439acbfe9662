"""The training run: plan -> prepare data (Ray Data) -> Ray Train ``TorchTrainer.fit`` -> export + evaluate -> metrics.

Run directory (``run.output``)::

    config.yaml            the config as run
    ray/NAME/              Ray Train checkpoints (each a Trainer checkpoint under checkpoint/) and run state
    model/                 the final model, Hugging Face format (safetensors + tokenizer), LoRA merged
    adapter/               the LoRA adapter (LoRA runs)
    metrics.json, eval.png held-out per-language evaluation (seen / unseen), loss history, data counts, timings
    eval_pairs.parquet     every held-out pair's implicit rewards (id, lang, chosen/rejected reward, margin)
    skipped-train.parquet  rows not trained on, with a reason (and skipped-eval.parquet)
    _state/                fingerprint.json, train.json (the finished checkpoint)

Re-running the same config on the same output resumes: Ray Train restores its checkpoint manager from ``ray/NAME``
and the workers continue from the last checkpoint; a finished training is not redone, only export and evaluation.
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

from ..errors import InputError
from ..progress import NO_PROGRESS, Progress
from ..storage import Location, claim_run_dir
from .config import TrainConfig

TRAINING_SECTIONS = ("model", "dpo", "optim")


def fingerprint(cfg: TrainConfig) -> str:
    """What a checkpoint depends on: run name and seed, training data, model, loss, optimiser, worker count."""
    extra = {
        "data": cfg.data.model_dump(mode="json", exclude={"eval"}),
        "run": {"name": cfg.run.name, "seed": cfg.run.seed},
        "num_workers": cfg.scaling.num_workers,
    }
    return cfg.fingerprint(TRAINING_SECTIONS, extra)


def max_steps(cfg: TrainConfig, shard_rows: int) -> int:
    """``optim.max_steps``, else ``ceil(epochs * ceil(ceil(shard / batch) / accumulation))``."""
    o = cfg.optim
    if o.max_steps is not None:
        return o.max_steps
    batches = math.ceil(shard_rows / o.batch_size)
    per_epoch = math.ceil(batches / o.gradient_accumulation_steps)
    return max(1, math.ceil(o.epochs * per_epoch))


def check_storage(cfg: TrainConfig) -> None:
    """On a multi-node cluster, refuse node-local data and output paths (Ray Train checkpoints go under run.output:
    every worker node writes there, and a restarted worker reads back from there) before any work starts."""
    from ..ray_env import require_shared_storage

    s = cfg.scaling
    paths = {"data.train": cfg.data.train, "data.eval": cfg.data.eval, "run.output": [cfg.run.output]}
    needs = {"CPU": s.cpus_per_worker, "GPU": 1.0 if s.use_gpu else 0.0}
    require_shared_storage(paths, cfg.run.shared_filesystem, needs)


def _plan(cfg: TrainConfig, fresh: bool) -> Location:
    holds = "a training run of other data or model/dpo/optim settings"
    out = claim_run_dir(cfg.run.output, "train", fingerprint(cfg), holds, fresh)
    out.join("config.yaml").write_bytes(cfg.to_yaml().encode())
    return out


def _prepare(cfg: TrainConfig, out: Location) -> tuple[Any, Any, Any]:
    from .data import PrepareSpec, cap_per_language, prepare

    m, d = cfg.model, cfg.data
    spec = PrepareSpec(
        m.name_or_path,
        m.revision,
        m.trust_remote_code,
        d.id_column,
        d.lang_column,
        cfg.dpo.max_length,
        cfg.dpo.truncation_mode,
    )
    prepared = prepare({"train": d.train, **({"eval": d.eval} if d.eval else {})}, spec, cfg.scaling.cpus_per_worker)
    train, heldout = prepared["train"], prepared.get("eval")
    for name, data in (("train", train), ("eval", heldout)):
        target = out.join(f"skipped-{name}.parquet")
        if data is not None and data.skipped.num_rows:
            target.write_table(data.skipped)
        elif target.exists():
            target.fs.delete_file(target.path)
        if data is not None and data.rows == 0:
            raise InputError(
                f"data.{name}: none of its {data.skipped.num_rows} rows can be used (reasons: "
                f"{data.summary()['skipped']}; each row in {target.uri}); fix the data or point data.{name} elsewhere"
            )
    if train.rows < cfg.scaling.num_workers:
        raise InputError(
            f"data.train: {train.rows} trainable pairs for {cfg.scaling.num_workers} workers; lower scaling.num_workers"
        )
    table = None
    if heldout is not None:
        import pyarrow as pa
        import ray

        parts = [t for t in ray.get(heldout.dataset.to_arrow_refs()) if t.num_rows]
        table = cap_per_language(pa.concat_tables(parts, promote_options="permissive"), cfg.eval.max_pairs_per_language)
    return train, heldout, table


def language_split(cfg: TrainConfig, trained: dict[str, int], heldout: Any) -> dict[str, list[str]]:
    from .evaluate import language_groups

    if heldout is None:
        return {}
    seen = sorted(trained) if cfg.eval.languages.seen == "infer" else cfg.eval.languages.seen
    return language_groups(list(heldout.languages), seen, cfg.eval.languages.unseen)


def _fit(cfg: TrainConfig, out: Location, spec: Any, train: Any, heldout: Any) -> tuple[Any, float]:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from .loop import train_loop_per_worker
    from .sharding import IdOrderedSplit

    s, c = cfg.scaling, cfg.checkpoint
    resources = {"CPU": s.cpus_per_worker, **({"GPU": 1} if s.use_gpu else {})}
    datasets = {"train": train.dataset, **({"heldout": heldout.dataset} if heldout is not None else {})}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"spec": spec},
        scaling_config=ScalingConfig(
            num_workers=s.num_workers,
            use_gpu=s.use_gpu,
            resources_per_worker=resources,
            placement_strategy=s.placement_strategy,
        ),
        run_config=RunConfig(
            name=cfg.run.name,
            storage_path=out.join("ray").uri,
            checkpoint_config=CheckpointConfig(num_to_keep=c.num_to_keep),
            failure_config=FailureConfig(max_failures=c.max_failures),
            # Ray Train's print patch echoes dill's (captured) disassembly from `datasets` fingerprinting
            worker_runtime_env={"env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}},
        ),
        datasets=datasets,
        dataset_config=IdOrderedSplit(train.cut_keys(s.num_workers), "train"),
    )
    t0 = time.perf_counter()
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training under {out.uri} reported no checkpoint; see the Ray Train logs")
    return result.checkpoint, time.perf_counter() - t0


def _checkpoint_location(checkpoint: Any) -> Location:
    return Location(checkpoint.filesystem, checkpoint.path)


def train_plan(cfg: TrainConfig, out: Location) -> dict[str, Any]:
    """What a training run is about to do, as plain data for :meth:`~congrad_ray.progress.Progress.plan`."""
    o, s, d = cfg.optim, cfg.scaling, cfg.dpo
    length = f"{o.max_steps:,} steps" if o.max_steps else f"{o.epochs:g} epoch(s)"
    cap = cfg.eval.max_pairs_per_language
    return {
        "step": "training",
        "data": cfg.data.train,
        "model": cfg.model.name_or_path
        + (" + LoRA" if cfg.model.lora else "")
        + f" · LP-DPO (beta {d.beta:g}, alpha {d.alpha:g}), reference: {cfg.reference_mode()}",
        "workers": f"{s.num_workers} Ray Train workers ({'GPU' if s.use_gpu else 'CPU'}) · lr {o.learning_rate:g}, "
        f"{o.batch_size} pairs per worker per step, {length}",
        "held-out": cfg.data.eval and [*cfg.data.eval, f"up to {cap} pairs per language" if cap else "all pairs"],
        "output": out.uri,
    }


def run_training(cfg: TrainConfig, fresh: bool = False, progress: Progress = NO_PROGRESS) -> dict[str, Any]:
    """Train (or resume) on ``data.train``, export the model, evaluate on ``data.eval``; returns the metrics.
    ``progress`` is told the plan and each stage."""
    from ray.train import Checkpoint

    from ..models import check_loadable
    from ..ray_env import ensure_ray
    from .export import finalize
    from .loop import WorkerSpec
    from .metrics import build_metrics, write_outputs
    from .progress import StepsDone

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    check_storage(cfg)
    out = _plan(cfg, fresh)
    done = out.join("metrics.json")
    if done.exists() and done.read_json()["run"]["config_hash"] == cfg.config_hash():
        progress.skipped("training", f"done by an earlier run ({done.uri})")
        return done.read_json()  # a finished run of this very config: nothing to redo
    check_loadable(cfg.model.name_or_path, cfg.model.revision, cfg.model.trust_remote_code)  # before Ray starts
    progress.plan(train_plan(cfg, out))
    ensure_ray(cfg.scaling.num_cpus)
    timings["ray_init"] = time.perf_counter() - t0
    with progress.stage("prepare") as stage:
        train, heldout, heldout_table = _prepare(cfg, out)
        held = f", {heldout_table.num_rows:,} held-out" if heldout_table is not None else ""
        stage.detail = f"{train.rows:,} train pairs{held}"
    timings["prepare"] = time.perf_counter() - t0 - timings["ray_init"]
    groups = language_split(cfg, train.languages, heldout)
    rows = train.shard_rows(cfg.scaling.num_workers)
    run_key = hashlib.sha256(f"{out.uri}|{fingerprint(cfg)}".encode()).hexdigest()[:16]
    spec = WorkerSpec(cfg, cfg.reference_mode(), rows, max_steps(cfg, rows), groups, run_key, out.uri)
    state = out.join("_state", "train.json")
    if state.exists() and state.read_json()["fingerprint"] == fingerprint(cfg):
        loc = Location.of(state.read_json()["checkpoint"])
        checkpoint = Checkpoint(loc.path, filesystem=loc.fs)
        fit_s = None
        progress.skipped("DPO (Ray Train)", "trained by an earlier run")
    else:
        with progress.stage("DPO (Ray Train)", StepsDone(out.uri, spec.max_steps)):
            checkpoint, fit_s = _fit(cfg, out, spec, train, heldout)
        state.write_json({"fingerprint": fingerprint(cfg), "checkpoint": _checkpoint_location(checkpoint).uri})
    timings["fit"] = fit_s
    t1 = time.perf_counter()
    import ray

    task = ray.remote(finalize).options(num_cpus=cfg.scaling.cpus_per_worker, num_gpus=1 if cfg.scaling.use_gpu else 0)
    with progress.stage("export + evaluate") as stage:
        final = ray.get(task.remote(cfg, spec.reference_mode, checkpoint, heldout_table, groups))
        stage.detail = f"{heldout_table.num_rows:,} held-out pairs" if heldout_table is not None else "no held-out set"
    timings["export_eval"] = time.perf_counter() - t1
    trainer_state = _checkpoint_location(checkpoint).join("checkpoint", "trainer_state.json").read_json()
    timings["total"] = time.perf_counter() - t0
    metrics = build_metrics(cfg, spec, train, heldout, trainer_state, final, timings, _checkpoint_location(checkpoint))
    write_outputs(metrics, out, cfg.eval.plot)
    return metrics
