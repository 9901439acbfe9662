"""The paper benchmark's issue-15 pieces that need no Ray: the two training protocols, the paired intervals and the
diagnosis in the aggregate and the report, and the self-rewarding setting's config, round-1 sharing and report."""

from __future__ import annotations

import json

import pytest


def test_equal_epochs_matches_the_steps_of_all_data_and_halves_a_half():
    from benchmarks.paper.training import epochs_for, protocol_overrides
    from congrad_ray.train import load_train_config
    from congrad_ray.train.run import max_steps

    tcfg = load_train_config(
        None, ["optim.max_steps=16", "optim.batch_size=8", "scaling.num_workers=1"], check_paths=False
    )
    assert epochs_for(tcfg, 288) == pytest.approx(16 * 8 / 288)
    assert protocol_overrides(tcfg, "steps", 288) == []
    epochs = load_train_config(
        None,
        ["optim.batch_size=8", "scaling.num_workers=1", *protocol_overrides(tcfg, "epochs", 288)],
        check_paths=False,
    )
    assert epochs.optim.max_steps is None
    assert max_steps(epochs, 288) == 16 and max_steps(epochs, 144) == 8
    with pytest.raises(ValueError, match="protocol"):
        protocol_overrides(tcfg, "tokens", 288)


def _summary_with_pairs():
    from benchmarks.paper.settings import load_setting

    cfg = load_setting(
        "small",
        ["arms=[all, congrad, margin]", "ablations=[]", "corpus.seen=[en, sw]", "corpus.unseen=[hi]",
         "protocols=[steps, epochs]", "bootstrap=200"],
    )  # fmt: skip
    langs = ["en"] * 4 + ["hi"] * 4 + ["sw"] * 4
    seeds = []
    for seed in (0, 1):
        stats = {"input": {"n": 8, "conflicts": 4, "rate": 0.5}, "kept": {"n": 4, "conflicts": 1, "rate": 0.25}}
        diag = {"en": {"n": 4, "kept": 2, "before": 0.5, "after": 0.6, "others": 0.4, "auroc": 0.9, "conflicting": 1,
                       "conflicting_kept": 0}}  # fmt: skip
        sel = {
            a: {"kind": "filter", "stats": stats, "select_s": 0.0, "diagnosis": diag}
            for a in ("all", "congrad", "margin")
        }
        records = {}
        for key, better in (("train", 1.0), ("train_epochs", 0.5)):
            records[key] = {}
            for arm, margin in (("all", -1.0), ("congrad", better), ("margin", -1.0)):
                per = {
                    lg: {"accuracy": 1.0 if margin > 0 else 0.0, "margin": margin, "n": 4} for lg in ("en", "hi", "sw")
                }
                records[key][arm] = {
                    "per_language": per,
                    "seen_accuracy": per["en"]["accuracy"],
                    "unseen_accuracy": per["hi"]["accuracy"],
                    "seen_margin": margin,
                    "unseen_margin": margin,
                    "tax": {},
                    "train_phase": {"seconds": 1.0},
                    "global_step": 4,
                    "heldout_pairs": {"id": [f"{seed}-{i}" for i in range(12)], "lang": langs, "margin": [margin] * 12},
                }
        seeds.append({"seed": seed, "selections": sel, **records, "lm_before": {"en": 1.0}})
    return {"setting": "small", "config": cfg.model_dump(mode="json"), "environment": {}, "wall_s": 1.0,
            "finished_at": "now", "seeds": seeds}  # fmt: skip


def test_aggregate_reports_both_protocols_intervals_and_diagnosis():
    from benchmarks.paper.aggregate import aggregate
    from benchmarks.paper.report import markdown

    summary = _summary_with_pairs()
    summary["aggregate"] = agg = aggregate(summary)
    assert set(agg["protocols"]) == {"steps", "epochs"}
    assert agg["arms"]["congrad"]["all_accuracy"]["mean"] == 1.0
    iv = agg["intervals"]["steps"]["congrad"]["all"]["all"]
    assert (iv["estimate"], iv["low"], iv["high"]) == (1.0, 1.0, 1.0)
    assert agg["intervals"]["steps"]["congrad"]["margin"]["seen"]["estimate"] == 1.0
    assert agg["diagnosis"]["congrad"]["en"]["auroc"]["mean"] == pytest.approx(0.9)
    text = markdown(summary)
    assert "## Equal optimizer steps" in text and "## Equal epochs" in text
    assert "**+1.000 [+1.000, +1.000]**" in text and "## Per-language diagnosis" in text


def test_selfreward_setting_loads_and_round_one_is_shared(tmp_path):
    from benchmarks.paper.selfreward import CONFIG_DIR, SHARED_STAGES, load, seed_round_one

    cfg = load(CONFIG_DIR / "selfreward.yaml", [], quick=False, seeds=None)
    assert len(cfg.seeds) >= 3 and cfg.rounds == 2 and len(cfg.corpus.seen) >= 6
    assert {"all", "random", "margin", "congrad"} <= set(cfg.arms) and not cfg.corpus.flip_rate
    quick = load(CONFIG_DIR / "selfreward.yaml", [], quick=True, seeds=None)
    assert quick.rounds == 1 and quick.iterate["generation"]["max_new_tokens"] == 6
    assert quick.seed_hash() != cfg.seed_hash()
    shared, arm = tmp_path / "shared", tmp_path / "arm"
    (shared / "round-01" / "_state").mkdir(parents=True)
    (shared / "round-01" / "pairs").mkdir()
    (shared / "prompts.parquet").write_text("pool")
    (shared / "round-01" / "pairs" / "part-00000.parquet").write_text("pairs")
    for name in ("prompts.parquet", "candidates.parquet", "judgements.parquet", "dropped_prompts.parquet"):
        (shared / "round-01" / name).write_text(name)
    for stage in (*SHARED_STAGES, "filter"):
        (shared / "round-01" / "_state" / f"{stage}.json").write_text(json.dumps({"stage": stage}))
    seed_round_one(shared, arm)
    assert sorted(p.stem for p in (arm / "round-01" / "_state").iterdir()) == sorted(SHARED_STAGES)
    assert (arm / "round-01" / "pairs" / "part-00000.parquet").read_text() == "pairs"
    assert (arm / "prompts.parquet").exists() and not (arm / "round-01" / "filter").exists()


def _made_up_selfreward_summary(cfg, rounds_done: int, partial: bool = False) -> dict:
    """A summary of a self-rewarding run whose arms finished ``rounds_done`` rounds (all 0.5, congrad 0.75 acc)."""
    langs = [*cfg.corpus.seen, *cfg.corpus.unseen]
    seeds = []
    for seed in cfg.seeds:
        base = {"lm": {lg: 2.0 for lg in langs}}
        arms = {}
        for arm, acc in (("all", 0.5), ("congrad", 0.75)):
            per = {lg: {"accuracy": acc} for lg in langs}
            margins = [1.0 if i % 4 < acc * 4 else -1.0 for i in range(4 * len(langs))]
            pairs = {"id": [str(i) for i in range(len(margins))], "lang": [lg for lg in langs for _ in range(4)],
                     "margin": margins}  # fmt: skip
            diag = {"en": {"n": 8, "kept": 4, "before": 0.3, "after": 0.5, "others": 0.2, "auroc": 0.6}}
            arms[arm] = [{"eval": {"per_language": per}, "lm": {lg: 2.1 for lg in langs}, "heldout_pairs": pairs,
                          "pairs": 8, "kept": 4, "conflicting": 2, "conflicting_kept": 1, "diagnosis": diag}
                         ] * rounds_done  # fmt: skip
        seeds.append({"seed": seed, "base": base, "arms": arms, "wall_s": 10.0, "load_avg_1m": 1.0})
    return {"setting": "selfreward", "config": cfg.model_dump(mode="json"), "wall_s": 20.0, "finished_at": "now",
            "partial": partial, "seeds": seeds}  # fmt: skip


def test_selfreward_report_from_a_made_up_run(tmp_path):
    from benchmarks.paper.selfreward import CONFIG_DIR, load
    from benchmarks.paper.selfreward_report import write_results

    cfg = load(CONFIG_DIR / "selfreward.yaml", ["rounds=1", "arms={all: [], congrad: []}"], quick=False, seeds=2)
    write_results(_made_up_selfreward_summary(cfg, rounds_done=1), tmp_path)
    agg = json.loads((tmp_path / "results.json").read_text())["aggregate"]
    assert agg["arms"]["congrad"][0]["all_accuracy"]["mean"] == pytest.approx(0.75)
    assert agg["arms"]["congrad"][0]["tax_seen"]["mean"] == pytest.approx(0.1)
    assert agg["intervals"]["congrad"]["all"]["1"]["all"]["estimate"] == pytest.approx(0.25)
    text = (tmp_path / "results.md").read_text()
    assert "## After round 1" in text and "ConGrad (PCGrad) − No filter (all pairs)" in text


def test_selfreward_partial_report_shows_the_finished_rounds_only(tmp_path):
    """``--partial`` in the middle of round 2: round 1 is reported whole, round 2 has no figures and no intervals."""
    from benchmarks.paper.selfreward import CONFIG_DIR, load
    from benchmarks.paper.selfreward_report import write_results

    cfg = load(CONFIG_DIR / "selfreward.yaml", ["rounds=2", "arms={all: [], congrad: []}"], quick=False, seeds=1)
    write_results(_made_up_selfreward_summary(cfg, rounds_done=1, partial=True), tmp_path)
    agg = json.loads((tmp_path / "results.json").read_text())["aggregate"]
    assert agg["arms"]["congrad"][0]["all_accuracy"]["mean"] == pytest.approx(0.75)
    assert agg["arms"]["congrad"][1] == {}
    assert set(agg["intervals"]["congrad"]["all"]) == {"1"}
    assert agg["diagnosis"]["1"]["en"]["auroc"]["mean"] == pytest.approx(0.6) and agg["diagnosis"]["2"] == {}
    text = (tmp_path / "results.md").read_text()
    assert "**Partial**" in text and "## After round 1" in text
