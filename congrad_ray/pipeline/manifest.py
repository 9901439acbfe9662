"""``manifest.json``: counts per language per outcome, ground truth (when the input has it), config and its hash,
seeds, versions, git SHA, timings, and the input language codes that were canonicalised (``language_codes``: as
written -> canonical)."""

from __future__ import annotations

import subprocess
from collections import defaultdict
from importlib import metadata
from pathlib import Path
from typing import Any

from ..config import FilterConfig
from ..core import conflict_removal
from ..storage import Location

PACKAGES = ("congrad-ray", "torch", "ray", "transformers", "trl", "peft", "datasets", "pyarrow")


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_sha() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def count_outcomes(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals, per-language outcome counts and per-reason counts from the per-unit write records."""
    per_lang: dict[str, dict[str, int]] = defaultdict(lambda: {"kept": 0, "dropped": 0, "invalid": 0})
    reasons: dict[str, int] = defaultdict(int)
    totals = {"kept": 0, "dropped": 0, "invalid": 0}
    rows = 0
    for rec in records:
        rows += rec["rows"]
        for outcome, reason, lang, n in rec["counts"]:
            per_lang[lang or "(none)"][outcome] += n
            reasons[reason] += n
            totals[outcome] += n
    return {
        "input_rows": rows,
        "totals": totals,
        "per_language": {k: per_lang[k] for k in sorted(per_lang)},
        "reasons": dict(sorted(reasons.items())),
    }


def ground_truth(records: list[dict[str, Any]], column: str | None) -> dict[str, Any] | None:
    """Known conflicts dropped vs clean pairs dropped, per language (:func:`~congrad_ray.core.conflict_removal`), from
    the per-unit write records; None when the input carries no ground truth (or the records predate it)."""
    if column is None or any("truth" not in rec for rec in records):
        return None
    cells = [tuple(cell) for rec in records for cell in rec["truth"]]
    return {"column": column, "per_language": conflict_removal(cells)}


def build(
    cfg: FilterConfig,
    run: Location,
    counts: dict[str, Any],
    truth: dict[str, Any] | None,
    timings: dict[str, float],
    skipped: list[str],
    scores: dict[str, Any],
    language_codes: dict[str, str],
) -> dict[str, Any]:
    from ..ray_env import cluster_summary

    direction = run.join("direction", "direction.json")
    sketch = run.join("_state", "sketch.json")
    return {
        "run_dir": run.uri,
        "counts": counts,
        "ground_truth": truth,
        "language_codes": language_codes,
        "scores": scores,
        "direction": direction.read_json() if direction.exists() else None,
        "config": cfg.model_dump(mode="json"),
        "config_hash": cfg.config_hash(),
        "seeds": {"run": cfg.run.seed, "sketch": cfg.sketch.seed, "surgery": cfg.surgery.seed},
        "versions": package_versions(),
        "git_sha": git_sha(),
        "timings_s": timings,
        "resumed_stages": skipped,
        "sketch": sketch.read_json() if sketch.exists() else None,
        "cluster": cluster_summary(),
        "outputs": {
            **{name: run.join(name).uri for name in ("kept", "dropped", "invalid", "report")},
            "sketches": run.join("sketches").uri if run.join("sketches").exists() else None,  # run.keep_sketches
        },
    }
