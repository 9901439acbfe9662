"""Separation (AUROC) and the paired bootstrap interval of an arm-vs-baseline difference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from congrad_ray.core import auroc, paired_bootstrap
from congrad_ray.core.measures import bootstrap_indices


def auroc_by_pairs(scores, positive):
    """Every (positive, negative) pair counted: the definition, O(N^2)."""
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    if not pos or not neg:
        return float("nan")
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg) / (len(pos) * len(neg))


def bootstrap_by_loops(a, b, groups, seeds, pairs):
    """The resampled statistic for given draws, one resample, seed and language at a time."""
    stats = []
    names = sorted(set(groups))
    for r in range(seeds.shape[0]):
        per_seed = []
        for j in range(seeds.shape[1]):
            s = seeds[r, j]
            lang_means = []
            for g in names:
                cols = [pairs[r, j, i] for i in range(len(groups)) if groups[i] == g]
                lang_means.append(sum(a[s][c] - b[s][c] for c in cols) / len(cols))
            per_seed.append(sum(lang_means) / len(lang_means))
        stats.append(sum(per_seed) / len(per_seed))
    return np.array(stats)


def test_auroc_extremes_and_ties():
    assert auroc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert auroc([0.1, 0.2, 0.9, 0.8], [True, True, False, False]) == 0.0
    assert auroc([0.5, 0.5], [True, False]) == 0.5
    assert np.isnan(auroc([0.5, 0.4], [True, True]))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([-1.0, 0.0, 0.3, 0.3001, 2.0]), st.booleans()), min_size=1, max_size=40))
def test_auroc_matches_the_pair_count(rows):
    scores, positive = [r[0] for r in rows], [r[1] for r in rows]
    fast, slow = auroc(scores, positive), auroc_by_pairs(scores, positive)
    assert (np.isnan(fast) and np.isnan(slow)) or fast == pytest.approx(slow)


def test_bootstrap_vectorised_statistic_matches_the_loops():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 2, size=(3, 12)).astype(float)
    b = rng.integers(0, 2, size=(3, 12)).astype(float)
    groups = ["de"] * 4 + ["en"] * 5 + ["sw"] * 3
    seeds, pairs = bootstrap_indices(np.array(groups), 3, 50, seed=7)
    slow = bootstrap_by_loops(a, b, groups, seeds, pairs)
    interval = paired_bootstrap(a, b, groups, n_boot=50, seed=7)
    assert interval.low == pytest.approx(float(np.quantile(slow, 0.025)))
    assert interval.high == pytest.approx(float(np.quantile(slow, 0.975)))
    # resampled pairs stay inside their language
    g = np.array(groups)
    assert (g[pairs] == g[None, None, :]).all()


def test_bootstrap_constant_difference_and_symmetry():
    groups = ["a"] * 5 + ["b"] * 5
    a, b = np.ones((3, 10)), np.zeros((3, 10))
    iv = paired_bootstrap(a, b, groups, n_boot=200, seed=0)
    assert (iv.estimate, iv.low, iv.high) == (1.0, 1.0, 1.0) and iv.excludes_zero()
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 2, size=(3, 10)), rng.integers(0, 2, size=(3, 10))
    forward, backward = paired_bootstrap(x, y, groups, seed=3), paired_bootstrap(y, x, groups, seed=3)
    assert forward.estimate == pytest.approx(-backward.estimate)
    assert forward.low == pytest.approx(-backward.high) and forward.high == pytest.approx(-backward.low)
    assert paired_bootstrap(x, y, groups, seed=3) == forward  # seeded: the same call, the same interval


@settings(max_examples=30, deadline=None)
@given(n_seeds=st.integers(1, 4), per_lang=st.integers(2, 8), seed=st.integers(0, 1000))
def test_bootstrap_interval_bounds(n_seeds, per_lang, seed):
    rng = np.random.default_rng(seed)
    groups = ["x"] * per_lang + ["y"] * per_lang
    a, b = rng.integers(0, 2, size=(2, n_seeds, 2 * per_lang)).astype(float)
    iv = paired_bootstrap(a, b, groups, n_boot=300, seed=seed)
    assert -1.0 <= iv.low <= iv.high <= 1.0
    same = paired_bootstrap(a, a, groups, n_boot=50, seed=seed)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0) and not same.excludes_zero()


def test_a_real_difference_is_found_and_noise_is_not():
    rng = np.random.default_rng(0)
    groups = ["x"] * 60 + ["y"] * 60
    better = (rng.random((3, 120)) < 0.8).astype(float)
    worse = (rng.random((3, 120)) < 0.5).astype(float)
    noise = (rng.random((3, 120)) < 0.5).astype(float)
    assert paired_bootstrap(better, worse, groups, seed=0).excludes_zero()
    assert not paired_bootstrap(noise, worse, groups, seed=0).excludes_zero()


def chrf_by_lists(hyp, ref, max_n=6, beta=2.0):
    """chrF with n-grams as plain lists (multiset intersection by removal)."""
    h, r = "".join(hyp.split()), "".join(ref.split())
    scores = []
    for n in range(1, max_n + 1):
        hg = [h[i : i + n] for i in range(len(h) - n + 1)]
        rg = [r[i : i + n] for i in range(len(r) - n + 1)]
        if not hg and not rg:
            continue
        pool, common = list(rg), 0
        for g in hg:
            if g in pool:
                pool.remove(g)
                common += 1
        p = common / len(hg) if hg else 0.0
        rc = common / len(rg) if rg else 0.0
        scores.append((1 + beta**2) * p * rc / (beta**2 * p + rc) if p + rc else 0.0)
    return sum(scores) / len(scores) if scores else 0.0


def test_chrf_identity_disjoint_and_order():
    from congrad_ray.core import chrf

    assert chrf("la ville de Paris", "la ville de Paris") == 1.0
    assert chrf("xyz", "abc") == 0.0 and chrf("", "") == 0.0
    assert chrf("la ville de Paris", "la ville de Lyon") > chrf("Paris de ville la", "la ville de Lyon")


@settings(max_examples=80, deadline=None)
@given(st.text(alphabet="ab cé中", max_size=12), st.text(alphabet="ab cé中", max_size=12))
def test_chrf_matches_the_list_twin(hyp, ref):
    from congrad_ray.core import chrf

    assert chrf(hyp, ref) == pytest.approx(chrf_by_lists(hyp, ref))
