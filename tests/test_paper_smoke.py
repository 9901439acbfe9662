"""Smoke test of the paper benchmark: ``python -m benchmarks.paper --setting small --quick`` runs end to end (corpus,
round-0 SFT, sketch pass, re-selection, margin baseline, DPO on two arms, measures) and writes its results files.
Nothing here asserts on which arm wins."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(300)
def test_small_quick_writes_results(tmp_path):
    out, results = tmp_path / "work", tmp_path / "results"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.paper",
            "--setting",
            "small",
            "--quick",
            "--out",
            str(out),
            "--results",
            str(results),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    names = {p.name for p in results.iterdir()}
    assert {"results.json", "results.md", "accuracy.png", "cost.png", "per_language.png"} <= names
    summary = json.loads((results / "results.json").read_text())
    assert summary["quick"] is True and len(summary["seeds"]) == 1
    arms = summary["config"]["arms"]
    for arm in arms:
        g = summary["aggregate"]["arms"][arm]
        assert 0.0 <= g["seen_accuracy"]["mean"] <= 1.0 and g["conflict_kept"]["n"] == 1
    seed = summary["seeds"][0]
    assert set(seed["train"]) == set(arms)
    assert set(seed["lm_before"]) == set(summary["config"]["corpus"]["seen"]) | set(
        summary["config"]["corpus"]["unseen"]
    )
    text = (results / "results.md").read_text()
    assert "## Main results" in text and "## Cost" in text
