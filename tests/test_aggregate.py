"""Language aggregation: mean partials merge exactly under any split; EMA segments combine exactly."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from congrad_ray.core import LanguageSums, ema_combine, ema_segment, ema_sequential, minibatch_means


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 40),
    cuts=st.lists(st.integers(0, 40), max_size=5),
    seed=st.integers(0, 1000),
)
def test_mean_is_identical_under_any_split(n, cuts, seed):
    gen = torch.Generator().manual_seed(seed)
    sketches = torch.randn(n, 6, generator=gen)
    langs = [["de", "fr", "sw"][int(j)] for j in torch.randint(0, 3, (n,), generator=gen)]
    whole = LanguageSums.of(sketches, langs)
    bounds = sorted({0, n, *[c for c in cuts if c <= n]})
    parts = [LanguageSums.of(sketches[a:b], langs[a:b]) for a, b in zip(bounds, bounds[1:]) if b > a]
    merged = parts[0]
    for part in parts[1:]:
        merged = merged.merge(part)
    assert merged.langs == whole.langs
    assert torch.equal(merged.counts, whole.counts)
    torch.testing.assert_close(merged.means(), whole.means(), rtol=1e-12, atol=1e-12)
    for j, lang in enumerate(whole.langs):
        rows = torch.tensor([x == lang for x in langs])
        torch.testing.assert_close(whole.means()[j], sketches[rows].double().mean(0))


@settings(max_examples=40, deadline=None)
@given(
    n_batches=st.integers(1, 30),
    cuts=st.lists(st.integers(1, 29), max_size=6),
    gamma=st.floats(0.0, 0.99),
    debias=st.booleans(),
)
def test_ema_segments_combine_exactly(n_batches, cuts, gamma, debias):
    means = torch.randn(n_batches, 4, generator=torch.Generator().manual_seed(n_batches), dtype=torch.float64)
    bounds = sorted({0, n_batches, *[c for c in cuts if c < n_batches]})
    segments = [ema_segment(means[a:b], gamma) for a, b in zip(bounds, bounds[1:])]
    torch.testing.assert_close(
        ema_combine(segments, gamma, debias), ema_sequential(means, gamma, debias), rtol=1e-10, atol=1e-12
    )


def test_minibatch_means():
    s = torch.arange(10, dtype=torch.float32)[:, None]
    torch.testing.assert_close(minibatch_means(s, 4)[:, 0], torch.tensor([1.5, 5.5, 8.5], dtype=torch.float64))


def test_debiased_ema_of_a_constant_is_the_constant():
    means = torch.ones(3, 2, dtype=torch.float64)
    torch.testing.assert_close(ema_sequential(means, 0.9), torch.ones(2, dtype=torch.float64))
