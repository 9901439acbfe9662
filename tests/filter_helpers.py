"""Helpers shared by the filter integration tests: a small corpus and a small, fast config."""

from __future__ import annotations

import glob
from pathlib import Path

import pyarrow.parquet as pq

from congrad_ray.config import load_filter_config
from congrad_ray.demo import CorpusSpec, write_corpus

TINY_MODEL = "tiny://llama?hidden_size=64&intermediate_size=128&num_attention_heads=2&num_key_value_heads=1"


def small_corpus(out: Path, shards: int = 3) -> Path:
    spec = CorpusSpec(
        seen_languages=("en", "fr", "de", "sw"),
        unseen_languages=("hi",),
        pairs_per_language=60,
        heldout_per_language=10,
        flip_rate={"de": 0.2},
        systematic_language="sw",
    )
    write_corpus(spec, out, shards=shards)
    return out / "train"


def small_config(inputs: list[str] | str, output: Path, *overrides: str):
    base = [
        f"model.name_or_path={TINY_MODEL}",
        "sketch.k=512",
        "sketch.buckets=4",
        "dpo.max_length=96",
        "input.rows_per_unit=50",
        "resources.batch_size=8",
        "resources.actors_max=2",
    ]
    return load_filter_config(None, [*base, *overrides], [inputs] if isinstance(inputs, str) else inputs, str(output))


def read_dir(path: Path):
    """All Parquet files of an output directory as one DataFrame (files may differ in schema, as invalid/ can)."""
    import pandas as pd

    files = sorted(glob.glob(str(path / "*.parquet")))
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True) if files else None


def outcome_ids(run: Path) -> dict[str, set[str]]:
    out = {}
    for name in ("kept", "dropped", "invalid"):
        df = read_dir(run / name)
        out[name] = set() if df is None else set(df["id"].dropna())
    return out
