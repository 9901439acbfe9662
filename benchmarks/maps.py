"""Which count-sketch hash family could a sketch pass use? Accuracy of each, applied by its definition.

The sketch pass can only reach the activation-only floor if its own work per token and layer is a small fraction of
the layer's ``d_out d_in`` multiply-adds. Exact routes of the TensorSketch (``S``) cost two ``k``-point FFTs per
token and layer, or a weight-gradient-sized GEMM plus a scatter (see the ``routes`` and ``peers`` groups); hash
families with more structure have cheap routes (a small GEMM on sketched factors) but a different accuracy. This
group measures that accuracy on the peers benchmark's model and batches, with every family applied by its definition
to the exact per-sample gradients (bs=1 loop), so no fast route is involved:

* ``independent``: an independent bucket and sign per weight entry (the textbook count sketch; no fast route);
* ``tensor``: the TensorSketch ``h(r, c) = h_out(r) + h_in(c) mod k``, signs ``s_out(r) s_in(c)``, every layer
  hashed on its own;
* ``engine``: congrad-ray's ``S`` itself (:meth:`CountSketch.sketch_matrix` with the layers sharing an input
  declared as the sketch pass declares them: the same TensorSketch, with one ``h_in`` per input): two FFTs per token
  for each input, not for each layer (its route work is per layer of a q/k/v group);
* ``tensor_q{q}``: the same with ``h_in`` taking only ``q`` values (``h_in = g o h_q``): its fast route is one GEMM
  of ``d_out x q`` per token (``delta^T CS_q(x)``) and a small scatter;
* ``kronecker_p{p}``: ``C_out G C_in^T`` with ``p x p`` count sketches, then an independent count sketch to ``k``
  (bergson's two-sided projection, with count sketches and one shared output): one ``p x p`` GEMM per token.

Figures ``map_rmse_vs_dense_jl_h{H}_{family}``: cosine RMSE (pairwise cosines of the per-sample gradients against
exact) on the shared-prefix batch over that of the dense Gaussian JL projection of the same ``k``, averaged over
seeds (its standard error in the details, with the random batch's figures and the work of each family's cheapest
route per token on a 512 x 512 layer relative to the floor's ``2 d_out d_in``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

from ._common import figure, setup_torch
from .peers import QUICK, Setting, batches, build, dense_jl_rmse, pair_cosines

GROUP = "maps"
FULL = (Setting(512, 1376, 4, 8, 8, 128, 4096, 0, 24),)
Family = Callable[[Any, int, int, int], tuple[Any, Any]]  # (generator, R, C, k) -> (bucket [R, C], sign [R, C])


def _ints(gen: Any, n: int, high: int) -> Any:
    import torch

    return torch.randint(0, high, (n,), generator=gen)


def _signs(gen: Any, n: int) -> Any:
    return _ints(gen, n, 2).float() * 2 - 1


def independent(gen: Any, rows: int, cols: int, k: int) -> tuple[Any, Any]:
    return _ints(gen, rows * cols, k).view(rows, cols), _signs(gen, rows * cols).view(rows, cols)


def tensor(q: int | None = None) -> Family:
    def family(gen: Any, rows: int, cols: int, k: int) -> tuple[Any, Any]:
        h_out, s_out = _ints(gen, rows, k), _signs(gen, rows)
        if q is None or cols <= q or rows == 1:
            h_in, s_in = _ints(gen, cols, k), _signs(gen, cols)
        else:
            h_q, g, s_g = _ints(gen, cols, q), _ints(gen, q, k), _signs(gen, q)
            h_in, s_in = g[h_q], _signs(gen, cols) * s_g[h_q]
        return (h_out[:, None] + h_in[None]) % k, s_out[:, None] * s_in[None]

    return family


def kronecker(p: int) -> Family:
    def family(gen: Any, rows: int, cols: int, k: int) -> tuple[Any, Any]:
        p_out, p_in = min(p, rows), min(p, cols)
        cell = _ints(gen, rows, p_out)[:, None] * p_in + _ints(gen, cols, p_in)[None]
        bucket, sign = _ints(gen, p_out * p_in, k), _signs(gen, p_out * p_in)
        return bucket[cell], _signs(gen, rows)[:, None] * _signs(gen, cols)[None] * sign[cell]

    return family


# Work per token of each family's cheapest route on a d_out x d_in layer at width k and T tokens per sample, in the
# cost model's units (GEMM multiply-adds; a count-sketched element costs 45, a k log2 k unit of FFT work 12), to
# compare with the floor's 2 d_out d_in: the explicit route (GEMM + scatter), the FFT route, a dense +-1 projection of
# x to q columns and a d_out x q GEMM, two count sketches and a p x p GEMM.
FAMILIES: dict[str, tuple[Family, Callable[[int, int, int, int], float]]] = {
    "independent": (independent, lambda d_out, d_in, k, t: d_out * d_in * (1 + 40 / t)),
    "tensor": (tensor(), lambda d_out, d_in, k, t: 12 * k * math.log2(k) + 45 * (d_out + d_in)),
    **{f"tensor_q{q}": (tensor(q), lambda d_out, d_in, k, t, q=q: q * (d_out + d_in)) for q in (16, 32, 128)},
    **{
        f"kronecker_p{p}": (kronecker(p), lambda d_out, d_in, k, t, p=p: p * p + 45 * (d_out + d_in)) for p in (64, 128)
    },
}


# The engine's FFT route on a layer of a group of 3 sharing an input (a block's q/k/v): a third of the group's two
# transforms per token, its own output sketch and a third of the input's.
ENGINE_WORK = lambda d_out, d_in, k, t: (12 * k * math.log2(k) + 45 * (3 * d_out + d_in)) / 3  # noqa: E731


def run(quick: bool) -> Iterator[dict[str, Any]]:
    env = {**setup_torch(), "quick": quick}
    for setting in QUICK if quick else FULL:
        yield from setting_figures(setting, env, quick)


def engine_sketched(grads: dict[str, Any], shared: list[list[str]], k: int, seed: int) -> Any:
    """``[N, k]``: the engine's ``S`` with seed ``seed`` applied by its definition to ``grads`` (``{parameter name:
    [N, R, C]}``), the ``shared`` weight names declared as reading one input each."""
    from congrad_ray.core import CountSketch

    cs = CountSketch(k, seed)
    for names in shared:
        cs.share_input(names)
    return sum(cs.sketch_matrix(name, g) for name, g in grads.items())


def shared_inputs(model: Any, linears: dict, ids: Any, mask: Any) -> list[list[str]]:
    """The weight names that read one input, as the sketch pass finds them (from one forward of the slow twin)."""
    from congrad_ray.core import CountSketch, sequence_gradients_loop

    probe = CountSketch(2, 0)
    sequence_gradients_loop(model, ids[:1], mask[:1], linears, probe)
    groups: dict[str, list[str]] = {}
    for name in linears:
        groups.setdefault(probe.input_name(f"{name}.weight"), []).append(f"{name}.weight")
    return list(groups.values())


def family_sketch(name: str, grads: dict[str, Any], shared: list[list[str]], k: int, seed: int) -> Any:
    """``[N, k]``: the family ``name`` of :data:`FAMILIES`, or ``"engine"``, applied to ``grads`` with ``seed``."""
    if name == "engine":
        return engine_sketched(grads, shared, k, seed)
    return sketched(grads, FAMILIES[name][0], k, seed)


def sketched(grads: dict[str, Any], family: Family, k: int, seed: int) -> Any:
    """``[N, k]``: every parameter's per-sample gradient ``[N, R, C]`` hashed by ``family`` (seeded per parameter)."""
    import torch

    n = next(iter(grads.values())).shape[0]
    acc = torch.zeros(n, 2 * k, dtype=torch.float64)
    for i, g in enumerate(grads.values()):
        bucket, sign = family(torch.Generator().manual_seed(seed * 1000 + i), g.shape[1], g.shape[2], k)
        acc.index_add_(1, (bucket + k * (sign < 0)).view(-1), g.reshape(n, -1))
    return acc[:, :k] - acc[:, k:]


def setting_figures(setting: Setting, env: dict, quick: bool) -> Iterator[dict[str, Any]]:
    from congrad_ray.core import sequence_gradients_loop

    model, linears, info = build(setting)
    model.requires_grad_(False)
    families = dict(list(FAMILIES.items())[:3]) if quick else FAMILIES
    rmse: dict[str, dict[str, tuple[float, float]]] = {}
    for label, (ids, mask) in batches(model.config.vocab_size, setting).items():
        grads = {
            name: (g.unsqueeze(1) if g.dim() == 2 else g.flatten(2)).double()
            for name, g in sequence_gradients_loop(model, ids, mask, linears).items()
        }
        shared = shared_inputs(model, linears, ids, mask)
        gram = sum(g.flatten(1) @ g.flatten(1).T for g in grads.values())
        exact = pair_cosines(gram)
        rmse.setdefault("dense_jl", {})[label] = (dense_jl_rmse(gram, setting.k, 64), 0.0)
        for name in [*families, "engine"]:
            per_seed = [
                (pair_cosines(s @ s.T) - exact).pow(2).mean().item()
                for s in (family_sketch(name, grads, shared, setting.k, seed) for seed in range(setting.seeds))
            ]
            mean = sum(per_seed) / len(per_seed)
            spread = (sum((v - mean) ** 2 for v in per_seed) / max(len(per_seed) - 1, 1)) ** 0.5
            # RMSE and its standard error (delta method on the mean squared error)
            rmse.setdefault(name, {})[label] = (
                math.sqrt(mean),
                spread / math.sqrt(len(per_seed)) / 2 / math.sqrt(mean),
            )
        del grads
    layer = (512, 512)
    works = {name: work for name, (_, work) in families.items()} | {"engine": ENGINE_WORK}
    for name, extra in works.items():
        dense = rmse["dense_jl"]["shared_prefix"][0]
        value, stderr = rmse[name]["shared_prefix"]
        yield figure(
            f"map_rmse_vs_dense_jl_h{setting.hidden}_{name}",
            "ratio",
            value / dense,
            None,
            {
                **env,
                **info,
                "k": setting.k,
                "seeds": setting.seeds,
                "rmse": {label: float(f"{v[0]:.4g}") for label, v in rmse[name].items()},
                "rmse_stderr": {label: float(f"{v[1]:.2g}") for label, v in rmse[name].items()},
                "dense_jl_rmse": {label: float(f"{v[0]:.4g}") for label, v in rmse["dense_jl"].items()},
                "route_work_vs_floor_512x512": round(
                    extra(*layer, setting.k, setting.tokens) / (2 * layer[0] * layer[1]), 3
                ),
                "ratio_is": "family cosine RMSE / dense Gaussian JL RMSE at equal k, shared-prefix batch",
                "stderr_of_ratio": round(stderr / dense, 3),
            },
            GROUP,
        )
