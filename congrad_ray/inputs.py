"""Input URIs the driver materialises before planning: ``demo://train`` and ``demo://heldout`` are the bundled demo
corpus (:mod:`congrad_ray.demo`), generated once per machine into the cache."""

from __future__ import annotations

from .models import cache_dir


def demo_path(split: str = "train", seed: int = 0) -> str:
    from .demo import default_demo_spec, write_corpus

    spec = default_demo_spec(seed)
    root = cache_dir() / "demo" / f"seed-{seed}"
    if not (root / "ground_truth.json").exists():
        write_corpus(spec, root)
    return str(root / split)


def materialize_inputs(paths: list[str] | None) -> list[str] | None:
    if not paths:
        return paths
    return [demo_path(p.removeprefix("demo://") or "train") if p.startswith("demo://") else p for p in paths]
