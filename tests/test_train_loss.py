"""The training loss (no Ray): CongradDPOTrainer's LP-DPO is core's lp_dpo_terms on core's sequence_logps, and with
alpha = 0 it is TRL's stock `sigmoid` loss; LoRA uses the base with adapters disabled as reference."""

from __future__ import annotations

import pytest
import torch

from congrad_ray.core import DPOParams, lp_dpo_terms, reference_logps, sequence_logps
from congrad_ray.tokenization import collate, tokenize_pair
from tests.conftest import MIXED_PAIRS


def _trainer(
    tiny_dir,
    tokenizer,
    tmp_path,
    alpha: float,
    lora: bool = False,
    beta: float = 0.1,
    loss_beta=None,
    precompute: bool = False,
    cls_name: str = "CongradDPOTrainer",
):
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig

    from congrad_ray.models import load_model
    from congrad_ray.train import shard_trainer

    args = DPOConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=len(MIXED_PAIRS),
        beta=beta,
        loss_type=["sigmoid"],
        bf16=False,
        activation_checkpointing=False,
        use_cpu=True,
        report_to="none",
        dataloader_num_workers=0,
        seed=0,
        precompute_ref_log_probs=precompute,
    )
    rows = Dataset.from_list([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in MIXED_PAIRS])
    peft = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM") if lora else None
    trainer_cls = getattr(shard_trainer, cls_name)  # CongradDPOTrainer, or its Ray-shard-local subclass
    trainer = trainer_cls(
        model=load_model(str(tiny_dir)),
        args=args,
        train_dataset=rows,
        processing_class=tokenizer,
        peft_config=peft,
        dpo_params=DPOParams(beta=beta if loss_beta is None else loss_beta, alpha=alpha),
    )
    torch.manual_seed(3)  # move the policy away from the reference, so z_i != 0
    with torch.no_grad():
        for p in trainer.model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return trainer


def _inputs(trainer):
    return trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])


@pytest.mark.parametrize("alpha", [0.0, 0.05])
def test_training_loss_is_core_lp_dpo(tiny_dir, tokenizer, tmp_path, alpha):
    trainer = _trainer(tiny_dir, tokenizer, tmp_path, alpha)
    inputs = _inputs(trainer)
    policy, ref_model = trainer.model.eval(), trainer.ref_model.eval()
    # the batch TRL collates is the one the filter scores (congrad_ray.tokenization)
    batch = collate([tokenize_pair(tokenizer, *row) for row in MIXED_PAIRS], tokenizer.pad_token_id)
    assert torch.equal(batch.input_ids, inputs["input_ids"])
    assert torch.equal(batch.completion_mask, inputs["completion_mask"])
    with torch.no_grad():
        core = lp_dpo_terms(
            sequence_logps(policy, batch),
            reference_logps(ref_model, batch),
            batch.completion_lengths,
            DPOParams(0.1, alpha),
        )
        ours = trainer.compute_loss(policy, inputs)
    assert core.z.std() > 0 and core.loss.mean().item() != pytest.approx(0.6931, abs=1e-3)
    assert ours.item() == pytest.approx(core.loss.mean().item(), abs=1e-6)
    if alpha:
        lengths = batch.completion_lengths.float()
        assert (lengths[:5] != lengths[5:]).any()  # the length term is really exercised
        plain = lp_dpo_terms(
            sequence_logps(policy, batch),
            reference_logps(ref_model, batch),
            batch.completion_lengths,
            DPOParams(0.1, 0.0),
        )
        assert abs(plain.loss.mean().item() - ours.item()) > 1e-3


def test_alpha_zero_equals_trl_sigmoid_loss_and_its_gradient(tiny_dir, tokenizer, tmp_path):
    from trl import DPOTrainer

    trainer = _trainer(tiny_dir, tokenizer, tmp_path, alpha=0.0)
    inputs, model = _inputs(trainer), trainer.model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    ours = trainer.compute_loss(model, inputs)
    ours_grad = torch.autograd.grad(ours, params)
    theirs = DPOTrainer._compute_loss(trainer, model, inputs, False)  # TRL's stock loss hook on the same trainer
    theirs_grad = torch.autograd.grad(theirs, params)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)
    for a, b in zip(ours_grad, theirs_grad):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    logged = trainer._metrics["train"]
    assert {"rewards/accuracies", "rewards/margins", "lp_dpo/z"} <= set(logged)


def test_lora_reference_is_the_base_with_adapters_disabled(tiny_dir, tokenizer, tmp_path):
    trainer = _trainer(tiny_dir, tokenizer, tmp_path, alpha=0.02, lora=True)
    assert trainer.ref_model is None
    inputs, model = _inputs(trainer), trainer.model.eval()
    batch = collate([tokenize_pair(tokenizer, *row) for row in MIXED_PAIRS], tokenizer.pad_token_id)
    with torch.no_grad():
        ref = reference_logps(model, batch, disable_adapter=True)
        core = lp_dpo_terms(sequence_logps(model, batch), ref, batch.completion_lengths, DPOParams(0.1, 0.02))
        ours = trainer.compute_loss(model, inputs)
    assert core.z.abs().max() > 1e-3
    assert ours.item() == pytest.approx(core.loss.mean().item(), abs=1e-6)


def test_a_beta_mismatch_is_refused(tiny_dir, tokenizer, tmp_path):
    with pytest.raises(ValueError, match="same beta"):
        _trainer(tiny_dir, tokenizer, tmp_path, alpha=0.0, beta=0.2, loss_beta=0.1)


@pytest.mark.parametrize("cls_name", ["CongradDPOTrainer", "ShardLocalDPOTrainer"])
def test_precomputed_reference_log_probs_are_read_from_the_batch(tiny_dir, tokenizer, tmp_path, cls_name):
    """Full fine-tuning with precomputed log pi_ref: no reference model is kept; the columns computed before
    training (from the initial model; by TRL, or rank-locally on a Ray shard) enter core's LP-DPO."""
    from congrad_ray.models import load_model

    trainer = _trainer(tiny_dir, tokenizer, tmp_path, alpha=0.03, precompute=True, cls_name=cls_name)
    assert trainer.ref_model is None and "ref_chosen_logps" in trainer.train_dataset.column_names
    inputs, policy = _inputs(trainer), trainer.model.eval()
    assert "ref_chosen_logps" in inputs
    batch = collate([tokenize_pair(tokenizer, *row) for row in MIXED_PAIRS], tokenizer.pad_token_id)
    with torch.no_grad():
        ref = reference_logps(load_model(str(tiny_dir)), batch)  # the initial model
        torch.testing.assert_close(
            torch.cat([inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]]), ref, atol=1e-4, rtol=1e-5
        )
        core = lp_dpo_terms(sequence_logps(policy, batch), ref, batch.completion_lengths, DPOParams(0.1, 0.03))
        ours = trainer.compute_loss(policy, inputs)
    assert ours.item() == pytest.approx(core.loss.mean().item(), abs=1e-5)
