"""Unit tests of the paper benchmark's pure measures (congrad_ray.core.measures) and of its offline pieces that need
no Ray: the setting configs, the arms registry, the aggregation over seeds and the Markdown report."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from congrad_ray.core import conflict_rate, lm_loss, lm_loss_by_group, logprob_margin, mean_and_std, token_nll


def test_token_nll_is_the_cross_entropy_of_the_real_tokens(reference_model, tokenizer):
    texts = ["Count from 3 to 7: 3 4 5 6 7", "Zähle von 1 bis 4: 1 2 3 4 und noch ein bisschen mehr Text"]
    tokenizer.padding_side = "right"
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    with torch.no_grad():
        nll, count = token_nll(reference_model, ids, mask)
        for row, text in enumerate(texts):
            alone = tokenizer(text, return_tensors="pt")["input_ids"]
            logits = reference_model(input_ids=alone).logits[0, :-1]
            expected = F.cross_entropy(logits.float(), alone[0, 1:], reduction="sum")
            assert nll[row].item() == pytest.approx(expected.item(), rel=1e-4)
            assert count[row].item() == alone.shape[1] - 1
    # left padding gives the same result (positions come from the mask)
    tokenizer.padding_side = "left"
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        nll_left, count_left = token_nll(reference_model, enc["input_ids"], enc["attention_mask"])
    tokenizer.padding_side = "right"
    assert torch.allclose(nll_left, nll, rtol=1e-4) and torch.equal(count_left, count)


def test_token_nll_loss_mask_and_gradient(reference_model, tokenizer):
    enc = tokenizer(["a b c d e f"], return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    only_last = torch.zeros_like(mask)
    only_last[0, -1] = 1
    with torch.no_grad():
        full, n_full = token_nll(reference_model, ids, mask)
        last, n_last = token_nll(reference_model, ids, mask, only_last)
    assert n_last.item() == 1 and n_full.item() == ids.shape[1] - 1
    assert 0 < last.item() < full.item()
    first_only = torch.zeros_like(mask)
    first_only[0, 0] = 1  # the first token is never predicted
    with torch.no_grad():
        none, n_none = token_nll(reference_model, ids, mask, first_only)
    assert n_none.item() == 0 and none.item() == 0
    params = [p for p in reference_model.parameters()]
    nll, count = token_nll(reference_model, ids, mask)
    grads = torch.autograd.grad((nll.sum() / count.sum()), params[0])
    assert grads[0].abs().sum() > 0


def test_lm_loss_is_a_per_token_micro_average():
    nll = torch.tensor([6.0, 2.0, 9.0])
    count = torch.tensor([3.0, 1.0, 3.0])
    assert lm_loss(nll, count) == pytest.approx(17 / 7)
    by = lm_loss_by_group(nll, count, ["de", "en", "de"])
    assert by == {"de": pytest.approx(15 / 6), "en": pytest.approx(2.0)}
    assert math.isnan(lm_loss(torch.zeros(0), torch.zeros(0)))
    with pytest.raises(ValueError):
        lm_loss_by_group(nll, count, ["de"])


def test_logprob_margin_chosen_rows_first():
    logps = torch.tensor([-4.0, -10.0, -6.0, -5.0])  # chosen: -4, -10; rejected: -6, -5
    lengths = torch.tensor([2, 5, 3, 1])
    raw = logprob_margin(logps, lengths, length_normalized=False)
    assert raw.tolist() == pytest.approx([2.0, -5.0])
    norm = logprob_margin(logps, lengths)
    assert norm.tolist() == pytest.approx([-4 / 2 + 6 / 3, -10 / 5 + 5 / 1])
    assert norm.dtype == torch.float64
    # zero-length completions count as one token
    assert logprob_margin(torch.tensor([-1.0, -2.0]), torch.tensor([0, 0])).tolist() == pytest.approx([1.0])


def test_conflict_rate_overall_and_per_group():
    r = conflict_rate([True, False, False, True, True], ["de", "de", "en", "sw", "sw"])
    assert r["n"] == 5 and r["conflicts"] == 3 and r["rate"] == pytest.approx(0.6)
    assert r["rate/de"] == 0.5 and r["rate/en"] == 0.0 and r["rate/sw"] == 1.0 and r["n/sw"] == 2
    empty = conflict_rate([])
    assert empty["n"] == 0 and math.isnan(empty["rate"])
    with pytest.raises(ValueError):
        conflict_rate([True], ["de", "en"])


def test_mean_and_std_skips_non_finite_values():
    mean, std, n = mean_and_std([0.5, 0.7, float("nan"), 0.6])
    assert (mean, n) == (pytest.approx(0.6), 3) and std == pytest.approx(np.std([0.5, 0.7, 0.6], ddof=1))
    assert mean_and_std([0.3]) == (0.3, 0.0, 1)
    m, s, n = mean_and_std([])
    assert math.isnan(m) and math.isnan(s) and n == 0
    assert mean_and_std({"a": 1.0, "b": 3.0})[0] == 2.0


# --- the harness's offline pieces


def test_settings_load_with_quick_and_overrides():
    from benchmarks.paper.settings import flatten, load_setting
    from congrad_ray.errors import ConfigError

    small = load_setting("small")
    assert len(small.seeds) >= 3 and len(small.corpus.seen) >= 6 and small.corpus.unseen
    assert small.corpus.systematic_language in small.corpus.seen and small.corpus.flip_rate
    quick = load_setting("small", ["train.optim.max_steps=3"], quick=True, seeds=2)
    assert quick.seeds == [0, 1] and "optim.max_steps=3" in flatten(quick.train)
    for name in ("real", "real-gpu", "real-smollm2"):
        cfg = load_setting(name)
        assert cfg.corpus.kind == "prose" and cfg.model.lora is not None
    with pytest.raises(ConfigError):
        load_setting("small", ["corpus.no_such_key=1"])
    with pytest.raises(ConfigError):
        load_setting("no-such-setting")


def test_every_configured_arm_and_ablation_exists():
    from benchmarks.paper import arms
    from benchmarks.paper.settings import load_setting

    for name in ("small", "real", "real-gpu", "real-smollm2"):
        cfg = load_setting(name)
        for arm in [*cfg.arms, *cfg.ablations]:
            assert arms.get(arm).name == arm
    assert {"all", "random", "per_language", "mean", "congrad", "margin"} <= set(arms.ARMS)
    assert arms.get("congrad").sketch_key == arms.get("mean").sketch_key == "base"
    assert arms.get("k512").sketch_key != "base" and arms.needs_total(arms.get("sel_global_top_k"))
    with pytest.raises(KeyError):
        arms.get("nope")


def _fake_summary():
    """Two seeds of a tiny made-up run: what run_seed records, reduced to what the report reads."""
    from benchmarks.paper.settings import load_setting

    cfg = load_setting(
        "small", ["arms=[all, congrad]", "ablations=[k512]", "corpus.seen=[en, de, sw]", "corpus.unseen=[hi]"]
    )
    seeds = []
    for seed, acc in ((0, 0.7), (1, 0.8)):
        stats_in = {"n": 6, "conflicts": 3, "rate": 0.5, "noisy_flip": 1, "systematic": 2}
        sel = {
            "all": {"kind": "all", "stats": {"input": stats_in, "kept": {**stats_in, "rate/de": 0.5}}, "select_s": 0},
            "congrad": {
                "kind": "filter",
                "stats": {"input": stats_in, "kept": {"n": 3, "conflicts": 1, "rate": 1 / 3, "systematic": 1}},
                "sketch": {"seconds": 10.0, "actor_peak_rss_mb": 500},
                "select_s": 2.0,
                "jaccard_vs_congrad": 1.0,
            },
            "k512": {
                "kind": "filter",
                "stats": {
                    "input": stats_in,
                    "kept": {"n": 3, "conflicts": 2, "rate": 2 / 3, "systematic": 1, "noisy_flip": 1},
                },
                "sketch": {"seconds": 8.0},
                "select_s": 1.0,
                "jaccard_vs_congrad": 0.5,
            },
        }
        per = {lg: {"accuracy": acc, "margin": 0.1, "n": 10} for lg in ("en", "de", "sw", "hi")}
        train = {
            name: {
                "per_language": per,
                "seen_accuracy": acc,
                "unseen_accuracy": acc - 0.1,
                "seen_margin": 0.1,
                "unseen_margin": 0.05,
                "tax": {"en": 0.01, "de": 0.02, "sw": 0.03, "hi": 0.0},
                "train_phase": {"seconds": 40.0, "peak_tree_rss_mb": 4000.0, "peak_process_rss_mb": 600.0},
                "global_step": 5,
            }
            for name in ("all", "congrad")
        }
        seeds.append({"seed": seed, "selections": sel, "train": train, "lm_before": {"en": 1.0, "hi": 2.0}})
    return {
        "setting": "small",
        "config": cfg.model_dump(mode="json"),
        "environment": {"cpus": 2},
        "wall_s": 60.0,
        "finished_at": "now",
        "seeds": seeds,
    }


def test_aggregate_and_markdown_report(tmp_path):
    from benchmarks.paper.aggregate import aggregate
    from benchmarks.paper.report import markdown, write_report

    summary = _fake_summary()
    summary["aggregate"] = agg = aggregate(summary)
    g = agg["arms"]["congrad"]
    assert g["seen_accuracy"]["mean"] == pytest.approx(0.75) and g["seen_accuracy"]["n"] == 2
    assert g["seen_accuracy"]["std"] == pytest.approx(np.std([0.7, 0.8], ddof=1))
    assert g["systematic_removed"]["mean"] == pytest.approx(0.5) and g["conflict_kept"]["mean"] == pytest.approx(1 / 3)
    assert agg["roles"] == {"en": "clean", "de": "noisy", "sw": "systematic", "hi": "unseen"}
    assert agg["ablations"]["k512"]["noisy_removed"]["mean"] == 0.0
    text = markdown(summary)
    assert "## Main results" in text and "ConGrad (PCGrad)" in text and "0.750 ± 0.071" in text
    assert "## Ablations" in text and "sketch k = 512" in text
    write_report(summary, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"results.json", "results.md", "accuracy.png", "cost.png"}


# --- the real setting's prose corpus, on a dataset-build-like tree (the real package is optional)


def _fake_dataset_build(root, langs):
    for lang, iso3 in langs.items():
        paras = [
            " ".join(f"{lang}{p}w{i}" for i in range(30)) for p in range(25)
        ]  # distinct words: every continuation is traceable to its paragraph
        (root / iso3).mkdir(parents=True)
        (root / iso3 / f"{iso3}.txt").write_text("Preamble of the generator.\n\n# Heading\n\n" + "\n\n".join(paras))
    return root


def test_prose_corpus_ground_truth_and_disjoint_splits(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from benchmarks.paper.corpora import build_prose_corpus
    from benchmarks.paper.settings import CorpusConfig
    from congrad_ray.selfreward import prompts

    data = _fake_dataset_build(tmp_path / "db", {"fr": "fra", "de": "deu", "sw": "swa", "it": "ita"})
    monkeypatch.setattr(prompts, "prose_corpus_dir", lambda: data)
    c = CorpusConfig(
        kind="prose",
        seen=["fr", "de", "sw"],
        unseen=["it"],
        pairs_per_language=20,
        heldout_per_language=4,
        prose_per_language=3,
        flip_rate={"de": 0.25},
        systematic_language="sw",
        prompt_words=6,
        continuation_words=4,
    )
    truth, prose = build_prose_corpus(c, seed=3, out=tmp_path / "out")
    train = pq.read_table(tmp_path / "out" / "train").to_pylist()
    held = pq.read_table(tmp_path / "out" / "heldout").to_pylist()
    assert len(train) == 60 and {r["lang"] for r in train} == {"fr", "de", "sw"}
    assert len(held) == 16 and not any(r["is_flipped"] for r in held)
    by = {lang: [r for r in train if r["lang"] == lang] for lang in ("fr", "de", "sw")}
    assert sum(r["conflict"] == "noisy_flip" for r in by["de"]) == 5 == truth["languages"]["de"]["train"]["noisy_flip"]
    assert all(r["conflict"] == "systematic" and r["is_flipped"] for r in by["sw"])
    assert not any(r["is_flipped"] for r in by["fr"])
    # the true continuation follows its prompt in one paragraph; the corrupted one does not
    for r in by["fr"]:
        words = (r["prompt"] + r["chosen"]).split()
        para = int(words[0][2:].split("w")[0])
        start = int(words[0].split("w")[1])
        assert words == [f"fr{para}w{i}" for i in range(start, start + 10)]
        assert (r["prompt"] + r["rejected"]).split() != words

    # prose, held-out and train paragraphs are disjoint per language
    def paras_of(rows):
        return {(r["lang"], r["prompt"].split()[0].rsplit("w", 1)[0]) for r in rows}

    assert not paras_of(held) & paras_of(train)
    prose_keys = {(lang, text.split()[0].rsplit("w", 1)[0]) for lang, text in prose}
    assert not prose_keys & (paras_of(held) | paras_of(train)) and len(prose) == 12
    # seeded: the same seed rebuilds the same corpus, another seed another one
    again, _ = build_prose_corpus(c, seed=3, out=tmp_path / "again")
    assert pq.read_table(tmp_path / "again" / "train").to_pylist() == train and again == truth
    build_prose_corpus(c, seed=4, out=tmp_path / "other")
    assert pq.read_table(tmp_path / "other" / "train").to_pylist() != train
