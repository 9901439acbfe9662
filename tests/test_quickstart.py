"""The README's Quick start: the first command's job, exactly as documented, into a temporary run directory."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]


def quickstart_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, flags=re.S)


def test_readme_opens_with_two_quick_start_commands():
    commands = quickstart_commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    assert commands[0].endswith(".venv/bin/python jobs/congrad.py")
    assert commands[1].endswith(".venv/bin/python -m pytest")
    assert (ROOT / ".ci" / "run").read_text().count(".venv/bin/python -m pytest") == 1


def test_main_job_filters_trains_and_evaluates_the_demo(tmp_path):
    job = quickstart_commands()[0].rsplit(".venv/bin/python ", 1)[1].split()
    result = subprocess.run(
        [sys.executable, *job, "--output", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=1200
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "report:" in out and "summary.html" in out and "[unseen]" in out
    manifest = json.loads((tmp_path / "filter" / "manifest.json").read_text())
    assert manifest["counts"]["input_rows"] == 3200 and manifest["counts"]["totals"]["kept"] == 1600
    metrics = json.loads((tmp_path / "train" / "metrics.json").read_text())
    assert metrics["training"]["global_step"] > 0
    assert {"seen", "unseen"} <= set(metrics["eval"]["final"]["groups"])
