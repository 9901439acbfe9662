"""The sketch pass against the closest peer, EleutherAI's bergson, side by side in one process.

Same model, batch, loss (each sequence's summed next-token NLL) and layers (every decoder linear) for every
contestant; rounds interleaved (a, b, c, a, b, c, ...), median and spread per contestant:

* ``train_step``: forward + ``loss.sum().backward()`` with weight gradients (what a training step costs);
* ``floor``: forward + the activation-only backward (``autograd.grad`` to the embedding output), no hooks: what any
  hook-based per-sample method pays before it does its own work;
* ``bergson_p16`` / ``bergson_p12``: bergson's collector with its default two-sided per-module random projection
  (``p x p`` per module), the way bergson runs it (frozen weights, embeddings requiring grad, ``.backward()``);
* ``congrad_auto`` / ``congrad_fft`` / ``congrad_explicit``: :func:`congrad_ray.core.sketch_sequence_gradients`,
  one count sketch of width ``k`` over all layers, on each route.

Fidelity is the RMSE of the pairwise cosines between the samples' compressed gradients against the exact ones (a
bs=1 backward loop), on a batch of random tokens and on one whose sequences share a long prefix (correlated
gradients, the regime that matters for conflicts), next to the dense Gaussian JL projection of the same width
(exact in distribution through the samples' Gram matrix: a ``k x d`` matrix is never formed). Peak memory is the
rise of the process's resident peak (``VmHWM``, reset through ``/proc/self/clear_refs``) over one call.

Without bergson installed (it is not a dependency: see the README's Benchmarks section for the recipe) its
contestants are skipped with a line saying so and the congrad-ray figures are still measured.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ._common import figure, llama_spec, ms, setup_torch

GROUP = "peers"
BERGSON_RECIPE = (
    "pip install --no-deps bergson==2.5.1 && pip install jaxtyping ml_dtypes natsort petname scipy simple-parsing"
)


@dataclass(frozen=True)
class Setting:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    sequences: int
    tokens: int
    k: int
    rounds: int
    seeds: int


FULL = (
    Setting(512, 1376, 4, 8, 8, 128, 4096, 7, 8),
    Setting(1024, 2752, 4, 16, 8, 128, 4096, 5, 8),
    Setting(2048, 5504, 2, 32, 8, 128, 4096, 5, 8),  # 2 layers: the exact per-sample gradients take 3.2 GB here
)
QUICK = (Setting(128, 344, 2, 2, 4, 32, 1024, 2, 1),)
PROJECTIONS = (16, 12)


def run(quick: bool) -> Iterator[dict[str, Any]]:
    import torch

    env = setup_torch()
    threads = env["threads"]
    torch.set_num_threads(1)  # the peers comparison is per CPU thread; the loop ratio is reported with both
    env = {**env, "threads": 1, "quick": quick}
    try:
        import bergson  # noqa: F401
    except ImportError:
        bergson_ok = False
        print(f"peers: bergson is not installed, its contestants are skipped ({BERGSON_RECIPE})", file=sys.stderr)
    else:
        bergson_ok = True
    for setting in QUICK if quick else FULL:
        yield from setting_figures(setting, env, bergson_ok, threads)


def build(setting: Setting) -> tuple[Any, Any, dict[str, Any]]:
    from congrad_ray.core import scoped_linears
    from congrad_ray.models import build_tiny_model, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    spec = llama_spec(setting.hidden, setting.intermediate, setting.layers, setting.heads, seed=1)
    model = build_tiny_model(tokenizer, spec).eval()
    linears = scoped_linears(model, "linear")
    info = {
        "model": f"llama hidden={setting.hidden} intermediate={setting.intermediate} layers={setting.layers} "
        f"vocab={len(tokenizer)}",
        "scoped_linears": len(linears),
        "per_sample_dim": sum(m.weight.numel() for m in linears.values()),
        "batch": f"{setting.sequences} sequences x {setting.tokens} tokens",
        "loss": "summed next-token NLL per sequence",
    }
    return model, linears, info


def batches(vocab: int, setting: Setting) -> dict[str, tuple[Any, Any]]:
    """``{"random": (ids, mask), "shared_prefix": (ids, mask)}``: the second shares its first 3/4 of tokens."""
    import torch

    gen = torch.Generator().manual_seed(0)
    n, t = setting.sequences, setting.tokens
    random_ids = torch.randint(3, vocab, (n, t), generator=gen)
    prefix = torch.randint(3, vocab, (1, 3 * t // 4), generator=gen).expand(n, -1)
    shared = torch.cat([prefix, torch.randint(3, vocab, (n, t - prefix.shape[1]), generator=gen)], dim=1)
    mask = torch.ones(n, t, dtype=torch.long)
    return {"random": (random_ids, mask), "shared_prefix": (shared, mask)}


def contestants(model: Any, linears: dict, setting: Setting, bergson_ok: bool) -> dict[str, Callable]:
    """Each contestant: ``(ids, mask, seed) -> [N, dims]`` compressed per-sample gradients (``None`` for timing-only
    ones)."""
    import torch

    from congrad_ray.core import CountSketch, sketch_sequence_gradients, token_nll

    def train_step(ids, mask, seed):
        model.requires_grad_(True)
        token_nll(model, ids, mask)[0].sum().backward()
        model.zero_grad(set_to_none=True)

    def floor(ids, mask, seed):
        model.requires_grad_(False)
        leaves = []

        def leaf(module, inputs, output):
            leaves.append(output.detach().requires_grad_(True))
            return leaves[-1]

        handle = model.get_input_embeddings().register_forward_hook(leaf)
        try:
            with torch.enable_grad():
                torch.autograd.grad(token_nll(model, ids, mask)[0].sum(), leaves)
        finally:
            handle.remove()

    def congrad(route: str) -> Callable:
        sketches: dict[int, CountSketch] = {}

        def fn(ids, mask, seed):
            model.requires_grad_(False)
            cs = sketches.setdefault(seed, CountSketch(setting.k, seed=seed, route=route))
            return sketch_sequence_gradients(model, ids, mask, linears, cs)[0]

        return fn

    out = {"train_step": train_step, "floor": floor}
    if bergson_ok:
        for p in PROJECTIONS:
            out[f"bergson_p{p}"] = bergson_contestant(model, linears, p)
    out.update({f"congrad_{r}": congrad(r) for r in ("auto", "fft", "explicit")})
    return out


def bergson_contestant(model: Any, linears: dict, p: int) -> Callable:
    """bergson's per-module two-sided projection (``TraceCollector``: per-sample gradients kept in memory, no index
    written), run as bergson's own loop runs it."""
    import torch
    from bergson.collector.gradient_collectors import TraceCollector
    from bergson.gradients import GradientProcessor

    from congrad_ray.core import token_nll

    collectors: dict[int, Any] = {}

    def fn(ids, mask, seed):
        model.requires_grad_(False)
        model.get_input_embeddings().requires_grad_(True)  # bergson's own setup (worker_utils)
        if seed not in collectors:
            processor = GradientProcessor(
                projection_dim=p, projection_type="rademacher", projection_target="per_module", projection_seed=seed
            )
            collectors[seed] = TraceCollector(
                model=model, processor=processor, target_modules=set(linears), device="cpu", dtype=torch.float32
            )
        collector = collectors[seed]
        with collector:
            token_nll(model, ids, mask)[0].sum().backward()
        model.zero_grad(set_to_none=True)
        grads = torch.cat([collector.mod_grads[name][-1] for name in linears], dim=1)
        collector.mod_grads.clear()
        return grads

    return fn


def timed_rounds(fns: dict[str, Callable], args: tuple, rounds: int) -> dict[str, list[float]]:
    """Every function warmed up once, then ``rounds`` interleaved timed calls each."""
    import gc

    for fn in fns.values():
        fn(*args)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            gc.collect()
            start = time.perf_counter()
            fn(*args)
            times[name].append(time.perf_counter() - start)
    return times


def peak_rise_mib(fn: Callable, args: tuple) -> float | None:
    """How far one call raises the process's resident peak above its resident size before it, in MiB."""
    import gc

    def status(key: str) -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key))

    try:
        gc.collect()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident size
        before = status("VmRSS:")
        fn(*args)
        return round((status("VmHWM:") - before) / 1024, 1)
    except OSError:
        return None


def gram_exact(model: Any, ids: Any, mask: Any, linears: dict) -> Any:
    """The samples' exact gradient Gram matrix ``[N, N]`` (float64) from a bs=1 backward loop."""
    from congrad_ray.core import sequence_gradients_loop

    model.requires_grad_(False)
    grads = sequence_gradients_loop(model, ids, mask, linears)
    return sum(g.flatten(1).double() @ g.flatten(1).double().T for g in grads.values())


def pair_cosines(gram: Any) -> Any:
    import torch

    norm = gram.diagonal().sqrt()
    cos = gram / norm[:, None] / norm[None, :]
    i, j = torch.triu_indices(gram.shape[0], gram.shape[0], offset=1)
    return cos[i, j]


def dense_jl_rmse(gram: Any, k: int, seeds: int) -> float:
    """Cosine RMSE of a dense ``k x d`` Gaussian projection: ``G = R^T R`` (Cholesky), so ``P g_n`` has the law of
    ``Z r_n`` with ``Z`` a ``k x N`` Gaussian; exact in distribution, without a ``k x d`` matrix."""
    import torch

    exact = pair_cosines(gram)
    jitter = 1e-12 * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=gram.dtype)
    r = torch.linalg.cholesky(gram + jitter).T  # [N, N], columns r_n
    errs = []
    for seed in range(seeds):
        z = torch.randn(k, gram.shape[0], generator=torch.Generator().manual_seed(seed), dtype=gram.dtype)
        projected = z @ r
        errs.append(pair_cosines(projected.T @ projected) - exact)
    return torch.cat(errs).pow(2).mean().sqrt().item()


def setting_figures(setting: Setting, env: dict, bergson_ok: bool, all_threads: int) -> Iterator[dict[str, Any]]:
    import torch

    model, linears, info = build(setting)
    data = batches(model.config.vocab_size, setting)
    fns = contestants(model, linears, setting, bergson_ok)
    ids, mask = data["random"]
    times = timed_rounds(fns, (ids, mask, 0), setting.rounds)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    memory = {name: peak_rise_mib(fn, (ids, mask, 0)) for name, fn in fns.items()}

    rmse: dict[str, dict[str, float]] = {}
    for label, (b_ids, b_mask) in data.items():
        gram = gram_exact(model, b_ids, b_mask, linears)
        exact = pair_cosines(gram)
        for name, fn in fns.items():
            if name in ("train_step", "floor") or name in ("congrad_fft", "congrad_explicit"):
                continue  # no output / the same sketch as congrad_auto (twins, up to float rounding)
            errs = []
            for seed in range(setting.seeds):
                out = fn(b_ids, b_mask, seed).double()
                errs.append(pair_cosines(out @ out.T) - exact)
            rmse.setdefault(name, {})[label] = torch.cat(errs).pow(2).mean().sqrt().item()
        rmse.setdefault("dense_jl", {})[label] = dense_jl_rmse(gram, setting.k, max(setting.seeds, 8))

    tag = f"h{setting.hidden}"
    base = {**info, "k": setting.k, "rounds": setting.rounds, "fidelity_seeds": setting.seeds, **env}
    dims = {f"bergson_p{p}": len(linears) * p * p for p in PROJECTIONS} | {
        f"congrad_{r}": setting.k for r in ("auto", "fft", "explicit")
    }
    table = {
        name: {
            "median_ms": ms(med[name]),
            "spread_ms": [ms(min(times[name])), ms(max(times[name]))],
            "vs_train_step": round(med[name] / med["train_step"], 3),
            "vs_floor": round(med[name] / med["floor"], 3),
            "peak_rise_mib": memory[name],
            "dims": dims.get(name),
            "cosine_rmse": {k: float(f"{v:.3g}") for k, v in rmse.get(name, rmse.get("congrad_auto", {})).items()}
            if name.startswith(("bergson", "congrad"))
            else None,
        }
        for name in fns
    }
    table["dense_jl"] = {"dims": setting.k, "cosine_rmse": {k: float(f"{v:.3g}") for k, v in rmse["dense_jl"].items()}}
    yield figure(f"peers_table_{tag}", "contestants", len(fns), None, {**base, "table": table}, GROUP)

    sketch = med["congrad_auto"]
    yield figure(
        f"sketch_pass_vs_floor_{tag}",
        "ratio",
        sketch / med["floor"],
        "<= 1.05",
        {**base, "ratio_is": "congrad_auto median / floor median (activation-only backward, no hooks)"},
        GROUP,
    )
    worst = max(rmse["congrad_auto"][label] / rmse["dense_jl"][label] for label in data)
    yield figure(
        f"sketch_rmse_vs_dense_jl_{tag}",
        "ratio",
        worst,
        "<= 1.0",
        {**base, "ratio_is": "max over the two batches of congrad cosine RMSE / dense Gaussian JL RMSE at equal k"},
        GROUP,
    )
    if bergson_ok:
        fastest = min(PROJECTIONS, key=lambda p: med[f"bergson_p{p}"])
        yield figure(
            f"sketch_pass_vs_bergson_{tag}",
            "ratio",
            sketch / med[f"bergson_p{fastest}"],
            "<= 1.0",
            {**base, "ratio_is": f"congrad_auto median / bergson_p{fastest} median (its faster setting)"},
            GROUP,
        )
    yield from loop_figures(model, linears, setting, ids, mask, base, tag, all_threads)


def loop_figures(model, linears, setting, ids, mask, base, tag, all_threads) -> Iterator[dict[str, Any]]:
    """The bs=1 loop (one backward per sample, then the explicit sketch) against the batched pass, on one thread and
    on every thread: batching buys little on one thread, the speedup is mostly the loop's materialised gradients."""
    import torch

    from congrad_ray.core import CountSketch, sketch_sequence_gradients, sketch_sequence_gradients_loop

    cs = CountSketch(setting.k, seed=0)
    model.requires_grad_(False)
    fns = {
        "loop": lambda: sketch_sequence_gradients_loop(model, ids, mask, linears, cs),
        "sketch_pass": lambda: sketch_sequence_gradients(model, ids, mask, linears, cs),
    }
    for threads in sorted({1, all_threads}):
        torch.set_num_threads(threads)
        t = timed_rounds({n: (lambda f=f: f()) for n, f in fns.items()}, (), max(2, setting.rounds // 2))
        loop, fast = statistics.median(t["loop"]), statistics.median(t["sketch_pass"])
        yield figure(
            f"sketch_pass_vs_loop_{tag}_threads{threads}",
            "speedup",
            loop / fast,
            None,
            {**base, "threads": threads, "loop_ms": ms(loop), "sketch_pass_ms": ms(fast)},
            GROUP,
        )
    torch.set_num_threads(1)
