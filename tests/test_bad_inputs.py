"""A battery of malformed inputs: each gives a one-line error (exit 2, no traceback) or quarantined rows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from congrad_ray.config import load_filter_config
from congrad_ray.errors import ConfigError
from tests.filter_helpers import TINY_MODEL, read_dir

ROOT = Path(__file__).resolve().parents[1]
GOOD = {
    "prompt": ["Count 1 to 3:", "Compte de 1 à 3 :"],
    "chosen": [" 1 2 3", " 1 2 3"],
    "rejected": [" 3 2 1", " 1 3 2"],
    "lang": ["en", "fr"],
}


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "congrad_ray.cli", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def write(path: Path, table: pa.Table) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path / "part-0.parquet")
    return path


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = [x for x in result.stderr.splitlines() if x.startswith("error: ")]
    assert lines, result.stderr[-3000:]
    for fragment in fragments:
        assert any(fragment in x for x in lines), (fragment, lines)


def test_missing_column(tmp_path):
    data = write(tmp_path / "in", pa.table({k: v for k, v in GOOD.items() if k != "rejected"}))
    r = run_cli("filter", "--config", "configs/tiny-cpu.yaml", "--input", str(data), "--output", str(tmp_path / "r"))
    assert_one_line_error(r, "lacks column(s) rejected")


def test_missing_lang_column_names_the_option(tmp_path):
    data = write(tmp_path / "in", pa.table({k: v for k, v in GOOD.items() if k != "lang"}))
    r = run_cli("filter", "--config", "configs/tiny-cpu.yaml", "--input", str(data), "--output", str(tmp_path / "r"))
    assert_one_line_error(r, "input.lang_column")


def test_corrupt_parquet_file(tmp_path):
    data = write(tmp_path / "in", pa.table(GOOD))
    (data / "part-1.parquet").write_bytes(b"PAR1 this is not parquet at all")
    r = run_cli("filter", "--config", "configs/tiny-cpu.yaml", "--input", str(data), "--output", str(tmp_path / "r"))
    assert_one_line_error(r, "part-1.parquet is not a readable Parquet file")


def test_empty_dataset(tmp_path):
    data = write(tmp_path / "in", pa.table(GOOD).slice(0, 0))
    r = run_cli("filter", "--config", "configs/tiny-cpu.yaml", "--input", str(data), "--output", str(tmp_path / "r"))
    assert_one_line_error(r, "has no rows")


def test_no_parquet_files(tmp_path):
    (tmp_path / "in").mkdir()
    r = run_cli(
        "filter", "--config", "configs/tiny-cpu.yaml", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "r")
    )
    assert_one_line_error(r, "no .parquet files")


def test_unknown_config_keys_and_bad_values_all_reported(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("sketch:\n  k: 1000\n  widht: 3\nselection:\n  rho: 2\nmodel:\n  name_or_path: /no/such/model\n")
    r = run_cli("filter", "--config", str(cfg), "--input", "demo://train", "--output", str(tmp_path / "r"))
    assert_one_line_error(
        r, "sketch.widht: unknown key", "sketch.k: must be a power of two", "selection.rho", "/no/such/model"
    )


def test_unreadable_model_path(tmp_path):
    r = run_cli(
        "filter",
        "--config",
        "configs/tiny-cpu.yaml",
        "--set",
        "model.name_or_path=./missing-model",
        "--output",
        str(tmp_path / "r"),
    )
    assert_one_line_error(r, "model directory ./missing-model does not exist")


def test_missing_config_file(tmp_path):
    assert_one_line_error(run_cli("filter", "--config", str(tmp_path / "nope.yaml")), "not found")


def test_run_dir_of_another_config_is_refused(tmp_path):
    from congrad_ray.errors import InputError
    from congrad_ray.pipeline.filter_run import plan

    data = write(tmp_path / "in", pa.table(GOOD))
    plan(load_filter_config(None, [], [str(data)], str(tmp_path / "r")))
    with pytest.raises((ConfigError, InputError), match="--fresh"):
        plan(load_filter_config(None, ["sketch.k=1024"], [str(data)], str(tmp_path / "r")))


@pytest.mark.integration
def test_bad_rows_are_quarantined_with_reasons(tmp_path):
    data = write(
        tmp_path / "in",
        pa.table(
            {
                "id": [
                    "ok1",
                    "ok2",
                    "ok3",
                    "null-chosen",
                    "empty-prompt",
                    "same",
                    "no-lang",
                    "klingon",
                    "dup",
                    "dup",
                    "long",
                ],
                "prompt": [
                    "Count 1 to 3:",
                    "Compte de 1 à 3 :",
                    "Zähle 1 bis 3:",
                    "p",
                    "  ",
                    "p",
                    "p",
                    "p",
                    "Count 2 to 4:",
                    "Count 2 to 4:",
                    "x " * 200,
                ],
                "chosen": [" 1 2 3", " 1 2 3", " 1 2 3", None, " a", " same", " a", " a", " 2 3 4", " 2 3 4", " a"],
                "rejected": [" 3 2 1", " 1 3 2", " 2 1 3", " b", " b", " same", " b", " b", " 4 3 2", " 2 4 3", " b"],
                "lang": ["en", "fr", "de", "en", "en", "en", None, "tlh", "en", "en", "en"],
            }
        ),
    )
    user = [{"role": "user", "content": "Count 1 to 2"}]
    answer = [{"role": "assistant", "content": " 1 2"}]
    wrong = [{"role": "assistant", "content": " 2 1"}]
    # chat messages (valid), a string prompt with message completions (mixed), an integer completion column
    pq.write_table(
        pa.table({"id": ["chat"], "prompt": [user], "chosen": [answer], "rejected": [wrong], "lang": ["en"]}),
        data / "part-1.parquet",
    )
    pq.write_table(
        pa.table({"id": ["mixed"], "prompt": ["p"], "chosen": [answer], "rejected": [wrong], "lang": ["en"]}),
        data / "part-2.parquet",
    )
    pq.write_table(
        pa.table({"id": ["int"], "prompt": ["p"], "chosen": [3], "rejected": [4], "lang": ["en"]}),
        data / "part-3.parquet",
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"languages:\n  seen: [en, fr, de]\nmodel:\n  name_or_path: '{TINY_MODEL}'\n"
        "sketch:\n  k: 256\n  buckets: 2\ndpo:\n  max_length: 64\n"
    )
    r = run_cli("filter", "--config", str(cfg), "--input", str(data), "--output", str(tmp_path / "r"), timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    invalid = read_dir(tmp_path / "r" / "invalid")
    reasons = dict(zip(invalid["id"], invalid["reason"]))
    assert reasons["null-chosen"] == "null_chosen"
    assert reasons["empty-prompt"] == "empty_prompt"
    assert reasons["same"] == "chosen_equals_rejected"
    assert reasons["no-lang"] == "missing_lang"
    assert reasons["klingon"] == "unknown_lang"
    assert reasons["long"] == "prompt_too_long"
    assert reasons["mixed"] == "mixed_formats"
    assert reasons["int"] == "wrong_type_chosen"
    assert list(invalid["reason"]).count("duplicate_id") == 1
    scored = set(read_dir(tmp_path / "r" / "kept")["id"]) | set(read_dir(tmp_path / "r" / "dropped")["id"])
    assert scored == {"ok1", "ok2", "ok3", "chat", "dup"}
