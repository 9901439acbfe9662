"""The README's Quick start: the first command's job, exactly as documented, into a temporary run directory, and
the screen it prints: short, no error lines, ground truth, one final line per held-out language."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.browser import inspect_page

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
NOISE = re.compile(r"\b(ERROR|WARNING|Traceback)\b|\bE \d+ \d+\]|core_worker\.cc|Failed to query")


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
    screen = result.stdout.splitlines()
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    # about 58 lines; a slower machine prints more of the periodic progress lines (one per 30 s without a TTY)
    assert result.stderr == "" and len(screen) < 62, result.stdout
    assert not [line for line in screen if NOISE.search(line)], result.stdout
    manifest = json.loads((tmp_path / "filter" / "manifest.json").read_text())
    assert manifest["counts"]["input_rows"] == 3200 and manifest["counts"]["totals"]["kept"] == 1600
    # ground truth: the demo's planted conflicts (15 % of de and ru flipped, all of sw), and how many were dropped
    truth = manifest["ground_truth"]["per_language"]
    assert manifest["ground_truth"]["column"] == "is_flipped"
    assert (truth["de"]["conflicts"], truth["ru"]["conflicts"], truth["sw"]["conflicts"]) == (60, 60, 400)
    total = truth["total"]
    assert f"dropped {total['conflicts_dropped']:,} of the {total['conflicts']:,} known conflicting pairs" in (
        " ".join(screen)
    )
    metrics = json.loads((tmp_path / "train" / "metrics.json").read_text())
    assert metrics["training"]["global_step"] > 0
    final = metrics["eval"]["final"]
    assert {"seen", "unseen"} <= set(final["groups"]) and set(final["preference"]) == {"before", "after"}
    # the screen ends with one line per held-out language: seen/unseen, kept fraction, accuracy before -> after
    for lang in final["per_language"]:
        before = final["preference"]["before"]["per_language"][lang]["accuracy"]
        after = final["preference"]["after"]["per_language"][lang]["accuracy"]
        role = "seen" if lang in metrics["languages"]["seen"] else "unseen"
        line = next(x for x in screen if x.split()[:2] == [lang, role])
        assert f"{before:.2f} → {after:.2f}" in line, line
        kept = manifest["counts"]["per_language"].get(lang)
        assert (f"{kept['kept']:,}/" if kept else "–") in line, line
    assert (tmp_path / "logs" / "run.log").stat().st_size > 0
    # the report as a browser renders it: images load, the counts are on the page
    page = inspect_page(tmp_path / "filter" / "report" / "summary.html", tmp_path / "browser")
    assert page["images"] and all(i["width"] > 0 for i in page["images"])
    assert "known conflicting pairs" in page["text"] and "3,200" in page["text"]
