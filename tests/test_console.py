"""The console without Ray: output capture at the file-descriptor level, plain progress lines from probes of
completion records, the plan rendering, and the filter's probes on a run directory."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import time

import pyarrow as pa

from congrad_ray.console.live import PlainProgress, Tracked, clock
from congrad_ray.console.screens import plan_rows
from congrad_ray.progress import Count, Stage
from congrad_ray.storage import Location


def test_a_session_sends_every_stream_to_the_log_and_keeps_the_terminal(tmp_path):
    """Python prints, logging, warnings and raw fd writes (as Ray's C++ core worker does) land in the log; the
    screen gets the session's own lines; a failure's traceback reaches the terminal."""
    script = textwrap.dedent(
        f"""
        import logging, os, sys, warnings
        from congrad_ray.console import Session
        from congrad_ray.storage import Location
        with Session("demo", Location.of({str(tmp_path / "run")!r}).join("logs", "demo.log")) as ui:
            print("library print")
            logging.getLogger("ray.data").warning("library warning record")
            warnings.warn("a library deprecation", FutureWarning)
            os.write(2, b"[E core_worker.cc] C++ line\\n")
            ui.line("screen line")
        raise SystemExit(3)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 3
    log = (tmp_path / "run" / "logs" / "demo.log").read_text()
    for text in ("library print", "library warning record", "a library deprecation", "C++ line"):
        assert text in log and text not in done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "congrad-ray demo" in lines[0] and lines[1].startswith("log: ") and lines[-1] == "screen line"
    assert done.stderr == ""


def test_plain_progress_prints_finished_stages_and_periodic_lines():
    out = io.StringIO()
    counts = [Count(1, 4, "buckets", "10 pairs"), Count(4, 4, "buckets", "40 pairs")]
    polls = []

    def probe() -> Count:  # what the records say at each poll: 1 bucket, then 4 from then on
        polls.append(1)
        return counts[min(len(polls), len(counts)) - 1]

    progress = PlainProgress(out, on_plan=lambda plan: None, interval=0.05)
    with progress.stage("sketch", probe):
        time.sleep(0.4)
    with progress.stage("report") as stage:
        stage.detail = "summary.html"
    lines = out.getvalue().splitlines()
    assert any("… sketch 1/4 buckets · 10 pairs" in line for line in lines)
    assert "✔ sketch: 4/4 buckets · 40 pairs" in lines[-2] and lines[-1].endswith("✔ report: summary.html (0:00)")
    assert len(polls) > 3 and len(lines) == 4  # an unchanged count is not printed again


def test_eta_and_clock():
    tracked = Tracked(Stage("x"), started=100.0, count=Count(1, 4))
    assert tracked.eta(110.0) == 30.0 and Tracked(Stage("y"), 0.0, Count(0, 4)).eta(5.0) is None
    assert clock(75) == "1:15" and clock(3725) == "1:02:05"


def test_plan_rows_merge_known_keys_and_keep_the_rest():
    rows = dict(
        plan_rows(
            {
                "step": "filter",
                "input": ["demo://train"],
                "rows": 3200,
                "files": 4,
                "languages": {"de": 400, "en": 400},
                "unseen": [],
                "ground_truth": "is_flipped",
                "sketch": {"k": 4096, "buckets": 8},
                "appended": 12,  # a key this renderer does not know
            }
        )
    )
    assert rows["input"] == "demo://train · 3,200 rows · 4 files"
    assert rows["languages"] == "2: de 400  en 400" and rows["sketch"] == "k 4,096 · buckets 8"
    assert rows["appended"] == "12" and "unseen" not in rows and "step" not in rows
    assert rows["ground truth"].startswith("column is_flipped")


def test_filter_probes_count_completion_records(tmp_path):
    from congrad_ray.pipeline.tracking import BucketsSketched, RowsValidated, UnitsWritten
    from congrad_ray.pipeline.units import Unit

    run = Location.of(str(tmp_path))
    units = [Unit(i, 0, run.join("in.parquet"), 10 * i, 10 * i + 10) for i in range(3)]
    validated, sketched, written = RowsValidated(run, units), BucketsSketched(run, 4), UnitsWritten(run, units)
    assert validated() == Count(0, 30, "rows", "0 invalid") and sketched().done == 0
    reasons = pa.table({"reason": [None] * 8 + ["empty_chosen", "null_prompt"]})
    run.join("rows", "unit-000001.parquet").write_table(reasons)
    run.join("rows", "_tmp-x-unit-000002.parquet").write_table(reasons)  # a write in progress is not counted
    run.join("partials", "bucket-000003.parquet").write_table(pa.table({"lang": ["de", "en"], "count": [5, 7]}))
    run.join("_state", "write", "unit-000000.json").write_bytes(json.dumps({"rows": 10}).encode())
    assert validated() == Count(10, 30, "rows", "2 invalid")
    assert sketched() == Count(1, 4, "buckets", "12 pairs")
    assert written() == Count(1, 3, "units", "10 rows")
    os.remove(tmp_path / "rows" / "unit-000001.parquet")
    assert validated().done == 10  # each record is read once
