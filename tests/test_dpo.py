"""LP-DPO loss, log-probs and tokenisation against TRL's DPOTrainer."""

from __future__ import annotations

import math

import pytest
import torch

from congrad_ray.core import DPOParams, lp_dpo_terms, reference_logps, sequence_logps
from congrad_ray.core.rows import check_tokens
from congrad_ray.tokenization import collate, tokenize_pair
from tests.conftest import MIXED_PAIRS


def test_lp_dpo_formula_by_hand():
    policy = torch.tensor([-3.0, -5.0, -4.0, -2.0])  # chosen rows, then rejected rows
    ref = torch.tensor([-3.5, -4.0, -4.0, -2.5])
    lengths = torch.tensor([4, 6, 2, 3])
    terms = lp_dpo_terms(policy, ref, lengths, DPOParams(beta=0.5, alpha=0.1))
    z0 = 0.5 * ((-3.0 + 3.5) - (-4.0 + 4.0)) + 0.1 * (4 - 2)
    z1 = 0.5 * ((-5.0 + 4.0) - (-2.0 + 2.5)) + 0.1 * (6 - 3)
    torch.testing.assert_close(terms.z, torch.tensor([z0, z1]))
    torch.testing.assert_close(terms.loss, torch.tensor([math.log1p(math.exp(-z0)), math.log1p(math.exp(-z1))]))


def test_alpha_zero_is_plain_dpo():
    policy, ref, lengths = torch.randn(6), torch.randn(6), torch.tensor([1, 9, 3, 7, 2, 2])
    plain = lp_dpo_terms(policy, ref, lengths, DPOParams(beta=0.2, alpha=0.0))
    beta_margin = 0.2 * ((policy[:3] - ref[:3]) - (policy[3:] - ref[3:]))
    torch.testing.assert_close(plain.loss, -torch.nn.functional.logsigmoid(beta_margin))


def _trl_trainer(policy, reference, tokenizer, rows, tmp_path, max_length=None):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    config = DPOConfig(
        output_dir=str(tmp_path / "trl"),
        per_device_train_batch_size=1,
        beta=0.1,
        loss_type=["sigmoid"],
        max_length=max_length,
        bf16=False,
        activation_checkpointing=False,
        use_cpu=True,
        report_to="none",
        dataloader_num_workers=0,
        seed=0,
    )
    dataset = Dataset.from_list([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in rows])
    return DPOTrainer(model=policy, ref_model=reference, args=config, train_dataset=dataset, processing_class=tokenizer)


@pytest.fixture(scope="module")
def trl_trainer(tiny_dir, tokenizer, tmp_path_factory):
    from congrad_ray.models import TinyModelSpec, build_tiny_model, load_model

    policy = build_tiny_model(tokenizer, TinyModelSpec(seed=7))
    return _trl_trainer(policy, load_model(str(tiny_dir)), tokenizer, MIXED_PAIRS, tmp_path_factory.mktemp("trl"))


def test_tokenisation_matches_trl(trl_trainer, tokenizer):
    for row, (p, c, r) in zip(trl_trainer.train_dataset, MIXED_PAIRS):
        ours = tokenize_pair(tokenizer, p, c, r)
        assert (ours.prompt_ids, ours.chosen_ids, ours.rejected_ids) == (
            row["prompt_ids"],
            row["chosen_ids"],
            row["rejected_ids"],
        )


def test_conversational_tokenisation_matches_trl(tokenizer):
    from datasets import Dataset
    from trl.trainer.dpo_trainer import DPOTrainer

    example = {
        "prompt": [{"role": "user", "content": "Bonjour, comment vas-tu ?"}],
        "chosen": [{"role": "assistant", "content": "Très bien, merci !"}],
        "rejected": [{"role": "assistant", "content": "Non."}],
    }
    # TRL's own preparation, called on a minimal stand-in for the trainer (it only reads `_tokenizer` and args)
    stand_in = type("T", (), {"_tokenizer": tokenizer})()
    args = type("A", (), {"dataset_num_proc": None, "max_length": None, "truncation_mode": "keep_start"})()
    trl_row = DPOTrainer._prepare_dataset(stand_in, Dataset.from_list([example]), tokenizer, args, "train")[0]
    ours = tokenize_pair(tokenizer, example["prompt"], example["chosen"], example["rejected"])
    assert ours.prompt_ids == trl_row["prompt_ids"]
    assert ours.chosen_ids == trl_row["chosen_ids"]
    assert ours.rejected_ids == trl_row["rejected_ids"]


@pytest.mark.parametrize("max_length,mode", [(None, "keep_start"), (12, "keep_start"), (12, "keep_end")])
def test_collation_matches_trl(mixed_pairs, tokenizer, max_length, mode):
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    trl_batch = DataCollatorForPreference(tokenizer.pad_token_id, max_length=max_length, truncation_mode=mode)(
        [{"prompt_ids": p.prompt_ids, "chosen_ids": p.chosen_ids, "rejected_ids": p.rejected_ids} for p in mixed_pairs]
    )
    ours = collate(mixed_pairs, tokenizer.pad_token_id, max_length, mode)
    assert torch.equal(ours.input_ids, trl_batch["input_ids"])
    assert torch.equal(ours.attention_mask, trl_batch["attention_mask"])
    assert torch.equal(ours.completion_mask, trl_batch["completion_mask"])


def test_per_pair_loss_equals_trl_sigmoid_loss(trl_trainer, tokenizer, mixed_pairs):
    """alpha = 0: our per-pair loss is TRL's `sigmoid` DPO loss on the same tiny models and rows, to 1e-5."""
    model = trl_trainer.model.eval()
    reference = trl_trainer.ref_model.eval()
    batch = collate(mixed_pairs, tokenizer.pad_token_id)
    ref = reference_logps(reference, batch)
    with torch.no_grad():
        ours = lp_dpo_terms(sequence_logps(model, batch), ref, batch.completion_lengths, DPOParams(beta=0.1)).loss
    for i, row in enumerate(trl_trainer.train_dataset):
        inputs = trl_trainer.data_collator([row])
        with torch.no_grad():
            theirs = trl_trainer.compute_loss(model, inputs)
        assert abs(ours[i].item() - theirs.item()) < 1e-5, (i, ours[i].item(), theirs.item())
    assert ours.std() > 0  # the rows really differ


def test_left_padding_gives_same_logps(policy_model, tokenizer, mixed_pairs):
    right = collate(mixed_pairs, tokenizer.pad_token_id, padding_side="right")
    left = collate(mixed_pairs, tokenizer.pad_token_id, padding_side="left")
    with torch.no_grad():
        torch.testing.assert_close(
            sequence_logps(policy_model, left), sequence_logps(policy_model, right), atol=1e-4, rtol=1e-5
        )


def test_prompt_that_fills_max_length_does_not_fit(mixed_pairs):
    long_prompt = max(mixed_pairs, key=lambda p: len(p.prompt_ids))
    lens = (len(long_prompt.prompt_ids), len(long_prompt.chosen_ids), len(long_prompt.rejected_ids))
    assert check_tokens(*lens, lens[0], "keep_start") == "prompt_too_long"
    assert check_tokens(*lens, lens[0], "keep_end") is None
    assert check_tokens(*lens, None, "keep_start") is None
    assert check_tokens(lens[0], 0, lens[2], None, "keep_start") == "empty_completion"
