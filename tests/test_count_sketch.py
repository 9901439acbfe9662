"""Count sketch: linearity, mergeability, determinism across processes, unbiasedness, 1/sqrt(k) error, and the
TensorSketch fast path against the explicit definition."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from congrad_ray.core import CountSketch

shapes = st.tuples(st.integers(1, 9), st.integers(1, 40))


def _tensor(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=st.integers(0, 10_000), a=st.floats(-3, 3), b=st.floats(-3, 3), k=st.sampled_from([2, 8, 64]))
def test_linear(shape, seed, a, b, k):
    cs = CountSketch(k, seed)
    u, v = _tensor(seed, 2, *shape), _tensor(seed + 1, 2, *shape)
    lhs = cs.sketch_matrix("w", a * u + b * v)
    rhs = a * cs.sketch_matrix("w", u) + b * cs.sketch_matrix("w", v)
    torch.testing.assert_close(lhs, rhs, rtol=1e-9, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(shape=shapes, seed=st.integers(0, 10_000), parts=st.integers(1, 6))
def test_sum_of_sketches_is_sketch_of_sum(shape, seed, parts):
    cs = CountSketch(16, seed)
    batch = _tensor(seed, parts, *shape)
    whole = cs.sketch_matrix("w", batch.sum(0, keepdim=True))
    merged = cs.sketch_matrix("w", batch).sum(0, keepdim=True)
    torch.testing.assert_close(whole, merged, rtol=1e-9, atol=1e-9)


def test_norm_preserved_without_collisions():
    """With k >= d and no collisions a count sketch is a signed permutation: it preserves every norm."""
    cs = CountSketch(1 << 16, 3)
    v = _tensor(0, 1, 1, 8)
    assert torch.isclose(cs.sketch_matrix("w", v).norm(), v.norm())


def test_names_and_seeds_give_different_maps():
    v = _tensor(0, 1, 4, 32)
    base = CountSketch(64, 0).sketch_matrix("a", v)
    assert not torch.allclose(base, CountSketch(64, 1).sketch_matrix("a", v))
    assert not torch.allclose(base, CountSketch(64, 0).sketch_matrix("b", v))


def _sketch_in_subprocess() -> list[float]:
    code = (
        "import torch;from congrad_ray.core import CountSketch;"
        "v=torch.arange(96,dtype=torch.float64).reshape(1,8,12).sin();"
        "print(CountSketch(32,1234).sketch_matrix('layers.0.q_proj.weight',v).flatten().tolist())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return [float(x) for x in out.strip()[1:-1].split(",")]


def test_same_seed_same_sketch_across_processes():
    v = torch.arange(96, dtype=torch.float64).reshape(1, 8, 12).sin()
    here = CountSketch(32, 1234).sketch_matrix("layers.0.q_proj.weight", v).flatten().tolist()
    assert _sketch_in_subprocess() == pytest.approx(here, abs=1e-12)


def test_inner_products_unbiased_and_error_shrinks_like_inverse_sqrt_k():
    u = _tensor(1, 1, 64, 64)
    v = 0.5 * u + _tensor(2, 1, 64, 64)
    exact = (u * v).sum().item()
    rmse = {}
    for k in (64, 256, 1024):
        errs = []
        for seed in range(300):
            cs = CountSketch(k, seed)
            errs.append((cs.sketch_matrix("w", u) * cs.sketch_matrix("w", v)).sum().item() - exact)
        errs = torch.tensor(errs)
        rmse[k] = errs.pow(2).mean().sqrt().item()
        # unbiased: the mean error over 300 seeds is within 4 standard errors of 0
        assert abs(errs.mean().item()) < 4 * errs.std().item() / 300**0.5
    # each 4x wider sketch halves the error (1/sqrt(k)), within sampling noise
    assert 1.5 < rmse[64] / rmse[256] < 2.7
    assert 1.5 < rmse[256] / rmse[1024] < 2.7


@pytest.mark.parametrize("method", ["fft", "explicit", "auto"])
@pytest.mark.parametrize(
    "n,t,d_out,d_in,k", [(3, 5, 7, 11, 16), (2, 9, 33, 4, 64), (4, 1, 1, 1, 8), (2, 3, 70, 90, 32)]
)
def test_outer_product_routes_equal_the_definition(n, t, d_out, d_in, k, method):
    cs = CountSketch(k, 9)
    delta, x = _tensor(1, n, t, d_out).float(), _tensor(2, n, t, d_in).float()
    explicit = cs.sketch_matrix("lin.weight", torch.einsum("ntr,ntc->nrc", delta, x))
    torch.testing.assert_close(cs.sketch_outer("lin.weight", delta, x, method=method), explicit, rtol=1e-4, atol=1e-4)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 5),
    t=st.integers(1, 300),
    d_out=st.integers(1, 40),  # up to 5k at k = 8: the one-axis sketch's signed 2k-bucket branch too
    d_in=st.integers(1, 40),
    k=st.sampled_from([8, 64]),
    chunk_rows=st.sampled_from([1, 3, 128, 1 << 12]),
    double=st.booleans(),
)
def test_fft_route_chunks_equal_the_definition(n, t, d_out, d_in, k, chunk_rows, double):
    """The FFT route works ``_FFT_CHUNK_ROWS`` token rows at a time: whole samples when ``t`` is short, one sample's
    tokens in pieces when it is long; any split, and either float width, gives the definition of ``S``."""
    dtype = torch.float64 if double else torch.float32
    cs = CountSketch(k, 3)
    delta, x = _tensor(1, n, t, d_out).to(dtype), _tensor(2, n, t, d_in).to(dtype)
    explicit = cs.sketch_matrix("lin.weight", torch.einsum("ntr,ntc->nrc", delta, x))
    fast = cs.sketch_outer("lin.weight", delta, x, chunk_elems=chunk_rows * k, method="fft")
    assert fast.dtype == dtype
    tol = 1e-9 if double else 1e-4
    torch.testing.assert_close(fast, explicit, rtol=tol, atol=tol * max(1.0, explicit.abs().max().item()))


@pytest.mark.parametrize("method", ["fft", "explicit"])
@pytest.mark.parametrize("n,t", [(0, 5), (3, 0)])
def test_outer_product_of_nothing_is_zero(method, n, t):
    out = CountSketch(16, 0).sketch_outer("w", torch.randn(n, t, 7), torch.randn(n, t, 9), method=method)
    assert out.shape == (n, 16) and not out.any()


def test_auto_route_follows_the_cost_model():
    cs = CountSketch(4096, 0)
    assert cs.outer_method(256, 64, 64) == "explicit"  # narrow layer: forming bounded blocks is cheaper
    assert cs.outer_method(256, 4096, 4096) == "fft"  # real-model width: TensorSketch, g_i never formed
    with pytest.raises(ValueError, match="route"):
        CountSketch(64, 0, route="magic")


@pytest.mark.parametrize("method", ["fft", "explicit"])
def test_outer_product_chunking_does_not_change_result(method):
    cs = CountSketch(32, 0)
    delta, x = _tensor(1, 6, 4, 5).float(), _tensor(2, 6, 4, 3).float()
    whole = cs.sketch_outer("w", delta, x, method=method)
    torch.testing.assert_close(cs.sketch_outer("w", delta, x, chunk_elems=32 * 4, method=method), whole)


def test_flat_sketch_matches_padded_matrix_view():
    cs = CountSketch(8, 0)
    v = _tensor(0, 2, 21)
    padded = torch.nn.functional.pad(v, (0, 3)).view(2, 3, 8)
    torch.testing.assert_close(cs.sketch_flat("flat", v), cs.sketch_matrix("flat", padded))


@pytest.mark.parametrize("k", [0, 3, 100])
def test_k_must_be_power_of_two(k):
    with pytest.raises(ValueError, match="power of two"):
        CountSketch(k, 0)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 3),
    t=st.integers(1, 40),
    outs=st.lists(st.integers(1, 30), min_size=1, max_size=3),
    d_in=st.integers(1, 30),
    k=st.sampled_from([8, 64]),
    method=st.sampled_from(["fft", "explicit", "auto"]),
)
def test_layers_sharing_an_input_are_the_sum_of_their_definitions(n, t, outs, d_in, k, method):
    """Layers reading one input share ``h_in``; sketched together (one input transform, one transform of their summed
    output sketches) they give the sum of each weight's ``S`` by the definition."""
    cs = CountSketch(k, 4)
    names = [f"m{i}.weight" for i in range(len(outs))]
    assert cs.share_input(names) == "m0.weight"
    x = _tensor(0, n, t, d_in).float()
    deltas = {name: _tensor(i + 1, n, t, d_out).float() for i, (name, d_out) in enumerate(zip(names, outs))}
    want = sum(cs.sketch_matrix(name, torch.einsum("ntr,ntc->nrc", d, x)) for name, d in deltas.items())
    got = cs.sketch_outer_shared(deltas, x, method=method)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * max(1.0, want.abs().max().item()))
    first = cs.tables("m0.weight", outs[0], d_in)[1].signed_index
    assert all(torch.equal(cs.tables(name, d.shape[-1], d_in)[1].signed_index, first) for name, d in deltas.items())


def test_a_shared_input_hash_keeps_inner_products_unbiased_and_as_accurate():
    """Shared, ``S`` of each layer is a block of the TensorSketch of the stacked matrix: still unbiased, and its error
    over 400 seeds is that of independent input hashes (within sampling noise)."""
    u = {"a.weight": _tensor(0, 1, 6, 20), "b.weight": _tensor(1, 1, 9, 20)}
    v = {name: 0.6 * g + 0.8 * _tensor(i + 2, *g.shape) for i, (name, g) in enumerate(u.items())}
    exact = sum((u[name] * v[name]).sum().item() for name in u)
    errors = {}
    for shared in (True, False):
        errs = []
        for seed in range(400):
            cs = CountSketch(32, seed)
            if shared:
                cs.share_input(list(u))
            su, sv = (sum(cs.sketch_matrix(name, g[name]) for name in g) for g in (u, v))
            errs.append((su * sv).sum().item() - exact)
        errs = torch.tensor(errs)
        assert abs(errs.mean().item()) < 4 * errs.std().item() / 400**0.5
        errors[shared] = errs.pow(2).mean().sqrt().item()
    assert 0.8 < errors[True] / errors[False] < 1.25


def test_input_sharing_is_declared_and_fixed():
    cs = CountSketch(16, 0)
    with pytest.raises(ValueError, match="share_input"):
        cs.sketch_outer_shared({"a.weight": torch.ones(1, 2, 3), "b.weight": torch.ones(1, 2, 3)}, torch.ones(1, 2, 4))
    cs.share_input(["q.weight", "k.weight"])
    assert cs.input_name("q.weight") == cs.input_name("k.weight") == "k.weight"
    assert cs.input_name("o.weight") == "o.weight"
    cs.share_input(["k.weight", "q.weight"])  # the same readers again: fine
    with pytest.raises(ValueError, match="same in every forward"):
        cs.share_input(["q.weight", "a.weight"])
