"""Summaries (ground truth per language) and atomic Parquet writing of the demo corpus."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..storage import Location
from .corpus import (
    COLUMNS,
    CONFLICT_KINDS,
    CORRUPTIONS,
    SCHEMA_VERSION,
    SPLITS,
    CorpusSpec,
    _rng,
    default_demo_spec,
    generate_pairs,
)
from .languages import DEMO_LANGUAGES

# ---------------------------------------------------------------------------------------------------------------
# summary and writing


def fingerprint(rows: Iterable[Mapping[str, Any]]) -> str:
    """sha256 of the rows' columns in a canonical order (independent of row order)."""
    lines = sorted(json.dumps([row[c] for c in COLUMNS], ensure_ascii=False) for row in rows)
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def summarize(spec: CorpusSpec, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Ground truth: counts per language, split and conflict kind, flipped fractions, and the rows' fingerprint."""
    languages: dict[str, Any] = {}
    for lang in spec.languages:
        info = DEMO_LANGUAGES[lang]
        entry: dict[str, Any] = {
            "name": info.name,
            "script": info.script,
            "role": "seen" if lang in spec.seen_languages else "unseen",
            "expected_conflict": (
                "systematic"
                if lang == spec.systematic_language
                else ("noisy_flip" if spec.flip_rate.get(lang, 0.0) > 0 else "none")
            ),
        }
        for split in SPLITS:
            mine = [r for r in rows if r["lang"] == lang and r["split"] == split]
            counts = {kind: sum(r["conflict"] == kind for r in mine) for kind in CONFLICT_KINDS}
            flipped = sum(bool(r["is_flipped"]) for r in mine)
            entry[split] = {
                "total": len(mine),
                **counts,
                "flipped": flipped,
                "flipped_fraction": flipped / len(mine) if mine else 0.0,
                "corruptions": {c: sum(r["corruption"] == c for r in mine) for c in CORRUPTIONS},
            }
        languages[lang] = entry
    return {
        "schema_version": SCHEMA_VERSION,
        "spec": spec.to_dict(),
        "columns": list(COLUMNS),
        "n_rows": len(rows),
        "n_train": sum(r["split"] == "train" for r in rows),
        "n_heldout": sum(r["split"] == "heldout" for r in rows),
        "n_flipped_train": sum(bool(r["is_flipped"]) for r in rows if r["split"] == "train"),
        "languages": languages,
        "fingerprint": fingerprint(rows),
    }


def arrow_schema() -> Any:
    import pyarrow as pa

    types = {"is_flipped": pa.bool_()}
    return pa.schema([pa.field(c, types.get(c, pa.string()), nullable=False) for c in COLUMNS])


def _write_shards(rows: Sequence[Mapping[str, Any]], directory: Path, shards: int) -> list[dict[str, Any]]:
    import pyarrow as pa

    directory.mkdir(parents=True, exist_ok=True)
    n_shards = max(1, min(shards, len(rows)))
    schema = arrow_schema()
    written = []
    for k in range(n_shards):
        lo, hi = k * len(rows) // n_shards, (k + 1) * len(rows) // n_shards
        chunk = rows[lo:hi]
        table = pa.Table.from_pydict({c: [r[c] for r in chunk] for c in COLUMNS}, schema=schema)
        path = directory / f"part-{k:05d}.parquet"
        Location.of(str(path)).write_table(table)
        written.append({"path": f"{directory.name}/{path.name}", "rows": len(chunk)})
    # Shards left over from an earlier write with more shards would otherwise be read as data.
    for stale in directory.glob("part-*.parquet"):
        index = stale.name[len("part-") : -len(".parquet")]
        if index.isdigit() and int(index) >= n_shards:
            stale.unlink()
    return written


def write_corpus(
    spec: CorpusSpec | None = None, out_dir: str | os.PathLike = "demo_data", shards: int = 4, heldout_shards: int = 1
) -> dict[str, Any]:
    """Write ``out_dir/train/part-*.parquet`` (train pairs of the seen languages, shuffled with the seed, then cut
    into ``shards`` contiguous shards), ``out_dir/heldout/part-*.parquet`` (clean held-out pairs of all languages)
    and, last, ``out_dir/ground_truth.json`` (``summarize``, plus the files written). Every file is written to a
    temporary name and renamed, so readers never see a partial file; ``ground_truth.json`` marks completion.
    Returns the summary."""
    spec = spec or default_demo_spec()
    if shards < 1 or heldout_shards < 1:
        raise ValueError("shards and heldout_shards must be >= 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = generate_pairs(spec)
    train = [r for r in rows if r["split"] == "train"]
    heldout = [r for r in rows if r["split"] == "heldout"]
    _rng(spec.seed, "shard-order").shuffle(train)
    summary = summarize(spec, rows)
    summary["files"] = {
        "train": _write_shards(train, out / "train", shards),
        "heldout": _write_shards(heldout, out / "heldout", heldout_shards),
    }
    text = json.dumps(summary, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
    Location.of(str(out / "ground_truth.json")).write_bytes(text.encode("utf-8"))
    return summary
