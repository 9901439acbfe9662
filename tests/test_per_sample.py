"""The fast path (one batched forward+backward, hooks, TensorSketch) against its slow twin (a per-pair backward
loop, materialised gradients, explicit count sketch), for every parameter scope."""

from __future__ import annotations

import copy

import pytest
import torch

from congrad_ray.core import (
    CountSketch,
    DPOParams,
    logprob_margin,
    per_sample_gradients_loop,
    reference_logps,
    scoped_linears,
    sketch_pair_gradients,
    sketch_pair_gradients_loop,
    sketch_sequence_gradients,
    sketch_sequence_gradients_loop,
    token_nll,
)
from congrad_ray.models import add_lora
from congrad_ray.tokenization import collate

PARAMS = DPOParams(beta=0.1, alpha=0.02)


ROUTES = ["fft", "explicit"]  # TensorSketch (never forms g_i) and blockwise GEMM + hash; "auto" picks one per layer


def _assert_twins_agree(model, batch, ref, linears, k=512, route="auto"):
    """The twins build their own sketches from the seed: each finds the layers sharing an input by itself."""
    fast = sketch_pair_gradients(model, batch, ref, linears, CountSketch(k, seed=11, route=route), PARAMS)
    slow = sketch_pair_gradients_loop(model, batch, ref, linears, CountSketch(k, seed=11), PARAMS)
    scale = slow.abs().max()
    assert scale > 1e-4  # gradients are not trivially zero
    torch.testing.assert_close(fast.sketch, slow, atol=2e-5 * scale.item(), rtol=1e-4)
    return fast


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_linear_scope_matches_slow_twin(policy_model, reference_model, tokenizer, mixed_pairs, padding_side, route):
    batch = collate(mixed_pairs, tokenizer.pad_token_id, padding_side=padding_side)
    ref = reference_logps(reference_model, batch)
    fast = _assert_twins_agree(policy_model, batch, ref, scoped_linears(policy_model, "linear"), route=route)
    assert fast.sketch.shape == (len(mixed_pairs), 512)
    assert torch.equal(fast.n_tokens, batch.completion_lengths[:5] + batch.completion_lengths[5:])


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_sequence_nll_sketch_matches_slow_twin(policy_model, tokenizer, mixed_pairs, padding_side, route):
    """The LM-loss form (a row is a sample, its summed next-token NLL the loss): the peers benchmark's contestant."""
    batch = collate(mixed_pairs, tokenizer.pad_token_id, padding_side=padding_side)
    ids, mask = batch.input_ids, batch.attention_mask
    linears = scoped_linears(policy_model, "linear")
    fast, nll = sketch_sequence_gradients(policy_model, ids, mask, linears, CountSketch(512, seed=5, route=route))
    slow = sketch_sequence_gradients_loop(policy_model, ids, mask, linears, CountSketch(512, seed=5))
    assert fast.shape == (ids.shape[0], 512) and slow.abs().max() > 1e-4
    torch.testing.assert_close(fast, slow, atol=2e-5 * slow.abs().max().item(), rtol=1e-4)
    torch.testing.assert_close(nll, token_nll(policy_model, ids, mask)[0].detach())


def test_layers_reading_one_input_share_its_hash(policy_model, tokenizer, mixed_pairs, lora_policy):
    """q/k/v read the attention norm's output and gate/up the MLP norm's: each set shares one input hash (named
    after its smallest name); o and down read inputs of their own. Fast and slow paths declare the same sets."""
    batch = collate(mixed_pairs, tokenizer.pad_token_id)
    for model, scope in ((policy_model, "linear"), (lora_policy, "lora")):
        linears = scoped_linears(model, scope)
        fast, slow = CountSketch(64, 0), CountSketch(64, 0)
        sketch_pair_gradients(model, batch, None, linears, fast, PARAMS)
        sketch_pair_gradients_loop(model, batch, reference_logps(model, batch), linears, slow, PARAMS)
        streams = {name: fast.input_name(f"{name}.weight") for name in linears}
        assert streams == {name: slow.input_name(f"{name}.weight") for name in linears}
        readers = {}
        for name, stream in streams.items():  # "...q_proj" -> "q_proj", "...q_proj.lora_A.default" -> "q_proj.lora_A"
            readers.setdefault(stream, []).append(
                ".".join(name.split(".")[-3:-1]) if scope == "lora" else name.split(".")[-1]
            )
        shared = sorted(sorted(names) for names in readers.values() if len(names) > 1)
        if scope == "linear":
            assert shared == [["gate_proj", "up_proj"]] * 2 + [["k_proj", "q_proj", "v_proj"]] * 2
            assert len(readers) == 8  # and o, down alone in each of the 2 blocks
        else:  # the A matrices read their layer's input; each B reads its own A's output
            assert (
                shared
                == [["gate_proj.lora_A", "up_proj.lora_A"]] * 2
                + [["k_proj.lora_A", "q_proj.lora_A", "v_proj.lora_A"]] * 2
            )


@pytest.mark.parametrize("route", ROUTES)
def test_last_k_scope_matches_slow_twin(policy_model, reference_model, tokenizer, mixed_pairs, route):
    batch = collate(mixed_pairs, tokenizer.pad_token_id)
    linears = scoped_linears(policy_model, "last_k", last_k=1)
    assert all(".layers.1." in name for name in linears) and len(linears) == 7
    _assert_twins_agree(policy_model, batch, reference_logps(reference_model, batch), linears, route=route)


@pytest.mark.parametrize("route", ROUTES)
def test_qwen2_with_biases_matches_slow_twin(tokenizer, mixed_pairs, route):
    from congrad_ray.models import TinyModelSpec, build_tiny_model

    policy = build_tiny_model(tokenizer, TinyModelSpec(arch="qwen2", seed=3))
    reference = build_tiny_model(tokenizer, TinyModelSpec(arch="qwen2", seed=4))
    for name, p in policy.named_parameters():  # Qwen2 q/k/v biases start at zero: make them matter
        if name.endswith("bias"):
            p.data.normal_(0, 0.5)
    batch = collate(mixed_pairs, tokenizer.pad_token_id)
    linears = scoped_linears(policy, "linear")
    assert any(m.bias is not None for m in linears.values())
    _assert_twins_agree(policy, batch, reference_logps(reference, batch), linears, route=route)


@pytest.fixture(scope="module")
def lora_policy(tiny_dir):
    from congrad_ray.models import load_model

    torch.manual_seed(5)
    # random lora_B so that lora_A's gradient is not zero either
    return add_lora(load_model(str(tiny_dir)), rank=4, alpha=8, init_weights=False)


@pytest.mark.parametrize("route", ROUTES)
def test_lora_scope_matches_slow_twin_with_adapter_disabled_reference(lora_policy, tokenizer, mixed_pairs, route):
    batch = collate(mixed_pairs, tokenizer.pad_token_id)
    ref = reference_logps(lora_policy, batch, disable_adapter=True)
    linears = scoped_linears(lora_policy, "lora")
    assert linears and all("lora_" in name for name in linears)
    _assert_twins_agree(lora_policy, batch, ref, linears, route=route)


def test_policy_as_its_own_reference_needs_no_second_forward(policy_model, tokenizer, mixed_pairs):
    """``ref_logps=None``: the reference is the policy (z = alpha * length difference), same as passing its log-probs."""
    batch = collate(mixed_pairs, tokenizer.pad_token_id)
    cs, linears = CountSketch(256, 3), scoped_linears(policy_model)
    implicit = sketch_pair_gradients(policy_model, batch, None, linears, cs, PARAMS)
    explicit = sketch_pair_gradients(policy_model, batch, reference_logps(policy_model, batch), linears, cs, PARAMS)
    torch.testing.assert_close(implicit.sketch, explicit.sketch)
    lengths = batch.completion_lengths.float()
    torch.testing.assert_close(implicit.z, PARAMS.alpha * (lengths[:5] - lengths[5:]))
    # z carries nothing here, the policy's own margin does (same forward): what the hybrid score reads
    margin = logprob_margin(reference_logps(policy_model, batch), batch.completion_lengths)
    torch.testing.assert_close(implicit.policy_margin, margin)
    torch.testing.assert_close(explicit.policy_margin, margin)


def test_disabled_adapter_reference_is_the_base_model(lora_policy, reference_model, tokenizer, mixed_pairs):
    batch = collate(mixed_pairs, tokenizer.pad_token_id)
    base = reference_logps(reference_model, batch)
    torch.testing.assert_close(reference_logps(lora_policy, batch, disable_adapter=True), base)
    assert not torch.allclose(reference_logps(lora_policy, batch), base)


def test_precomputed_reference_columns_are_used(policy_model, reference_model, tokenizer, mixed_pairs):
    batch = collate(mixed_pairs, tokenizer.pad_token_id)
    batch.ref_logps = torch.arange(10, dtype=torch.float32)
    assert torch.equal(reference_logps(reference_model, batch), batch.ref_logps)


def test_pair_sketch_does_not_depend_on_batch_mates(policy_model, reference_model, tokenizer, mixed_pairs):
    """Padding and the other rows of the batch change no pair's sketch."""
    cs = CountSketch(256, 0)
    linears = scoped_linears(policy_model)
    full = collate(mixed_pairs, tokenizer.pad_token_id)
    together = sketch_pair_gradients(policy_model, full, reference_logps(reference_model, full), linears, cs, PARAMS)
    for i, pair in enumerate(mixed_pairs):
        for side in ("right", "left"):
            alone = collate([pair], tokenizer.pad_token_id, padding_side=side)
            one = sketch_pair_gradients(
                policy_model, alone, reference_logps(reference_model, alone), linears, cs, PARAMS
            )
            torch.testing.assert_close(one.sketch[0], together.sketch[i], atol=1e-5, rtol=1e-4)


def test_fast_path_leaves_weights_and_grads_untouched(policy_model, reference_model, tokenizer, mixed_pairs):
    model = copy.deepcopy(policy_model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = collate(mixed_pairs, tokenizer.pad_token_id)
    sketch_pair_gradients(
        model, batch, reference_logps(reference_model, batch), scoped_linears(model), CountSketch(64, 0), PARAMS
    )
    for name, p in model.named_parameters():
        assert p.grad is None
        assert torch.equal(p, before[name])


def test_sketch_of_exact_gradients_preserves_their_geometry(policy_model, reference_model, tokenizer, mixed_pairs):
    """Wide sketches of the exact per-sample gradients keep pairwise cosines (a sanity check on S itself)."""
    batch = collate(mixed_pairs, tokenizer.pad_token_id)
    ref = reference_logps(reference_model, batch)
    linears = scoped_linears(policy_model)
    grads = per_sample_gradients_loop(policy_model, batch, ref, linears, PARAMS)
    flat = torch.cat([g.flatten(1) for g in grads.values()], dim=1).double()
    exact = torch.nn.functional.normalize(flat, dim=1) @ torch.nn.functional.normalize(flat, dim=1).T
    sk = sketch_pair_gradients(policy_model, batch, ref, linears, CountSketch(1 << 15, 1), PARAMS).sketch.double()
    approx = torch.nn.functional.normalize(sk, dim=1) @ torch.nn.functional.normalize(sk, dim=1).T
    assert (approx - exact).abs().max() < 0.05


def test_scope_errors_name_the_fix(policy_model):
    with pytest.raises(ValueError, match="PEFT LoRA"):
        scoped_linears(policy_model, "lora")
    with pytest.raises(ValueError, match="last_k=5"):
        scoped_linears(policy_model, "last_k", last_k=5)
    assert "lm_head" not in " ".join(scoped_linears(policy_model))
