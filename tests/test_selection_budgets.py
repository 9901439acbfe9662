"""Selection beyond the paper: agreement budgets, the hybrid score, and the per-language agreement they read."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from congrad_ray.core import SelectionRule, agreement_budgets, hybrid_scores, language_agreement, pcgrad, select
from congrad_ray.core.selection import within_language_percentiles
from congrad_ray.core.surgery import mean_direction

# ------------------------------------------------------------------------------------------ slow, obvious twins


def budgets_one_seat_at_a_time(counts, agreement, rho, floor, minimum):
    """D'Hondt as it is taught: floors, then one seat at a time to the largest w_l / (q_l + 1); the agreeing
    languages first, then (once they are full) the others by size."""
    langs = sorted(counts)
    quota = {lg: min(counts[lg], max(minimum, math.ceil(floor * counts[lg]))) for lg in langs}
    weight = {lg: counts[lg] * max(agreement.get(lg, 0.0), 0.0) for lg in langs}
    budget = sum(math.ceil(rho * counts[lg]) for lg in langs)
    tiers = ([lg for lg in langs if weight[lg] > 0], [lg for lg in langs if weight[lg] <= 0])
    for tier, w in zip(tiers, (weight, {lg: float(counts[lg]) for lg in langs})):
        while sum(quota.values()) < budget:
            best = None
            for lg in tier:  # sorted: the first of equal quotients wins
                if quota[lg] < counts[lg]:
                    q = w[lg] / (quota[lg] + 1)
                    if best is None or q > best[0]:
                        best = (q, lg)
            if best is None:
                break
            quota[best[1]] += 1
    return quota


def percentiles_by_counting(values, langs):
    out = []
    for v, lg in zip(values, langs):
        mine = [x for x, m in zip(values, langs) if m == lg]
        below = sum(x < v for x in mine)
        equal = sum(x == v for x in mine)
        out.append((below + (equal + 1) / 2 - 0.5) / len(mine))
    return np.array(out)


# ------------------------------------------------------------------------------------------ agreement budgets


def test_conflicting_language_keeps_only_its_floor_and_the_budget_is_kept():
    counts = {"en": 100, "fr": 100, "sw": 100}
    q = agreement_budgets(counts, {"en": 0.5, "fr": 0.5, "sw": -0.3}, rho=0.5, floor=0.1)
    assert q == {"en": 70, "fr": 70, "sw": 10}  # 150 = 10 + 10 + 10 floors + 120 shared equally by en and fr
    assert sum(q.values()) == 150


def test_equal_agreement_gives_the_uniform_quotas():
    counts = {"de": 40, "en": 40, "fr": 40}
    q = agreement_budgets(counts, {"de": 0.2, "en": 0.2, "fr": 0.2}, rho=0.5, floor=0.1)
    assert q == {lg: 20 for lg in counts}


def test_floors_win_when_the_budget_is_smaller_and_no_agreement_falls_back_to_sizes():
    assert agreement_budgets({"a": 10, "b": 10}, {"a": 1.0, "b": 1.0}, rho=0.1, floor=0.5) == {"a": 5, "b": 5}
    assert agreement_budgets({"a": 30, "b": 10}, {"a": -1.0, "b": 0.0}, rho=0.5, floor=0.0) == {"a": 15, "b": 5}
    # the agreeing language is full: the rest of the budget goes to the others by size
    assert agreement_budgets({"a": 4, "b": 10}, {"a": 0.5, "b": -0.5}, rho=0.75, floor=0.0) == {"a": 4, "b": 7}


def test_select_with_agreement_budgets_drops_most_of_the_conflicting_language():
    langs = np.array(["en"] * 10 + ["sw"] * 10)
    ids = np.array([f"{lg}{i:02d}" for i, lg in enumerate(langs)])
    scores = np.linspace(1, 0, 20)
    rule = SelectionRule("top_rho", rho=0.5, budgets="agreement", budget_floor=0.2)
    d = select(scores, langs, ids, rule, agreement={"en": 0.6, "sw": -0.2})
    assert int(d.keep[langs == "en"].sum()) == 8 and int(d.keep[langs == "sw"].sum()) == 2
    with pytest.raises(ValueError, match="agreement"):
        select(scores, langs, ids, rule)


counts_st = st.dictionaries(st.sampled_from(["de", "en", "fr", "ru", "sw"]), st.integers(1, 60), min_size=1)


@settings(max_examples=150, deadline=None)
@given(
    counts=counts_st,
    cos=st.lists(st.sampled_from([-0.5, -0.1, 0.0, 0.1, 0.25, 0.5, 0.9]), min_size=5, max_size=5),
    rho=st.floats(0.05, 1.0),
    floor=st.sampled_from([0.0, 0.05, 0.1, 0.3]),
    minimum=st.integers(0, 3),
)
def test_budgets_match_the_one_seat_at_a_time_twin(counts, cos, rho, floor, minimum):
    agreement = dict(zip(["de", "en", "fr", "ru", "sw"], cos))
    fast = agreement_budgets(counts, agreement, rho, floor, minimum)
    assert fast == budgets_one_seat_at_a_time(counts, agreement, rho, floor, minimum)
    budget = sum(math.ceil(rho * n) for n in counts.values())
    floors = {lg: min(n, max(minimum, math.ceil(floor * n))) for lg, n in counts.items()}
    assert all(floors[lg] <= fast[lg] <= counts[lg] for lg in counts)
    assert sum(fast.values()) == max(budget, sum(floors.values()))


# ------------------------------------------------------------------------------------------ hybrid score


def test_percentiles_share_ranks_on_ties_and_are_per_language():
    values = np.array([3.0, 1.0, 1.0, 10.0, -5.0])
    langs = np.array(["a", "a", "a", "b", "b"])
    np.testing.assert_allclose(within_language_percentiles(values, langs), [5 / 6, 1 / 3, 1 / 3, 0.75, 0.25])


def test_hybrid_weight_zero_and_one_rank_like_each_part():
    rng = np.random.default_rng(0)
    cos, margin = rng.normal(size=30), rng.normal(size=30)
    langs = np.array(["a", "b", "c"] * 10)
    for weight, part in ((0.0, cos), (1.0, margin)):
        h = hybrid_scores(cos, margin, langs, weight)
        for lg in "abc":
            m = langs == lg
            assert np.argsort(h[m]).tolist() == np.argsort(part[m]).tolist()
    with pytest.raises(ValueError, match="weight"):
        hybrid_scores(cos, margin, langs, 1.5)


def test_hybrid_drops_the_pair_that_only_the_margin_catches():
    # the second pair agrees with the consensus best but the policy firmly prefers its rejected answer
    cos = np.array([0.5, 0.9, 0.1, 0.3])
    margin = np.array([0.3, -2.0, 0.1, 0.4])
    langs = np.array(["de"] * 4)
    ids = np.array(list("abcd"))
    by_cos = select(cos, langs, ids, SelectionRule("top_rho", rho=0.5))
    by_hybrid = select(hybrid_scores(cos, margin, langs, 0.5), langs, ids, SelectionRule("top_rho", rho=0.5))
    assert ids[by_cos.keep].tolist() == ["a", "b"] and ids[by_hybrid.keep].tolist() == ["a", "d"]


@settings(max_examples=80, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from([-1.0, 0.0, 0.5, 2.0]), st.sampled_from(["x", "y", "z"])), min_size=1, max_size=30
    )
)
def test_percentiles_match_counting(rows):
    values = np.array([r[0] for r in rows])
    langs = np.array([r[1] for r in rows])
    np.testing.assert_allclose(within_language_percentiles(values, langs), percentiles_by_counting(values, langs))


# ------------------------------------------------------------------------------------------ agreement


def test_language_agreement_of_a_conflicting_language():
    gen = torch.Generator().manual_seed(0)
    shared = torch.randn(64, generator=gen, dtype=torch.float64)
    langs = ["de", "en", "fr", "ru", "sw"]
    g = torch.stack([shared + 0.8 * torch.randn(64, generator=gen, dtype=torch.float64) for _ in langs[:4]] + [-shared])
    cos = torch.nn.functional.cosine_similarity
    for direction in (pcgrad(g, langs, seed=0), mean_direction(g, langs)):
        a = language_agreement(g, direction)
        assert float(a.others[4]) == pytest.approx(float(cos(g[4], g[:4].sum(dim=0), 0)))
        assert float(a.before[0]) == pytest.approx(float(cos(g[0], direction.g_star, 0)))
        assert float(a.after[1]) == pytest.approx(float(cos(direction.projected[1], direction.g_star, 0)))
        assert float(a.others[4]) < -0.5 and bool((a.others[:4] > 0.3).all())
        assert set(a.as_dict()) == set(langs)
    alone = language_agreement(g[:1], mean_direction(g[:1], ["de"]))
    assert float(alone.others[0]) == 0.0
