"""GPU tier: the same twin checks on CUDA, in float32 and bfloat16. Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch

from congrad_ray.core import (
    CountSketch,
    DPOParams,
    reference_logps,
    scoped_linears,
    sketch_pair_gradients,
    sketch_pair_gradients_loop,
)
from congrad_ray.tokenization import collate

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("route", ["fft", "explicit"])
def test_fast_path_matches_twin_on_cuda(policy_model, reference_model, tokenizer, mixed_pairs, route):
    policy, reference = policy_model.to("cuda"), reference_model.to("cuda")
    try:
        batch = collate(mixed_pairs, tokenizer.pad_token_id).to("cuda")
        ref = reference_logps(reference, batch)
        linears = scoped_linears(policy)
        cs = CountSketch(1024, 0, route=route)
        fast = sketch_pair_gradients(policy, batch, ref, linears, cs, DPOParams(0.1, 0.01)).sketch
        slow = sketch_pair_gradients_loop(policy, batch, ref, linears, cs, DPOParams(0.1, 0.01))
        torch.testing.assert_close(fast.cpu(), slow.cpu(), atol=5e-5 * slow.abs().max().item(), rtol=1e-3)
    finally:
        policy.to("cpu"), reference.to("cpu")


def test_bf16_sketches_stay_close_to_fp32(tiny_dir, tokenizer, mixed_pairs):
    from congrad_ray.models import load_model

    batch = collate(mixed_pairs, tokenizer.pad_token_id).to("cuda")
    cs = CountSketch(2048, 0)
    out = {}
    for dtype in ("float32", "bfloat16"):
        model = load_model(str(tiny_dir), dtype=dtype).to("cuda")
        out[dtype] = sketch_pair_gradients(model, batch, None, scoped_linears(model), cs, DPOParams(0.1, 0.0)).sketch
    cos = torch.nn.functional.cosine_similarity(out["float32"], out["bfloat16"].float(), dim=1)
    assert (cos > 0.98).all(), cos
