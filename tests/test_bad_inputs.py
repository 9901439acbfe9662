"""Bad and unusual inputs: each gets a one-line error (exit 2, no traceback) or quarantined rows with a reason.

The one-line errors are found before Ray starts and run the CLI in-process (``ensure_ray`` is made to fail, so a
case that would start Ray is a test failure). The quarantine reasons and the errors raised inside Ray workers run on
a local cluster (integration); one of them runs the CLI as a subprocess, to see that no worker traceback reaches the
user's terminal.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from congrad_ray.cli import main
from tests.filter_helpers import TINY_MODEL, read_dir

ROOT = Path(__file__).resolve().parents[1]
FILTER = str(ROOT / "configs" / "tiny-cpu.yaml")
TRAIN = str(ROOT / "configs" / "train-tiny-cpu.yaml")
ITERATE = str(ROOT / "configs" / "iterate-tiny-cpu.yaml")
GOOD = {
    "prompt": ["Count 1 to 3:", "Compte de 1 à 3 :"],
    "chosen": [" 1 2 3", " 1 2 3"],
    "rejected": [" 3 2 1", " 1 3 2"],
    "lang": ["en", "fr"],
}


def write(path: Path, table: pa.Table, name: str = "part-0.parquet") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path / name)
    return path


def good(tmp: Path) -> str:
    return str(write(tmp / "in", pa.table(GOOD)))


def without(column: str) -> pa.Table:
    return pa.table({k: v for k, v in GOOD.items() if k != column})


def model_dir(tmp: Path, tiny: Path, drop: tuple[str, ...] = (), corrupt: tuple[str, ...] = ()) -> str:
    """A copy of the tiny checkpoint without the files ``drop`` and with the files ``corrupt`` overwritten."""
    out = tmp / "model"
    shutil.copytree(tiny, out)
    for name in drop:
        (out / name).unlink()
    for name in corrupt:
        (out / name).write_text("{ not json")
    return str(out)


def unwritable_dir(tmp: Path) -> Path:
    """A directory this process cannot create entries in (a read-only mode bit; for root, sysfs)."""
    if os.geteuid() != 0:
        ro = tmp / "read-only"
        ro.mkdir()
        ro.chmod(0o555)
        return ro
    if Path("/sys").is_dir():
        return Path("/sys")
    pytest.skip("no directory that root cannot write")


def filter_args(tmp: Path, *extra: str, inputs: str | None = None) -> list[str]:
    return ["filter", "--config", FILTER, "--input", inputs or good(tmp), "--output", str(tmp / "run"), *extra]


@dataclass(frozen=True)
class Case:
    name: str
    argv: Callable[[Path, Path], list[str]]  # (tmp_path, tiny checkpoint dir) -> CLI arguments
    expect: tuple[str, ...]  # fragments of the error lines
    absent: tuple[str, ...] = ()  # words the error must not contain (hints for flags the command lacks)


def _config(tmp: Path, text: str | bytes) -> str:
    path = tmp / "c.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return str(path)


def _claimed_by_another(tmp: Path, _: Path) -> list[str]:
    from congrad_ray.config import load_filter_config
    from congrad_ray.pipeline.filter_run import plan

    plan(load_filter_config(None, ["sketch.k=1024"], [good(tmp)], str(tmp / "run")))
    return filter_args(tmp)


def _unfinished_filter_run(tmp: Path, _: Path) -> list[str]:
    (tmp / "frun" / "_state").mkdir(parents=True)
    return ["train", "--config", TRAIN, "--train", str(tmp / "frun"), "--output", str(tmp / "t")]


def _output_is_a_file(tmp: Path, _: Path) -> list[str]:
    (tmp / "out.txt").write_text("a file")
    return [*filter_args(tmp)[:-2], "--output", str(tmp / "out.txt")]


def _output_under_a_file(tmp: Path, _: Path) -> list[str]:
    (tmp / "out.txt").write_text("a file")
    return [*filter_args(tmp)[:-2], "--output", str(tmp / "out.txt" / "run")]


CASES = [
    # --- the input
    Case(
        "missing_column",
        lambda t, _: filter_args(t, inputs=str(write(t / "in", without("rejected")))),
        ("lacks column(s) rejected",),
    ),
    Case(
        "missing_lang_column",
        lambda t, _: filter_args(t, inputs=str(write(t / "in", without("lang")))),
        ("input.lang_column",),
    ),
    Case(
        "corrupt_parquet",
        lambda t, _: filter_args(t, inputs=str(_with_file(t, b"PAR1 this is not parquet at all"))),
        ("part-1.parquet is not a readable Parquet file",),
    ),
    Case(
        "truncated_parquet", lambda t, _: filter_args(t, inputs=str(_truncated(t))), ("is not a readable Parquet file",)
    ),
    Case(
        "empty_dataset",
        lambda t, _: filter_args(t, inputs=str(write(t / "in", pa.table(GOOD).slice(0, 0)))),
        ("has no rows",),
    ),
    Case("no_parquet_files", lambda t, _: filter_args(t, inputs=str(_empty_dir(t))), ("no .parquet files",)),
    Case("only_hidden_parquet", lambda t, _: filter_args(t, inputs=str(_hidden_only(t))), ("no .parquet files",)),
    Case("input_path_missing", lambda t, _: filter_args(t, inputs=str(t / "nope")), ("input.paths:", "does not exist")),
    Case("glob_matches_nothing", lambda t, _: filter_args(t, inputs=str(t / "*.parquet")), ("no .parquet files",)),
    Case(
        "reference_columns_missing",
        lambda t, _: filter_args(t, "--set", "model.reference=columns"),
        ("model.reference is 'columns' but the input lacks ref_chosen_logps",),
    ),
    # --- the config
    Case(
        "config_missing",
        lambda t, _: ["filter", "--config", str(t / "nope.yaml")],
        ("not found", "configs/tiny-cpu.yaml"),
    ),
    Case("config_is_a_directory", lambda t, _: ["filter", "--config", str(t)], ("is a directory",)),
    Case("config_not_yaml", lambda t, _: ["filter", "--config", _config(t, "sketch: [1, 2\n")], ("is not valid YAML",)),
    Case(
        "config_not_a_mapping", lambda t, _: ["filter", "--config", _config(t, "- 1\n- 2\n")], ("must hold a mapping",)
    ),
    Case(
        "config_not_utf8",
        lambda t, _: ["filter", "--config", _config(t, b"run:\n  name: \xff\xfe\n")],
        ("is not UTF-8",),
    ),
    Case(
        "unknown_keys_and_bad_values_together",
        lambda t, _: filter_args(t, "--set", "sketch.widht=3", "--set", "sketch.k=1000", "--set", "selection.rho=2"),
        ("sketch.widht: unknown key", "sketch.k: must be a power of two", "selection.rho"),
    ),
    Case("set_without_equals", lambda t, _: filter_args(t, "--set", "selection.rho"), ("expected dotted.key=value",)),
    Case(
        "set_into_a_value",
        lambda t, _: filter_args(t, "--set", "run.seed.x=1"),
        ("--set run.seed.x: seed is not a section",),
    ),
    Case("scope_lora_without_lora", lambda t, _: filter_args(t, "--set", "sketch.scope=lora"), ("needs model.lora",)),
    Case(
        "language_both_seen_and_unseen_after_canonicalisation",
        lambda t, _: filter_args(t, "--set", "languages.seen=[EN, fr]", "--set", "languages.unseen=[' en ']"),
        ("['en'] are both seen and unseen",),
    ),
    Case(
        "actors_min_above_max",
        lambda t, _: filter_args(t, "--set", "resources.actors_min=3", "--set", "resources.actors_max=1"),
        ("raise actors_max",),
    ),
    Case("run_dir_of_another_config", _claimed_by_another, ("holds a filter run of another", "--fresh")),
    # --- the model
    Case(
        "model_dir_missing",
        lambda t, _: filter_args(t, "--set", f"model.name_or_path={t / 'missing-model'}"),
        ("missing-model does not exist",),
    ),
    Case(
        "model_dir_without_config",
        lambda t, m: filter_args(t, "--set", f"model.name_or_path={model_dir(t, m, drop=('config.json',))}"),
        ("has no config.json",),
    ),
    Case(
        "model_dir_with_only_config_json",
        lambda t, m: filter_args(t, "--set", f"model.name_or_path={_only_config(t, m)}"),
        ("has no safetensors weights", "has no tokenizer"),
    ),
    Case(
        "model_dir_without_tokenizer",
        lambda t, m: filter_args(
            t, "--set", f"model.name_or_path={model_dir(t, m, drop=('tokenizer.json', 'tokenizer_config.json'))}"
        ),
        ("has no tokenizer",),
    ),
    Case(
        "model_config_json_corrupt",
        lambda t, m: filter_args(t, "--set", f"model.name_or_path={model_dir(t, m, corrupt=('config.json',))}"),
        ("cannot load the model at", "config.json"),
    ),
    Case(
        "tokenizer_json_corrupt",
        lambda t, m: filter_args(t, "--set", f"model.name_or_path={model_dir(t, m, corrupt=('tokenizer.json',))}"),
        ("cannot load the tokenizer at",),
    ),
    Case(
        "tiny_option_typo",
        lambda t, _: filter_args(t, "--set", "model.name_or_path=tiny://llama?hidden=64"),
        ("tiny model option 'hidden'", "hidden_size"),
    ),
    Case(
        "tiny_option_not_an_integer",
        lambda t, _: filter_args(t, "--set", "model.name_or_path=tiny://llama?hidden_size=big"),
        ("must be a positive integer",),
    ),
    Case(
        "tiny_unknown_arch",
        lambda t, _: filter_args(t, "--set", "model.name_or_path=tiny://gpt5"),
        ("unknown tiny model",),
    ),
    Case(
        "adapter_dir_without_adapter_config",
        lambda t, _: filter_args(t, "--set", f"model.lora={{adapter_path: {t}}}"),
        ("has no adapter_config.json",),
    ),
    # --- the output
    Case("output_is_a_file", _output_is_a_file, ("is a file, not a directory", "--output")),
    Case("output_under_a_file", _output_under_a_file, ("out.txt is a file",)),
    Case(
        "output_under_a_read_only_directory",
        lambda t, _: [*filter_args(t)[:-2], "--output", str(unwritable_dir(t) / "run")],
        ("run.output: cannot write under",),
    ),
    # --- select, train, iterate: the hints name their own flags and example configs
    Case(
        "select_run_dir_missing",
        lambda t, _: ["select", "--run-dir", str(t / "missing")],
        ("is not a filter run",),
        absent=("--config", "--input"),
    ),
    Case(
        "select_overrides_a_sketch_setting",
        lambda t, _: ["select", "--run-dir", str(_fake_run(t)), "--set", "sketch.k=1024"],
        ("--set sketch.k: the run's stored sketches fix it",),
    ),
    Case(
        "train_config_missing",
        lambda t, _: ["train", "--config", str(t / "nope.yaml")],
        ("configs/train-tiny-cpu.yaml",),
    ),
    Case(
        "train_data_missing",
        lambda t, _: ["train", "--config", TRAIN, "--train", str(t / "nope"), "--output", str(t / "t")],
        ("data.train:", "does not exist"),
    ),
    Case("train_on_an_unfinished_filter_run", _unfinished_filter_run, ("has not finished",)),
    Case(
        "train_demo_split_unknown",
        lambda t, _: ["train", "--config", TRAIN, "--train", "demo://tran", "--output", str(t / "t")],
        ("demo://tran unknown",),
    ),
    Case(
        "train_model_with_only_config_json",
        lambda t, m: [
            "train",
            "--config",
            TRAIN,
            "--output",
            str(t / "t"),
            "--set",
            f"model.name_or_path={_only_config(t, m)}",
        ],
        ("has no safetensors weights",),
    ),
    Case(
        "iterate_unknown_key",
        lambda t, _: ["iterate", "--config", ITERATE, "--set", "judge.kk=2", "--output", str(t / "it")],
        ("judge.kk: unknown key", "configs/iterate-tiny-cpu.yaml"),
    ),
    Case(
        "iterate_generation_takes_every_cpu",
        lambda t, _: [
            "iterate",
            "--config",
            ITERATE,
            "--output",
            str(t / "it"),
            "--set",
            "run.num_cpus=2",
            "--set",
            "generation.cpus_per_actor=2",
        ],
        ("take all 2 CPUs of the embedded Ray", "generation.cpus_per_actor <= 1.75"),
    ),
    Case(
        "iterate_stop_after_malformed",
        lambda t, _: ["iterate", "--config", ITERATE, "--stop-after", "judge", "--output", str(t / "it")],
        ("--stop-after 'judge': expected ROUND:STAGE",),
    ),
    # --- growing a run (filter --append)
    Case("append_without_run_dir", lambda t, _: ["filter", "--append", str(t)], ("--append needs --run-dir",)),
    Case(
        "append_with_fresh_and_a_config",
        lambda t, _: ["filter", "--append", str(t), "--run-dir", str(t), "--fresh", "--config", FILTER],
        ("drop --fresh", "drop --config"),
    ),
    Case(
        "append_to_an_unfinished_run",
        lambda t, _: ["filter", "--append", str(t), "--run-dir", str(_unfinished_filter_run(t, _)[4])],
        ("is not a filter run that finished sketching",),
    ),
    Case("filter_without_config", lambda t, _: ["filter", "--input", str(t)], ("filter needs --config",)),
]


def _with_file(tmp: Path, data: bytes) -> Path:
    folder = write(tmp / "in", pa.table(GOOD))
    (folder / "part-1.parquet").write_bytes(data)
    return folder


def _truncated(tmp: Path) -> Path:
    folder = write(tmp / "in", pa.table(GOOD))
    whole = (folder / "part-0.parquet").read_bytes()
    (folder / "part-0.parquet").write_bytes(whole[: len(whole) // 2])
    return folder


def _empty_dir(tmp: Path) -> Path:
    (tmp / "in").mkdir()
    return tmp / "in"


def _hidden_only(tmp: Path) -> Path:
    write(tmp / "in" / ".cache", pa.table(GOOD))
    return tmp / "in"


def _only_config(tmp: Path, tiny: Path) -> str:
    out = tmp / "config-only"
    out.mkdir()
    shutil.copy(tiny / "config.json", out / "config.json")
    return str(out)


def _fake_run(tmp: Path) -> Path:
    (tmp / "run").mkdir()
    (tmp / "run" / "config.yaml").write_text("run:\n  name: x\n")
    return tmp / "run"


@pytest.fixture
def no_ray(monkeypatch):
    """Every case here must be answered before Ray starts."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("Ray was started: this error should have been found before")

    monkeypatch.setattr("congrad_ray.ray_env.ensure_ray", refuse)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # the embedded-Ray checks apply


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_one_line_error(case, tmp_path, tiny_dir, capsys, no_ray):
    argv = case.argv(tmp_path, tiny_dir)
    capsys.readouterr()  # what building the case printed (e.g. saving the demo model on a fresh machine)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err[-3000:]
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if x.startswith("error: ")]
    assert lines and len(lines) == len(err.strip().splitlines()), err[-3000:]  # nothing but error lines
    for fragment in case.expect:
        assert any(fragment in x for x in lines), (fragment, lines)
    for word in case.absent:
        assert all(word not in x for x in lines), (word, lines)


# --- inside Ray: quarantined rows, and user errors raised in workers --------------------------------------------


def _bad_utf8(values: list[bytes]) -> pa.Array:
    return pa.array(values, pa.binary()).view(pa.string())


def _quarantine_input(folder: Path) -> None:
    ids = ["ok1", "ok2", "ok3", "null-chosen", "empty-prompt", "same", "no-lang", "klingon", "dup", "dup", "long"]
    write(
        folder,
        pa.table(
            {
                "id": ids,
                "prompt": ["Count 1 to 3:", "Compte de 1 à 3 :", "Zähle 1 bis 3:", "p", "  ", "p", "p", "p"]
                + ["Count 2 to 4:", "Count 2 to 4:", "x " * 200],
                "chosen": [" 1 2 3", " 1 2 3", " 1 2 3", None, " a", " same", " a", " a", " 2 3 4", " 2 3 4", " a"],
                "rejected": [" 3 2 1", " 1 3 2", " 2 1 3", " b", " b", " same", " b", " b", " 4 3 2", " 2 4 3", " b"],
                "lang": ["en", "fr", "de", "en", "en", "en", None, "tlh", "en", "en", "en"],
            }
        ),
    )
    user = [{"role": "user", "content": "Count 1 to 2"}]
    answer = [{"role": "assistant", "content": " 1 2"}]
    wrong = [{"role": "assistant", "content": " 2 1"}]
    write(
        folder,
        pa.table({"id": ["chat"], "prompt": [user], "chosen": [answer], "rejected": [wrong], "lang": ["en"]}),
        "part-1.parquet",
    )
    write(
        folder,
        pa.table({"id": ["mixed"], "prompt": ["p"], "chosen": [answer], "rejected": [wrong], "lang": ["en"]}),
        "part-2.parquet",
    )
    write(
        folder,
        pa.table({"id": ["int"], "prompt": ["p"], "chosen": [3], "rejected": [4], "lang": ["en"]}),
        "part-3.parquet",
    )
    write(
        folder,
        pa.table(
            {
                "id": ["utf8-prompt", "utf8-extra", "upper", "padded"],
                "prompt": _bad_utf8([b"Count \xff 3:", b"Count 4 to 6:", b"Count 5 to 7:", b"Count 6 to 8:"]),
                "chosen": [" 1 2 3", " 4 5 6", " 5 6 7", " 6 7 8"],
                "rejected": [" 3 2 1", " 6 5 4", " 7 6 5", " 8 7 6"],
                "lang": ["en", "en", "EN", " DE "],
                "source": _bad_utf8([b"ok", b"scraped \xfe\xff", b"ok", b"ok"]),
            }
        ),
        "part-4.parquet",
    )
    # a language of the wrong type, and a null id
    write(
        folder,
        pa.table({"id": ["int-lang"], "prompt": ["p"], "chosen": [" a"], "rejected": [" b"], "lang": [7]}),
        "part-5.parquet",
    )
    write(
        folder,
        pa.table(
            {"id": pa.array([None], pa.string()), "prompt": ["q"], "chosen": [" a"], "rejected": [" b"], "lang": ["en"]}
        ),
        "part-6.parquet",
    )


QUARANTINED = {
    "null-chosen": "null_chosen",
    "empty-prompt": "empty_prompt",
    "same": "chosen_equals_rejected",
    "no-lang": "missing_lang",
    "klingon": "unknown_lang",
    "long": "prompt_too_long",
    "mixed": "mixed_formats",
    "int": "wrong_type_chosen",
    "utf8-prompt": "invalid_utf8_prompt",
    "utf8-extra": "invalid_utf8_source",
    "int-lang": "wrong_type_lang",
}


@pytest.fixture
def embedded_ray():
    yield
    import ray

    ray.shutdown()


@pytest.mark.integration
def test_bad_rows_are_quarantined_with_reasons(tmp_path, capsys, embedded_ray):
    _quarantine_input(tmp_path / "in")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"languages:\n  seen: [en, fr, de]\nmodel:\n  name_or_path: '{TINY_MODEL}'\n"
        "sketch:\n  k: 256\n  buckets: 2\ndpo:\n  max_length: 64\nresources:\n  num_cpus: 2\n"
    )
    code = main(["filter", "--config", str(cfg), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "r")])
    assert code == 0, capsys.readouterr().err[-3000:]
    invalid = read_dir(tmp_path / "r" / "invalid")
    reasons = dict(zip(invalid["id"].fillna("<null>"), invalid["reason"]))
    for sample_id, reason in QUARANTINED.items():
        assert reasons.get(sample_id) == reason, (sample_id, reasons.get(sample_id))
    assert reasons["<null>"] == "null_id"
    assert list(invalid["reason"]).count("duplicate_id") == 1
    scored = pd_concat(read_dir(tmp_path / "r" / "kept"), read_dir(tmp_path / "r" / "dropped"))
    assert set(scored["id"]) == {"ok1", "ok2", "ok3", "chat", "dup", "upper", "padded"}
    langs = dict(zip(scored["id"], scored["lang"]))
    assert (langs["upper"], langs["padded"]) == ("EN", " DE ")  # the input's own value is kept in the outputs
    import json

    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["language_codes"] == {" DE ": "de", "EN": "en"}
    assert set(manifest["counts"]["per_language"]) <= {"en", "fr", "de", "tlh", "(none)"}  # one "en", one "de"


def pd_concat(*frames):
    import pandas as pd

    return pd.concat([f for f in frames if f is not None], ignore_index=True)


@pytest.mark.integration
def test_a_model_that_fails_in_a_worker_is_one_line_without_traceback(tmp_path, tiny_dir):
    """Config and tokenizer load on the driver, the weights are corrupt: the sketch actors fail to load them. The
    one subprocess test: what the user's terminal shows, worker output included."""
    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    (model / "model.safetensors").write_bytes(b"\x00" * 64)
    cmd = [sys.executable, "-m", "congrad_ray.cli", *filter_args(tmp_path, "--set", f"model.name_or_path={model}")]
    env = {**os.environ, "RAY_TMPDIR": tempfile.mkdtemp(prefix="cr-", dir="/tmp")}  # socket paths stay short
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and 'File "' not in result.stderr, result.stderr[-3000:]
    lines = [x for x in result.stderr.splitlines() if x.startswith("error: ")]
    assert len(lines) == 1 and f"cannot load the model at {model}" in lines[0], result.stderr[-3000:]
