"""The self-rewarding setting of the paper benchmark (issue 15): ``python -m benchmarks.paper.selfreward``.

Per seed: a prose corpus (:func:`.corpora.build_prose_corpus`, nothing injected) gives the prompt pool (the opening
words of training paragraphs, whose true continuation is kept aside as a reference) and the held-out pairs (true
continuation vs its shuffle or another paragraph's words). Each arm is one ``congrad-ray iterate`` loop
(:func:`congrad_ray.selfreward.loop.run_iterate`, ``configs/selfreward.yaml``: generate -> judge -> pairs -> filter
-> train, ``rounds`` rounds) that differs from the others only in its filter's selection. Round 1's generation,
judging and pairing use the same model for every arm, so they run once per seed (a loop stopped after ``1:pairs``)
and each arm's loop directory starts with those stage outputs and records, which the loop's stage-level resume
skips; from the filter step on, and in every later round, each arm runs its own loop.

After every round the benchmark measures the round's model (each a cached JSON, so a resumed run redoes nothing):

* held-out accuracy against the fixed reference judgement of the corpus, under the implicit reward of the model
  against the round-1 model (the same reference for every arm and round; per pair, for the paired bootstrap);
* the alignment tax: per-token LM loss on clean held-out prose, minus the round-1 model's;
* the loop's pairs against a reference judgement the model did not make: a pair "conflicts" when its chosen
  continuation is further from the true one (chrF, :func:`congrad_ray.core.chrf`) than its rejected one; per
  language, how often the self-judge conflicts, how many conflicting pairs each arm keeps, and the filter's
  per-language diagnosis (:func:`congrad_ray.pipeline.report.language_diagnosis`, with that ground truth).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from .settings import CONFIG_DIR, CorpusConfig

ROOT = Path(__file__).resolve().parents[2]
SHARED_STAGES = ("generate", "judge", "pairs")
SHARED_FILES = ("prompts.parquet", "candidates.parquet", "judgements.parquet", "pairs", "dropped_prompts.parquet")


def log(msg: str) -> None:
    print(f"[selfreward {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class SelfRewardSetting(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    setting: str = "selfreward"
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    rounds: int = Field(2, ge=1)
    prompts_per_language: int = Field(8, ge=1, description="prompts per language each round")
    corpus: CorpusConfig = CorpusConfig(kind="prose", flip_rate={}, systematic_language=None)
    model: str = "gemma-3-270m"
    judge_template: str
    iterate: dict[str, Any] = Field(default_factory=dict, description="dotted overrides of the iterate config")
    filter: list[str] = Field(default_factory=list)
    train: list[str] = Field(default_factory=list)
    arms: dict[str, list[str]]
    eval_batch_size: int = 8
    bootstrap: int = Field(2000, ge=100)
    quick: dict[str, Any] = Field(default_factory=dict)

    def seed_hash(self) -> str:
        import hashlib

        canon = json.dumps(self.model_dump(mode="json", exclude={"seeds", "quick"}), sort_keys=True)
        return hashlib.sha256(canon.encode()).hexdigest()[:16]


def load(path: Path, overrides: list[str], quick: bool, seeds: int | None) -> SelfRewardSetting:
    from congrad_ray.config_loading import apply_overrides
    from congrad_ray.errors import ConfigError

    raw = yaml.safe_load(path.read_text()) or {}
    problems = (
        apply_overrides(raw, [f"{k}={json.dumps(v)}" for k, v in (raw.get("quick") or {}).items()]) if quick else []
    )
    problems += apply_overrides(raw, overrides)
    if seeds is not None:
        raw["seeds"] = list(range(seeds))
    if problems:
        raise ConfigError(problems)
    return SelfRewardSetting.model_validate(raw)


# ------------------------------------------------------------------------------------------------ one seed: data


def build_data(cfg: SelfRewardSetting, seed: int, work: Path) -> dict[str, Any]:
    """Corpus, prompt pool (with each prompt's true continuation) and the round-1 model of one seed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .corpora import build_prose_corpus
    from .models import convert_gguf

    corpus = cfg.corpus.model_copy(update={"pairs_per_language": cfg.prompts_per_language * cfg.rounds})
    data = work / "data"
    _, prose = build_prose_corpus(corpus, seed, data)
    rows = pq.read_table(data / "train").to_pylist()
    pool = pa.table(
        {
            "id": [r["id"] for r in rows],
            "lang": [r["lang"] for r in rows],
            "prompt": [r["prompt"] for r in rows],
            "reference": [r["chosen"] for r in rows],  # the true continuation (nothing is flipped here)
        }
    )
    pq.write_table(pool, data / "pool.parquet")
    return {
        "pool": str(data / "pool.parquet"),
        "reference": {r["id"]: r["chosen"] for r in rows},
        "heldout": str(data / "heldout"),
        "prose": prose,
        "model": convert_gguf(cfg.model),
    }


def iterate_config(
    cfg: SelfRewardSetting, seed: int, data: dict[str, Any], arm: list[str], out: Path, rounds: int = 1
) -> Any:
    """The arm's iterate config for its first ``rounds`` rounds (also written as ``iterate-arm.yaml`` into its
    directory; raising the rounds continues the same loop)."""
    from congrad_ray.selfreward.config import load_iterate_config

    seeds = [f"run.seed={seed}", f"sketch.seed={seed}", f"surgery.seed={seed}"]
    raw = {
        "run": {"name": f"selfreward-{seed}", "output": str(out), "rounds": rounds, "seed": seed},
        "model": {"name_or_path": data["model"]},
        "prompts": {
            "paths": [data["pool"]],
            "languages": list(cfg.corpus.seen),
            "per_language_per_round": cfg.prompts_per_language,
        },
        "judge": {"template": cfg.judge_template},
        "filter": {"overrides": [*cfg.filter, *seeds, *arm]},
        "train": {"overrides": [*cfg.train, f"run.seed={seed}"]},
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / "iterate-arm.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    from .settings import flatten

    return load_iterate_config(path, flatten(cfg.iterate))


def seed_round_one(shared: Path, arm_dir: Path) -> None:
    """Start an arm's loop directory with round 1's shared generate/judge/pairs outputs and their records."""
    src, dst = shared / "round-01", arm_dir / "round-01"
    if (dst / "_state" / "pairs.json").exists():
        return
    (dst / "_state").mkdir(parents=True, exist_ok=True)
    shutil.copy2(shared / "prompts.parquet", arm_dir / "prompts.parquet")
    for name in SHARED_FILES:
        if (src / name).is_dir():
            shutil.copytree(src / name, dst / name, dirs_exist_ok=True)
        elif (src / name).exists():
            shutil.copy2(src / name, dst / name)
    for stage in SHARED_STAGES:  # the records last: a stage counts as done only once its outputs are there
        shutil.copy2(src / "_state" / f"{stage}.json", dst / "_state" / f"{stage}.json")


# ------------------------------------------------------------------------------------------------ one seed: measures


def heldout_eval(cfg: SelfRewardSetting, data: dict[str, Any], model_dir: str, out: Path) -> dict[str, Any]:
    """Held-out accuracy of ``model_dir`` against the round-1 model (per language, groups, per pair) and its tax."""
    import pyarrow.parquet as pq

    from congrad_ray.storage import Location
    from congrad_ray.train.config import load_train_config
    from congrad_ray.train.data import ID, LANG
    from congrad_ray.train.evaluate import language_groups
    from congrad_ray.train.export import evaluate_model

    from .measures import lm_losses
    from .training import heldout_outcomes

    if (out / "eval.json").exists():
        return json.loads((out / "eval.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    overrides = [
        f"model.name_or_path={json.dumps(data['model'])}",
        "model.attn_implementation=eager",
        "dpo.max_length=96",
        f"eval.batch_size={cfg.eval_batch_size}",
    ]
    lm = lm_losses(model_dir, data["prose"], attn="eager", batch_size=cfg.eval_batch_size)
    result: dict[str, Any] = {"lm": lm}
    if model_dir != data["model"]:  # the round-1 model against itself: every margin is 0, nothing to measure
        tcfg = load_train_config(None, overrides, check_paths=False)
        table = pq.read_table(data["heldout"])
        table = table.append_column(ID, table.column("id")).append_column(LANG, table.column("lang"))
        groups = language_groups(table.column("lang").to_pylist(), cfg.corpus.seen, cfg.corpus.unseen)
        pairs = Location.of(str(out / "eval_pairs.parquet"))
        result["eval"] = evaluate_model(model_dir, tcfg, "same", table, groups, pairs)
        result["heldout_pairs"] = heldout_outcomes(out)
    (out / "eval.json").write_text(json.dumps(result, default=str))
    return result


def pair_truth(round_dir: Path, reference: dict[str, str]) -> dict[str, Any]:
    """chrF of each pair's chosen and rejected continuation against the true one; ``conflicting``: chosen further."""
    import pyarrow.parquet as pq

    from congrad_ray.core import chrf

    files = sorted((round_dir / "pairs").glob("*.parquet"))
    if not files:
        return {}
    rows = pq.read_table(files[0], columns=["id", "lang", "prompt_id", "chosen", "rejected"]).to_pylist()
    out = {}
    for r in rows:
        ref = reference.get(r["prompt_id"], "")
        c, w = chrf(r["chosen"], ref), chrf(r["rejected"], ref)
        out[r["id"]] = {"lang": r["lang"], "chrf_chosen": c, "chrf_rejected": w, "conflicting": c < w}
    return out


def round_record(round_dir: Path, truth: dict[str, Any]) -> dict[str, Any]:
    """Kept pairs, conflicting kept (by the chrF reference) and the filter's per-language diagnosis of a round."""
    import pyarrow.parquet as pq

    from congrad_ray.pipeline.report import language_diagnosis

    run = round_dir / "filter"
    rec: dict[str, Any] = {"pairs": len(truth)}
    if not (run / "scores.parquet").exists():
        return rec
    decisions = pq.read_table(run / "scores.parquet")
    direction = run / "direction" / "direction.json"
    agreement = json.loads(direction.read_text()).get("agreement") if direction.exists() else None
    flags = {i: t["conflicting"] for i, t in truth.items()}
    rec["diagnosis"] = language_diagnosis(decisions, agreement, flags)
    keep = dict(zip(decisions.column("id").to_pylist(), decisions.column("keep").to_pylist()))
    rec["kept"] = int(sum(bool(keep.get(i)) for i in truth))
    rec["conflicting"] = int(sum(t["conflicting"] for t in truth.values()))
    rec["conflicting_kept"] = int(sum(t["conflicting"] and bool(keep.get(i)) for i, t in truth.items()))
    return rec


def run_seed(cfg: SelfRewardSetting, seed: int, work: Path) -> dict[str, Any]:
    from congrad_ray.selfreward.loop import run_iterate

    t0 = time.perf_counter()
    log(f"seed {seed}: corpus, pool and model")
    data = build_data(cfg, seed, work)
    base = heldout_eval(cfg, data, data["model"], work / "base")
    first_arm = next(iter(cfg.arms))
    shared = work / "shared"
    if not (shared / "round-01" / "_state" / "pairs.json").exists():
        log(f"seed {seed}: round 1 generate / judge / pairs (shared by every arm)")
        run_iterate(iterate_config(cfg, seed, data, cfg.arms[first_arm], shared), stop_after="1:pairs")
    rec: dict[str, Any] = {"seed": seed, "base": base, "arms": {name: [] for name in cfg.arms}}
    for t in range(1, cfg.rounds + 1):  # round by round over the arms: an interrupted seed has whole rounds done
        for name, arm in cfg.arms.items():
            arm_dir = work / "arms" / name
            seed_round_one(shared, arm_dir)
            log(f"seed {seed}: arm {name}: round {t}")
            summary = run_iterate(iterate_config(cfg, seed, data, arm, arm_dir, rounds=t))
            stats = summary["rounds"][t - 1]
            round_dir = arm_dir / f"round-{t:02d}"
            ev = heldout_eval(cfg, data, stats["model_out"], arm_dir / "bench" / f"round-{t:02d}")
            truth = pair_truth(round_dir, data["reference"])
            rec["arms"][name].append(
                {"round": t, "seconds": stats.get("seconds"), **ev, **round_record(round_dir, truth)}
            )
            rec["wall_s"] = round(time.perf_counter() - t0, 1)
            (work / "partial.json").write_text(json.dumps(rec, default=str))  # what --partial reports
    rec["wall_s"] = round(time.perf_counter() - t0, 1)
    rec["load_avg_1m"] = round(os.getloadavg()[0], 2)
    return rec


# ------------------------------------------------------------------------------------------------ the setting


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.paper.selfreward", description=__doc__)
    parser.add_argument("--config", type=Path, default=CONFIG_DIR / "selfreward.yaml")
    parser.add_argument("--seeds", type=int, default=None, help="run seeds 0..N-1 (default: the config's)")
    parser.add_argument("--quick", action="store_true", help="the config's quick: block (a smoke run)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=None, help="work directory")
    parser.add_argument("--results", type=Path, default=None, help="results directory")
    parser.add_argument("--resume", action="store_true", help="keep finished seeds, rounds and stages in --out")
    parser.add_argument("--report-only", action="store_true", help="redraw --results from its results.json")
    parser.add_argument(
        "--partial", action="store_true", help="report what --out holds (finished rounds of unfinished seeds too)"
    )
    args = parser.parse_args(argv)

    from .selfreward_report import write_results

    cfg = load(args.config, args.set, args.quick, args.seeds)
    name = cfg.setting + ("-quick" if args.quick else "")
    out = args.out or ROOT / "runs" / "paper" / name
    results = args.results or (out / "results" if args.quick else ROOT / "benchmarks" / "results" / cfg.setting)
    if args.report_only:
        write_results(json.loads((results / "results.json").read_text()), results)
        return 0
    for key, value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(key, value)
    if not args.resume and not args.partial:
        shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    seeds = []
    for seed in cfg.seeds:
        done = out / f"seed-{seed}" / "seed.json"
        partial = out / f"seed-{seed}" / "partial.json"
        if args.partial:
            found = done if done.exists() else partial if partial.exists() else None
            seeds += [json.loads(found.read_text())] if found else []
            continue
        if done.exists() and json.loads(done.read_text()).get("config_hash") == cfg.seed_hash():
            log(f"seed {seed}: reusing {done}")
            seeds.append(json.loads(done.read_text()))
            continue
        rec = {**run_seed(cfg, seed, out / f"seed-{seed}"), "config_hash": cfg.seed_hash()}
        done.write_text(json.dumps(rec, default=str))
        seeds.append(rec)
    summary = {
        "setting": cfg.setting,
        "quick": args.quick,
        "partial": args.partial,
        "config": cfg.model_dump(mode="json"),
        "wall_s": round(max(time.perf_counter() - t0, sum(float(s["wall_s"]) for s in seeds)), 1),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "seeds": seeds,
    }
    write_results(summary, results)
    log(f"{len(seeds)} seed(s) in {summary['wall_s']:.0f} s; results in {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
