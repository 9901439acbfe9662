"""PCGrad on the L x k matrix: hand-worked 2-D and 3-D cases, invariances."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from congrad_ray.core import cosine_matrix, mean_direction, pcgrad
from congrad_ray.core.surgery import pcgrad_order


def t(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_two_conflicting_languages_by_hand():
    # G_a = (1, 0), G_b = (-1, 1): <G_a, G_b> = -1 < 0, so each is projected onto the other's normal plane.
    d = pcgrad(t([1, 0], [-1, 1]), ["a", "b"], seed=0)
    torch.testing.assert_close(d.projected, t([0.5, 0.5], [0.0, 1.0]))  # a - (-1/2) b ;  b - (-1/1) a
    torch.testing.assert_close(d.g_star, torch.tensor([0.5, 1.5], dtype=torch.float64))
    assert d.projections == 2
    assert abs(torch.dot(d.projected[0], t([-1, 1])[0])) < 1e-12  # p_a is orthogonal to G_b


def test_three_languages_by_hand_follow_the_seeded_order():
    g = t([1, 0, 0], [0, 1, 0], [-1, -1, 1])  # a, b orthogonal; c conflicts with both
    langs = ["a", "b", "c"]
    for seed in range(6):
        d = pcgrad(g, langs, seed)
        # a: vs c -> (2/3, -1/3, 1/3); then vs b (now conflicting) -> (2/3, 0, 1/3). b first: no-op, then c.
        p_a = [2 / 3, 0, 1 / 3] if pcgrad_order(langs, "a", seed) == ["c", "b"] else [2 / 3, -1 / 3, 1 / 3]
        p_b = [0, 2 / 3, 1 / 3] if pcgrad_order(langs, "b", seed) == ["c", "a"] else [-1 / 3, 2 / 3, 1 / 3]
        p_c = [0, 0, 1]  # either order ends at (0, 0, 1)
        torch.testing.assert_close(d.projected, t(p_a, p_b, p_c))
        torch.testing.assert_close(d.g_star, t(p_a, p_b, p_c).sum(0))
    orders = {tuple(pcgrad_order(langs, "a", s)) for s in range(20)}
    assert orders == {("b", "c"), ("c", "b")}  # the seed really drives the order


def test_aligned_languages_are_untouched():
    g = t([1, 2, 0], [2, 1, 1], [0, 1, 3])
    d = pcgrad(g, ["x", "y", "z"], seed=1)
    assert d.projections == 0
    torch.testing.assert_close(d.projected, g)
    torch.testing.assert_close(d.g_star, g.sum(0))


def test_zero_language_gradient_is_skipped():
    d = pcgrad(t([1, 0], [0, 0]), ["a", "b"], seed=0)
    torch.testing.assert_close(d.g_star, torch.tensor([1.0, 0.0], dtype=torch.float64))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 1000), perm_seed=st.integers(0, 1000), n=st.integers(2, 6))
def test_independent_of_row_order_given_the_seed(seed, perm_seed, n):
    g = torch.randn(n, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    langs = [f"l{j}" for j in range(n)]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(perm_seed)).tolist()
    a = pcgrad(g, langs, seed)
    b = pcgrad(g[perm], [langs[j] for j in perm], seed)
    assert torch.equal(a.g_star, b.g_star)
    assert torch.equal(a.projected[perm], b.projected)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 1000), n=st.integers(2, 6))
def test_projection_removes_every_conflict_it_resolves(seed, n):
    g = torch.randn(n, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    d = pcgrad(g, [str(j) for j in range(n)], seed)
    # the last projection of each language leaves it non-conflicting with that language
    for j, lang in enumerate(d.langs):
        last = pcgrad_order(d.langs, lang, seed)[-1]
        assert torch.dot(d.projected[j], g[d.langs.index(last)]) >= -1e-9


def test_mean_ablation_and_cosines():
    g = t([1, 0], [0, 2])
    d = mean_direction(g, ["a", "b"])
    torch.testing.assert_close(d.g_star, torch.tensor([0.5, 1.0], dtype=torch.float64))
    torch.testing.assert_close(cosine_matrix(g), t([1, 0], [0, 1]))
