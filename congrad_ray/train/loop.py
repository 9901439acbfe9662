"""The Ray Train worker: TRL's DPOTrainer (with core's LP-DPO loss) over this rank's shard of the kept pairs.

Each worker turns its Ray Data shard into a Hugging Face ``Dataset``, builds the policy (LoRA or full) and the
trainer (:class:`.shard_trainer.ShardLocalDPOTrainer`: each rank trains on its whole shard), wraps it for Ray (``prepare_trainer``, ``RayTrainReportCallback``: every Trainer checkpoint becomes a Ray
Train checkpoint, the files of all ranks merged), and resumes from ``ray.train.get_checkpoint()`` when Ray hands one
over (a restarted worker group, or a re-submitted run with the same output directory).

Rank 0 also evaluates the held-out set every ``eval.every_steps`` steps; the reference log-probs of the held-out set
are taken before ``train()`` loads any checkpoint, when the model still is the reference.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import DPOParams
from .config import TrainConfig

TRAINER_CHECKPOINT = "checkpoint"  # RayTrainReportCallback.CHECKPOINT_NAME
WORKER_RECORD = "ray-worker-"  # ray-worker-<rank>.json in each checkpoint: where that rank ran, on what


@dataclass(frozen=True)
class WorkerSpec:
    """What every worker needs besides its data shard (``tiny://`` models are resolved on each worker's node)."""

    cfg: TrainConfig
    reference_mode: str
    shard_rows: int
    max_steps: int
    groups: dict[str, list[str]] = field(default_factory=dict)
    run_key: str = "run"  # names the workers' local scratch directories
    run_uri: str = ""  # the run directory, absolute (workers run in Ray Train's trial directory)


def dpo_args(cfg: TrainConfig, spec: WorkerSpec, output_dir: str) -> Any:
    """The DPOConfig, every TRL 1.16 trap set explicitly (bf16, gradient checkpointing, learning rate, loss list)."""
    from trl import DPOConfig

    o = cfg.optim
    return DPOConfig(
        output_dir=output_dir,
        per_device_train_batch_size=o.batch_size,
        gradient_accumulation_steps=o.gradient_accumulation_steps,
        max_steps=spec.max_steps,
        learning_rate=o.learning_rate,
        lr_scheduler_type=o.lr_scheduler,
        warmup_steps=o.warmup,
        weight_decay=o.weight_decay,
        max_grad_norm=o.max_grad_norm,
        beta=cfg.dpo.beta,
        loss_type=["sigmoid"],  # replaced by core's LP-DPO (CongradDPOTrainer), which checks it
        max_length=cfg.dpo.max_length,
        truncation_mode=cfg.dpo.truncation_mode,
        precompute_ref_log_probs=cfg.dpo.precompute_ref_log_probs,
        bf16=o.bf16 and cfg.scaling.use_gpu,
        fp16=False,
        # transformers 5 renamed it; TRL's DPOConfig still defaults the old name to True, which warns unless the new
        # one is set
        activation_checkpointing=o.gradient_checkpointing,
        use_cpu=not cfg.scaling.use_gpu,
        ddp_find_unused_parameters=False,
        logging_strategy="steps",
        logging_steps=o.logging_steps,
        save_strategy="steps",
        save_steps=cfg.checkpoint.every_steps,
        save_total_limit=1,  # local copies only; Ray Train keeps checkpoint.num_to_keep
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=cfg.run.seed,
        data_seed=cfg.run.seed,
    )


def _callbacks(trainer: Any, spec: WorkerSpec, heldout_table: Any) -> list[Any]:
    """Rank-0 callbacks: a resume marker in the log history, the progress record, the periodic held-out evaluation."""
    from transformers import TrainerCallback

    from .evaluate import HeldoutSet, flat, heldout_logps, reward_metrics
    from .progress import progress_callback

    cfg = spec.cfg

    class RunLog(TrainerCallback):
        """Log a resume (the step it starts from) and the optimizer steps per second before each checkpoint."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = (time.perf_counter(), state.global_step)
            if state.global_step > 0:
                state.log_history.append({"step": state.global_step, "resumed_from_step": state.global_step})

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % args.save_steps and state.global_step < state.max_steps:
                return
            seconds, steps = time.perf_counter() - self.start[0], state.global_step - self.start[1]
            state.log_history.append({"step": state.global_step, "train_steps_per_s": steps / max(seconds, 1e-9)})

    out: list[Any] = [RunLog(), progress_callback(spec.run_uri or cfg.run.output)]
    if heldout_table is None or not cfg.eval.every_steps:
        return out
    tokenizer = trainer.processing_class
    heldout = HeldoutSet.from_table(heldout_table, tokenizer)
    e, d = cfg.eval, cfg.dpo
    args = (heldout, tokenizer.pad_token_id, e.batch_size, d.max_length, d.truncation_mode)
    unwrap = trainer.accelerator.unwrap_model
    source = trainer.ref_model if spec.reference_mode == "model" else unwrap(trainer.model)
    reference, lengths = heldout_logps(source, *args)  # before train() loads a checkpoint: the reference
    params = DPOParams(d.beta, d.alpha)

    class HeldoutEval(TrainerCallback):
        def on_step_end(self, args_, state, control, **kwargs):
            if state.global_step % e.every_steps:
                return
            policy, _ = heldout_logps(unwrap(trainer.model), *args)
            metrics = reward_metrics(policy, reference, lengths, heldout.langs, params, spec.groups)
            state.log_history.append({"step": state.global_step, **flat(metrics)})

    out.append(HeldoutEval())
    return out


def _worker_record(rank: int) -> Any:
    """Writes ``ray-worker-<rank>.json`` (node, pid, GPUs scheduled, device used) into every checkpoint of this rank
    before Ray Train collects it, so a run records which node ran which rank (also after a node was lost)."""
    import json

    from transformers import TrainerCallback

    from ..ray_env import placement

    record = {"rank": rank, **placement()}

    class WorkerRecord(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{WORKER_RECORD}{rank}.json").write_text(json.dumps({**record, "step": state.global_step}))

    return WorkerRecord()


def _policy(cfg: TrainConfig) -> tuple[Any, Any, Any]:
    """``(tokenizer, model, peft_config)``: a fresh LoRA is left to TRL; an existing adapter is loaded trainable."""
    from ..models import load_model, load_tokenizer, resolve_model_path

    m = cfg.model
    path = resolve_model_path(m.name_or_path)  # tiny:// is built on each node, as the filter's actors do
    tokenizer = load_tokenizer(path, m.revision, m.trust_remote_code)
    model = load_model(path, m.dtype, m.revision, m.trust_remote_code, m.attn_implementation).train()
    peft_config = None
    if m.lora is not None and m.lora.adapter_path:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, resolve_model_path(m.lora.adapter_path), is_trainable=True)
    elif m.lora is not None:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=m.lora.rank,
            lora_alpha=m.lora.alpha,
            lora_dropout=0.0,
            target_modules=m.lora.target_modules,
            task_type="CAUSAL_LM",
        )
    return tokenizer, model, peft_config


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import datasets
    import ray.train
    import torch
    from ray.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer

    from ..models import load_model, resolve_model_path
    from .data import TEXT_COLUMNS, cap_per_language, collect, pad_shard
    from .shard_trainer import ShardLocalDPOTrainer

    spec: WorkerSpec = config["spec"]
    cfg = spec.cfg
    datasets.disable_progress_bars()
    # TRL 1.16's DPO loss reads `model.is_gradient_checkpointing`, which transformers 5.23 deprecates, on every step;
    # nothing in our config triggers it (our own rename is in dpo_args)
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    rank = ray.train.get_context().get_world_rank()
    shard = pad_shard(collect(ray.train.get_dataset_shard("train")), spec.shard_rows)
    train_dataset = datasets.Dataset(shard.select(list(TEXT_COLUMNS)))
    heldout = None
    if rank == 0 and spec.groups and cfg.eval.every_steps:
        heldout = cap_per_language(collect(ray.train.get_dataset_shard("heldout")), cfg.eval.max_pairs_per_language)
    if cfg.scaling.torch_threads and not torch.cuda.is_available():
        # Ray sets OMP_NUM_THREADS to the worker's (fractional) CPU share; with the shard read, no data task needs
        # the rest, so a CPU-only box may give the step all its cores.
        torch.set_num_threads(cfg.scaling.torch_threads)

    tokenizer, model, peft_config = _policy(cfg)
    ref_model = None
    if spec.reference_mode == "model":
        m = cfg.model
        ref_path = resolve_model_path(m.reference_path)
        ref_model = load_model(ref_path, m.dtype, m.revision, m.trust_remote_code, m.attn_implementation)
    output_dir = Path(tempfile.gettempdir()) / "congrad-ray-train" / spec.run_key / f"rank{rank}"
    shutil.rmtree(output_dir, ignore_errors=True)  # local Trainer copies; Ray Train's storage holds the real ones
    trainer = ShardLocalDPOTrainer(
        model=model,
        ref_model=ref_model,
        args=dpo_args(cfg, spec, str(output_dir)),
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[_worker_record(rank), RayTrainReportCallback()],  # the record first: it rides in the checkpoint
        dpo_params=DPOParams(cfg.dpo.beta, cfg.dpo.alpha),
    )
    if rank == 0:
        for callback in _callbacks(trainer, spec, heldout):
            trainer.add_callback(callback)
    trainer = prepare_trainer(trainer)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        trainer.train()
        return
    with checkpoint.as_directory() as directory:
        trainer.train(resume_from_checkpoint=os.path.join(directory, TRAINER_CHECKPOINT))
