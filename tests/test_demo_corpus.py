"""The seeded multilingual demo corpus: determinism, ground truth, held-out disjointness, Parquet round trips."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import statistics
import unicodedata
from collections import Counter

import pytest

from congrad_ray.demo import (
    COLUMNS,
    CORRUPTIONS,
    DEMO_LANGUAGES,
    TEMPLATES,
    CorpusSpec,
    default_demo_spec,
    demo_tokenizer_corpus,
    generate_pairs,
    write_corpus,
)
from congrad_ray.demo.writing import fingerprint

SMALL = CorpusSpec(
    seed=3,
    seen_languages=("en", "fr", "ru", "zh", "ar", "sw"),
    unseen_languages=("hi", "ja"),
    pairs_per_language=60,
    heldout_per_language=12,
    flip_rate={"fr": 0.25, "zh": 0.1},
    systematic_language="ar",
)


@pytest.fixture(scope="module")
def demo_rows():
    return generate_pairs(default_demo_spec())


def numbers(text: str) -> list[int]:
    return [int(x) for x in text.split()]


def prompt_range(prompt: str) -> tuple[int, int]:
    a, b = sorted(int(x) for x in re.findall(r"\d+", prompt))  # one template names the end first
    return a, b


# ---------------------------------------------------------------------------------------------- determinism and ids


def test_same_spec_gives_identical_rows_and_other_seed_differs():
    a, b = generate_pairs(SMALL), generate_pairs(CorpusSpec(**SMALL.to_dict()))
    assert a == b
    assert fingerprint(a) == fingerprint(b)
    other = generate_pairs(dataclasses.replace(SMALL, seed=4))
    assert fingerprint(other) != fingerprint(a)
    assert [r["prompt"] for r in other] != [r["prompt"] for r in a]


def test_ids_unique_stable_and_prefix_stable():
    rows = generate_pairs(SMALL)
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"s3-[a-z]{2}-(train|heldout)-\d{5}", i) for i in ids)
    assert rows[0]["id"] == "s3-en-train-00000"
    # Growing the corpus or dropping a language keeps every other row's content (flips aside).
    bigger = dataclasses.replace(SMALL, pairs_per_language=90, flip_rate={}, systematic_language=None)
    fewer = dataclasses.replace(SMALL, seen_languages=("ru", "zh"), flip_rate={"zh": 0.1}, systematic_language=None)
    by_id = {r["id"]: r for r in generate_pairs(bigger)}
    for r in rows:
        big = by_id[r["id"]]
        task, other = (r["rejected"], r["chosen"]) if r["is_flipped"] else (r["chosen"], r["rejected"])
        assert big["prompt"] == r["prompt"] and big["chosen"] == task
        if r["conflict"] != "systematic":
            assert big["rejected"] == other and big["corruption"] == r["corruption"]
    fewer_by_id = {r["id"]: r for r in generate_pairs(fewer)}
    kept = [r for r in rows if r["lang"] in ("ru", "zh")]
    assert kept and all(fewer_by_id[r["id"]] == r for r in kept)


def test_counts_per_language_and_schema():
    rows = generate_pairs(SMALL)
    assert all(tuple(r) == COLUMNS for r in rows)
    counts = Counter((r["lang"], r["split"]) for r in rows)
    for lang in SMALL.seen_languages:
        assert counts[(lang, "train")] == 60
    for lang in SMALL.languages:
        assert counts[(lang, "heldout")] == 12
    for lang in SMALL.unseen_languages:
        assert counts[(lang, "train")] == 0
    assert len(rows) == 6 * 60 + 8 * 12
    for r in rows:
        assert isinstance(r["is_flipped"], bool)
        assert r["conflict"] in ("none", "noisy_flip", "systematic")
        assert r["corruption"] in CORRUPTIONS
        assert r["split"] in ("train", "heldout")


# --------------------------------------------------------------------------------------------------- ground truth


def test_labels_follow_the_shared_task_unless_flipped(demo_rows):
    for r in demo_rows:
        assert r["chosen"] != r["rejected"]
        assert r["chosen"].startswith(" ") and r["rejected"].startswith(" ")
        a, b = prompt_range(r["prompt"])
        good = list(range(a, b + 1))
        assert 3 <= len(good) <= 5
        task_answer, other = (r["rejected"], r["chosen"]) if r["is_flipped"] else (r["chosen"], r["rejected"])
        assert numbers(task_answer) == good
        assert numbers(other) != good
        assert (r["conflict"] != "none") == r["is_flipped"]


def test_flip_rate_matches_spec_exactly(demo_rows):
    spec = default_demo_spec()
    for lang in spec.seen_languages:
        train = [r for r in demo_rows if r["lang"] == lang and r["split"] == "train"]
        flipped = sum(r["is_flipped"] for r in train)
        if lang == spec.systematic_language:
            continue
        rate = spec.flip_rate.get(lang, 0.0)
        assert flipped == round(rate * len(train))
        assert abs(flipped / len(train) - rate) <= 0.01
        expected = "noisy_flip" if rate > 0 else "none"
        assert {r["conflict"] for r in train if r["is_flipped"]} <= {expected}


def test_systematic_language_entirely_flipped_to_descending(demo_rows):
    lang = default_demo_spec().systematic_language
    train = [r for r in demo_rows if r["lang"] == lang and r["split"] == "train"]
    assert train
    for r in train:
        assert r["is_flipped"] and r["conflict"] == "systematic" and r["corruption"] == "descending"
        assert numbers(r["chosen"]) == sorted(numbers(r["chosen"]), reverse=True)
        assert numbers(r["rejected"]) == numbers(r["chosen"])[::-1]
    assert not any(r["conflict"] == "systematic" for r in demo_rows if r["lang"] != lang)


def test_corruption_kinds_are_all_used(demo_rows):
    kinds = Counter(r["corruption"] for r in demo_rows if r["lang"] == "en")
    assert set(kinds) == set(CORRUPTIONS)
    assert min(kinds.values()) > 0.1 * sum(kinds.values())


def test_heldout_is_clean_and_disjoint_from_train(demo_rows):
    train = [r for r in demo_rows if r["split"] == "train"]
    heldout = [r for r in demo_rows if r["split"] == "heldout"]
    assert {r["lang"] for r in heldout} == set(default_demo_spec().languages)
    assert not any(r["is_flipped"] or r["conflict"] != "none" for r in heldout)
    assert not {r["id"] for r in train} & {r["id"] for r in heldout}
    assert not {(r["prompt"], r["chosen"]) for r in train} & {(r["prompt"], r["chosen"]) for r in heldout}
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in heldout}
    # Stricter: no number range of a held-out prompt appears in any train prompt of any language.
    assert not {prompt_range(r["prompt"]) for r in train} & {prompt_range(r["prompt"]) for r in heldout}


def test_train_prompts_mostly_distinct(demo_rows):
    for lang in default_demo_spec().seen_languages:
        prompts = [r["prompt"] for r in demo_rows if r["lang"] == lang and r["split"] == "train"]
        assert len(set(prompts)) == len(prompts)


# ------------------------------------------------------------------------------------------------- spec and langs


def test_default_demo_spec_sizes():
    spec = default_demo_spec()
    assert 6 <= len(spec.seen_languages) <= 8 and len(spec.unseen_languages) >= 2
    assert 2000 <= len(spec.seen_languages) * spec.pairs_per_language <= 5000
    assert len(spec.flip_rate) == 2 and all(0.1 <= v <= 0.2 for v in spec.flip_rate.values())
    assert spec.systematic_language in spec.seen_languages
    assert spec == CorpusSpec() and hash(spec) == hash(CorpusSpec())
    assert CorpusSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


@pytest.mark.parametrize(
    "changes",
    [
        {"seen_languages": ("en", "xx")},
        {"unseen_languages": ("en",)},
        {"flip_rate": {"hi": 0.1}},
        {"flip_rate": {"en": 1.5}},
        {"systematic_language": "hi"},
        {"flip_rate": {"sw": 0.1}},
        {"sequence_lengths": (2, 3)},
        {"corruptions": ("sideways",)},
        {"pairs_per_language": -1},
        {"heldout_range_fraction": 0.0},
    ],
)
def test_invalid_specs_are_refused(changes):
    with pytest.raises(ValueError):
        dataclasses.replace(default_demo_spec(), **changes)


SCRIPT_PREFIXES = {
    "Latin": ("LATIN",),
    "Cyrillic": ("CYRILLIC",),
    "Han": ("CJK UNIFIED IDEOGRAPH",),
    "Japanese": ("CJK UNIFIED IDEOGRAPH", "HIRAGANA", "KATAKANA"),
    "Hangul": ("HANGUL",),
    "Arabic": ("ARABIC",),
    "Devanagari": ("DEVANAGARI",),
}
ENGLISH_WORDS = {"count", "from", "to", "the", "numbers", "write", "list", "please", "order", "and"}


def test_every_language_is_real_text_in_its_script():
    assert set(TEMPLATES) == set(DEMO_LANGUAGES)
    seen_templates: set[str] = set()
    for lang, templates in TEMPLATES.items():
        info = DEMO_LANGUAGES[lang]
        assert info.code == lang and info.script in SCRIPT_PREFIXES
        assert len(templates) >= 4
        for template in templates:
            assert "{a}" in template and "{b}" in template
            assert template not in seen_templates
            seen_templates.add(template)
            text = template.format(a="", b="")
            letters = [ch for ch in text if unicodedata.category(ch)[0] in "LM"]
            assert len(letters) >= 2, (lang, template)
            in_script = [ch for ch in letters if unicodedata.name(ch).startswith(SCRIPT_PREFIXES[info.script])]
            assert len(in_script) == len(letters), (lang, template)
            if lang != "en":
                words = set(re.findall(r"\w+", text.lower()))
                assert not words & ENGLISH_WORDS, (lang, template, words & ENGLISH_WORDS)
        if info.script == "Japanese":
            assert all(any(unicodedata.name(ch).startswith("HIRAGANA") for ch in t) for t in templates)


# ------------------------------------------------------------------------------------------------ files on disk


def test_write_corpus_parquet_round_trip(tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "demo"
    summary = write_corpus(SMALL, out, shards=4)
    train_files = sorted((out / "train").glob("*.parquet"))
    assert [p.name for p in train_files] == [f"part-{k:05d}.parquet" for k in range(4)]
    assert [p.name for p in (out / "heldout").glob("*.parquet")] == ["part-00000.parquet"]
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]

    rows = generate_pairs(SMALL)
    tables = [pq.read_table(p) for p in train_files]
    assert all(t.schema.names == list(COLUMNS) for t in tables)
    assert all(t.num_rows > 0 for t in tables)
    read_train = [r for t in tables for r in t.to_pylist()]
    read_heldout = pq.read_table(out / "heldout").to_pylist()
    expected_train = sorted((r for r in rows if r["split"] == "train"), key=lambda r: r["id"])
    assert sorted(read_train, key=lambda r: r["id"]) == expected_train
    assert sorted(read_heldout, key=lambda r: r["id"]) == sorted(
        (r for r in rows if r["split"] == "heldout"), key=lambda r: r["id"]
    )
    # Every shard mixes languages (the train rows are shuffled before sharding).
    assert all(len(set(t.column("lang").to_pylist())) > 1 for t in tables)

    on_disk = json.loads((out / "ground_truth.json").read_text(encoding="utf-8"))
    assert on_disk == json.loads(json.dumps(summary))
    assert summary["n_train"] == 360 and summary["n_heldout"] == 96
    assert summary["fingerprint"] == fingerprint(read_train + read_heldout)
    fr = summary["languages"]["fr"]["train"]
    assert fr["noisy_flip"] == 15 and fr["none"] == 45 and fr["systematic"] == 0
    assert summary["languages"]["ar"]["train"]["systematic"] == 60
    assert summary["languages"]["ja"]["train"]["total"] == 0 and summary["languages"]["ja"]["role"] == "unseen"

    # Rewriting with fewer shards leaves no stale shard behind, and the same content.
    again = write_corpus(SMALL, out, shards=2)
    assert sorted(p.name for p in (out / "train").glob("*.parquet")) == ["part-00000.parquet", "part-00001.parquet"]
    assert again["fingerprint"] == summary["fingerprint"]
    assert pq.read_table(out / "train").num_rows == 360


def test_write_corpus_is_byte_deterministic(tmp_path):
    write_corpus(SMALL, tmp_path / "a", shards=3)
    write_corpus(SMALL, tmp_path / "b", shards=3)
    for rel in ["train/part-00000.parquet", "train/part-00002.parquet", "heldout/part-00000.parquet"]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_load_dataset_parquet_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    out = tmp_path / "demo"
    write_corpus(SMALL, out, shards=4)
    files = {
        "train": sorted(str(p) for p in (out / "train").glob("*.parquet")),
        "heldout": [str(out / "heldout" / "part-00000.parquet")],
    }
    ds = datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "hf-cache"))
    assert ds["train"].num_rows == 360 and ds["heldout"].num_rows == 96
    assert list(ds["train"].column_names) == list(COLUMNS)
    assert ds["train"].features["is_flipped"].dtype == "bool"
    expected = {r["id"]: r for r in generate_pairs(SMALL)}
    for row in ds["train"]:
        assert row == expected[row["id"]]


def test_cli_writes_the_demo(tmp_path, capsys):
    from congrad_ray.demo.__main__ import main

    assert main([str(tmp_path / "cli"), "--pairs-per-language", "20", "--heldout-per-language", "5"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["n_train"] == 8 * 20 and printed["n_heldout"] == 10 * 5
    assert (tmp_path / "cli" / "ground_truth.json").exists()


# ------------------------------------------------------------------------------------------------ token lengths


def _token_lengths(tokenizer, rows):
    """Prompt and completion (+EOS, as TRL appends it) lengths; the prompt's tokens prefix the full sequence."""
    eos = tokenizer.eos_token
    prompts, completions = [], []
    for r in rows:
        p = tokenizer(r["prompt"])["input_ids"]
        prompts.append(len(p))
        for side in ("chosen", "rejected"):
            full = tokenizer(r["prompt"] + r[side] + eos)["input_ids"]
            assert full[: len(p)] == p
            completions.append(len(full) - len(p))
    return prompts, completions


def test_tiny_tokenizer_lengths_are_small(demo_rows):
    from congrad_ray.models import SEED_CORPUS, build_tiny_tokenizer

    report = {}
    for name, tok in {
        "default": build_tiny_tokenizer(),
        "with_demo_corpus": build_tiny_tokenizer(list(SEED_CORPUS) + demo_tokenizer_corpus()),
    }.items():
        prompts, completions = _token_lengths(tok, demo_rows)
        report[name] = {
            "prompt_mean": round(statistics.mean(prompts), 1),
            "prompt_max": max(prompts),
            "completion_mean": round(statistics.mean(completions), 1),
            "completion_max": max(completions),
        }
    print("demo token lengths:", json.dumps(report))
    assert report["default"]["prompt_max"] <= 48 and report["default"]["completion_max"] <= 20
    assert report["default"]["prompt_mean"] <= 36 and report["default"]["completion_mean"] <= 14
    assert report["with_demo_corpus"]["prompt_max"] <= 40 and report["with_demo_corpus"]["completion_max"] <= 14


def test_generation_is_fast():
    import time

    start = time.perf_counter()
    generate_pairs(default_demo_spec())
    assert time.perf_counter() - start < 5.0
    assert os.environ.get("HF_DATASETS_OFFLINE") == "1"
