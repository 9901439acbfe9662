"""The route cost model of :meth:`CountSketch.sketch_outer` against the clock, and where the FFT route's time goes.

* ``route_model_regret_k{k}_t{T}``: over a grid of layer shapes (64 x 64 to 2048 x 2048), both exact routes
  are timed side by side on the same per-sample factors (``N`` samples of ``T`` tokens); the figure is the summed
  time of the route the cost model picks (``route="auto"``) over the summed time of the faster route for each shape.
  1.0 means the model always picks the faster one. Goal ``<= 1.1``. The sum weighs shapes by their time, as a pass
  does; the worst single shape's ratio is in the details.
* ``fft_batch_spill_ratio_k{k}``: microseconds per ``k``-point real FFT when 1,024 rows are transformed at once (the
  spectra spill out of cache) over 128 rows at a time (what the FFT route does): why the route works in chunks.
* ``fft_route_share_rfft_k{k}``: the share of the FFT route's time spent in the forward FFTs themselves on a
  512 x 512 layer: what no rewrite of the route can remove (two ``k``-point transforms per token and layer).

One CPU thread, like the peers group. Per-route times are medians of interleaved rounds.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator
from typing import Any

from ._common import figure, setup_torch
from .peers import timed_rounds

GROUP = "routes"
SHAPES = ((64, 64), (256, 256), (512, 512), (1376, 512), (512, 1376), (1024, 1024), (2752, 1024), (2048, 2048))
QUICK_SHAPES = ((64, 64), (256, 256), (512, 512))


def medians(fns: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """Median seconds per call of each function (:func:`peers.timed_rounds`: one warm-up each, rounds interleaved)."""
    return {name: statistics.median(ts) for name, ts in timed_rounds(fns, (), rounds).items()}


def run(quick: bool) -> Iterator[dict[str, Any]]:
    import torch

    env = {**setup_torch(), "quick": quick}
    torch.set_num_threads(1)
    env["threads"] = 1
    rounds = 1 if quick else 3
    for k, tokens in ((1024, 32),) if quick else ((4096, 128), (4096, 256), (1024, 128)):
        yield regret_figure(k, tokens, QUICK_SHAPES if quick else SHAPES, rounds, env)
    yield from fft_figures(1024 if quick else 4096, rounds, env)


def regret_figure(k: int, tokens: int, shapes: tuple, rounds: int, env: dict) -> dict[str, Any]:
    import torch

    from congrad_ray.core import CountSketch

    cs = CountSketch(k, seed=0)
    samples = max(1, 1024 // tokens)
    gen = torch.Generator().manual_seed(0)
    rows, picked_total, best_total, worst = {}, 0.0, 0.0, 1.0
    for d_out, d_in in shapes:
        delta = torch.randn(samples, tokens, d_out, generator=gen)
        x = torch.randn(samples, tokens, d_in, generator=gen)
        routes = ("fft", "explicit")
        t = medians({r: (lambda r=r, d=delta, x=x: cs.sketch_outer("w", d, x, method=r)) for r in routes}, rounds)
        pick = cs.outer_method(tokens, d_out, d_in)
        picked_total += t[pick]
        best_total += min(t.values())
        worst = max(worst, t[pick] / min(t.values()))
        rows[f"{d_out}x{d_in}"] = {
            "fft_ms": round(t["fft"] * 1e3, 2),
            "explicit_ms": round(t["explicit"] * 1e3, 2),
            "model_picks": pick,
            "faster": min(t, key=t.get),
        }
    return figure(
        f"route_model_regret_k{k}_t{tokens}",
        "ratio",
        picked_total / best_total,
        "<= 1.1",
        {
            **env,
            "k": k,
            "tokens": tokens,
            "samples": samples,
            "rounds": rounds,
            "shapes": rows,
            "worst_shape_regret": round(worst, 3),
            "ratio_is": "sum over shapes of the time of the route the cost model picks / of the faster route",
        },
        GROUP,
    )


def fft_figures(k: int, rounds: int, env: dict) -> Iterator[dict[str, Any]]:
    import torch

    from congrad_ray.core import CountSketch

    gen = torch.Generator().manual_seed(1)
    spilled = torch.randn(1024, k, generator=gen)
    chunks = spilled.split(128)

    def whole() -> None:
        torch.fft.rfft(spilled)

    def chunked() -> None:
        for chunk in chunks:
            torch.fft.rfft(chunk)

    t = medians({"whole": whole, "chunked": chunked}, max(rounds, 3))
    us = {name: round(v / 1024 * 1e6, 2) for name, v in t.items()}
    yield figure(
        f"fft_batch_spill_ratio_k{k}",
        "ratio",
        t["whole"] / t["chunked"],
        None,
        {**env, "k": k, "us_per_transform": us, "ratio_is": "1,024 rows at once / 128 rows at a time"},
        GROUP,
    )

    cs = CountSketch(k, seed=0, route="fft")
    delta, x = torch.randn(8, 128, 512, generator=gen), torch.randn(8, 128, 512, generator=gen)
    route = medians({"route": lambda: cs.sketch_outer("w", delta, x)}, max(rounds, 3))["route"]
    transforms = 2 * 8 * 128 * us["chunked"] * 1e-6
    yield figure(
        f"fft_route_share_rfft_k{k}",
        "ratio",
        transforms / route,
        None,
        {
            **env,
            "k": k,
            "layer": "512x512",
            "route_ms": round(route * 1e3, 2),
            "rfft_ms": round(transforms * 1e3, 2),
            "ratio_is": "time of the route's 2 N T forward FFTs (measured per transform) / the route's time",
        },
        GROUP,
    )
