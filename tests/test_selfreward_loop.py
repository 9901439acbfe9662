"""One full self-rewarding round on CPU (tiny model, transformers backend): generate -> judge -> pairs -> filter ->
train -> eval; the round directory, the pairs contract the filter reads, and resume at stage granularity."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.integration
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
STAGES = ["generate", "judge", "pairs", "filter", "train", "eval"]


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def one_round_config(output: Path, *overrides: str):
    from congrad_ray.selfreward import load_iterate_config

    small = ["run.rounds=1", "prompts.per_language_per_round=3", "prompts.demo.languages=[en, fr, de, sw]"]
    return load_iterate_config(CONFIGS / "iterate-tiny-cpu.yaml", [*small, *overrides], str(output))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_one_round_runs_resumes_by_stage_and_writes_the_contract(ray_local, tmp_path):
    from congrad_ray.selfreward import run_iterate

    out = tmp_path / "loop"
    cfg = one_round_config(out)
    # 1. "killed" once the pairs are recorded: the first three stages ran, nothing after them exists
    first = run_iterate(cfg, stop_after="1:pairs")
    rd = out / "round-01"
    assert first["ran_stages"] == [f"round-01/{s}" for s in STAGES[:3]] and first["stopped_after"] == "round-01/pairs"
    assert sorted(p.stem for p in (rd / "_state").glob("*.json")) == sorted(STAGES[:3])
    assert not (rd / "filter").exists() and not (rd / "train").exists()
    before = {name: digest(rd / name) for name in ("candidates.parquet", "judgements.parquet")}

    # the candidates: N per prompt, rendered with the chat template
    cands = pq.read_table(rd / "candidates.parquet").to_pandas()
    assert len(cands) == 12 * 4 and cands.groupby("prompt_id").size().eq(4).all()
    assert cands["prompt"].str.startswith("<|im_start|>user\n").all() and (cands["n_tokens"] <= 12).all()
    judged = pq.read_table(rd / "judgements.parquet").to_pandas()
    assert set(judged["status"]) <= {"ok", "empty", "no_score", "ambiguous", "out_of_range", "wrong_scale"}
    assert judged["raw"].str.startswith("Score:").all() and (judged["status"] == "ok").all()

    # the pairs Parquet: the filter's input contract plus scores, candidates and reasons
    pairs = pq.read_table(rd / "pairs" / "part-00000.parquet")
    df = pairs.to_pandas()
    assert {"id", "prompt", "chosen", "rejected", "lang"} <= set(df.columns)
    for col in ("id", "prompt", "chosen", "rejected", "lang"):
        assert str(pairs.schema.field(col).type) == "string" and df[col].notna().all()
    assert {"candidates", "candidate_scores", "chosen_score", "rejected_score", "score_gap", "pair_reason"} <= set(
        df.columns
    )
    assert df["id"].is_unique and (df["id"] == "r01-" + df["prompt_id"] + "-c" + df["chosen_index"].astype(str)
                                   + "-r" + df["rejected_index"].astype(str)).all()  # fmt: skip
    assert (df["chosen"] != df["rejected"]).all() and (df["score_gap"] >= cfg.pairs.min_gap).all()
    assert (df["pair_reason"] == "ok").all() and set(df["lang"]) <= {"en", "fr", "de", "sw"}
    dropped = pq.read_table(rd / "dropped_prompts.parquet").to_pandas()
    assert len(df) + len(dropped) == 12 and (dropped["pair_reason"] != "ok").all()

    # 2. re-run: resumes at the filter (the stage where it stopped), outputs of earlier stages untouched
    second = run_iterate(cfg)
    assert second["resumed_stages"] == [f"round-01/{s}" for s in STAGES[:3]]
    assert second["ran_stages"] == [f"round-01/{s}" for s in STAGES[3:]]
    assert before == {name: digest(rd / name) for name in before}
    manifest = json.loads((rd / "filter" / "manifest.json").read_text())
    totals = manifest["counts"]["totals"]
    assert totals["kept"] + totals["dropped"] + totals["invalid"] == len(df) and totals["kept"] > 0
    train = json.loads((rd / "_state" / "train.json").read_text())
    assert Path(train["model_out"]).is_dir() and train["model_out"] == second["final_model"]
    assert (Path(train["model_out"]) / "config.json").exists() and train["eval_per_language"]

    # per-round statistics and the round-over-round report
    stats = json.loads((rd / "stats.json").read_text())
    assert stats["pairs"]["pairs"] == len(df) and stats["judge"]["parse_failure_rate"] == 0.0
    assert set(stats["filter"]["kept_fraction"]) == set(df["lang"])
    assert stats["generation"]["tokens_per_s_engine"] > 0
    assert (out / "report" / "rounds.png").stat().st_size > 0
    assert json.loads((out / "report" / "rounds.json").read_text())[0]["round"] == 1

    # 3. a finished loop re-run does nothing; a changed data config is refused
    third = run_iterate(cfg)
    assert third["ran_stages"] == [] and len(third["resumed_stages"]) == len(STAGES)
    from congrad_ray.errors import ConfigError

    with pytest.raises(ConfigError, match="another configuration"):
        run_iterate(one_round_config(out, "generation.n=3"))
