"""Self-rewarding loop, pure parts: judge-score parsing, averaging over k, pair rules, templates, prompt pools."""

from __future__ import annotations

import pytest

from congrad_ray.core.judge import parse_score, summarize_scores
from congrad_ray.core.pairs import Candidate, PairRules, choose_pair, merge_duplicates, pair_id

# ---------------------------------------------------------------------------------------------------------------
# judge parsing: hand-written judge outputs


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ("Score: 4", 4.0),
        ("4/5", 4.0),
        ("**Score**: 3 points", 3.0),
        ("Score:** 4 **", 4.0),
        ("score = 2", 2.0),
        ("The answer is relevant (1 point) and addresses most of it (1 point).\nScore: 2", 2.0),
        ("Criterion 1: 1 point. Criterion 3: 1 point. Final score: 3/5.", 3.0),
        ("Total score: 5 - an excellent answer.", 5.0),
        ("The response deserves a score of 4.", 4.0),
        ("Score (out of 5): 3", 3.0),
        ("I rate it 4 out of 5.", 4.0),
        ("4", 4.0),
        ("  3.  ", 3.0),
        ("Score: 2\nOn reflection, Score: 3", 3.0),  # the last verdict counts
        ("Punktzahl: 4", 4.0),
        ("Note finale : 3/5", 3.0),
        ("Puntuación: 3,5", 3.5),
        ("Оценка: 5/5", 5.0),
        ("Ответ неполный. Итоговая оценка: 2", 2.0),
        ("因此总分：4", 4.0),
        ("评分：３分", 3.0),  # full-width digit
        ("スコア: 1", 1.0),
        ("점수: 2", 2.0),
        ("النتيجة: ٤", 4.0),  # Arabic-Indic digit
        ("स्कोर: ३", 3.0),  # Devanagari digit
        ("Alama: 2", 2.0),
        ("Điểm: 0", 0.0),
    ],
)
def test_parse_score_reads_the_verdict(text, score):
    parsed = parse_score(text)
    assert (parsed.score, parsed.status) == (score, "ok")


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        (None, "empty"),
        ("asdf qwer zxcv", "no_score"),
        ("ĠĠ�\x12 kwa Hund", "no_score"),
        ("The response is good.", "no_score"),
        ("3 or 4", "no_score"),  # several numbers, no label: never guessed
        ("It meets criteria 1 and 2 but not 3.", "no_score"),
        ("Score: 7", "out_of_range"),
        ("Score: -1", "no_score"),  # a minus sign is not a score
        ("6/5", "out_of_range"),
        ("Score: 8/10", "wrong_scale"),
        ("7/10", "wrong_scale"),
        ("2/5 at first, then 4/5", "ambiguous"),
    ],
)
def test_parse_score_failures_are_recorded_not_guessed(text, status):
    parsed = parse_score(text)
    assert parsed.score is None and parsed.status == status


def test_parse_score_other_scales():
    assert parse_score("Score: 8/10", 1, 10).score == 8.0
    assert parse_score("Score: 0", 1, 10).status == "out_of_range"


def test_summarize_scores_averages_readable_judgements_only():
    s = summarize_scores([4.0, None, 2.0])
    assert (s.mean, s.n_valid, s.n_failed) == (3.0, 2, 1)
    assert summarize_scores([None, None]).mean is None
    assert summarize_scores([]).mean is None
    assert summarize_scores([5.0, None, None], min_valid=2).mean is None  # too few readable
    assert summarize_scores([5.0, 3.0, None], min_valid=2).mean == 4.0
    assert summarize_scores([float("nan"), 1.0]).mean == 1.0


# ---------------------------------------------------------------------------------------------------------------
# pair rules


def cands(*specs):
    """(score, text, length) per candidate, index = position."""
    return [Candidate(i, text, score, length) for i, (score, text, length) in enumerate(specs)]


def test_best_vs_worst_with_lowest_index_on_ties():
    d = choose_pair(cands((3.0, "a", 5), (5.0, "b", 9), (1.0, "c", 2), (5.0, "d", 1), (1.0, "e", 7)))
    assert (d.reason, d.chosen, d.rejected, d.gap) == ("ok", 1, 2, 4.0)
    assert d.kept and pair_id(2, "p7", d.chosen, d.rejected) == "r02-p7-c1-r2"


@pytest.mark.parametrize(
    ("specs", "reason"),
    [
        ([], "no_candidates"),
        ([(4.0, "a", 1), (2.0, "  ", 1)], "empty_candidates"),
        ([(None, "a", 1), (None, "b", 1), (None, "c", 1)], "all_judgements_failed"),
        ([(3.0, "a", 1), (None, "b", 1)], "too_few_scored"),
        ([(3.0, "a", 1), (3.0, "b", 1), (None, "c", 1)], "tie"),
        ([(3.0, "a", 1), (2.5, "b", 1)], "gap_below_min"),
    ],
)
def test_drop_reasons(specs, reason):
    d = choose_pair(cands(*specs), PairRules(min_gap=1.0))
    assert d.reason == reason and not d.kept


def test_min_gap_is_inclusive_despite_float_rounding():
    d = choose_pair(cands((13 / 3, "a", 1), (10 / 3, "b", 1)), PairRules(min_gap=1.0))
    assert d.reason == "ok"


def test_duplicate_texts_are_one_candidate_with_the_mean_score():
    merged = merge_duplicates(cands((5.0, "same", 3), (1.0, "other", 3), (3.0, "same", 3)))
    assert [(c.index, c.score) for c in merged] == [(0, 4.0), (1, 1.0)]
    # without merging, "same" would be both chosen (5) and rejected (1 is "other", fine) -> here: 4 vs 1
    d = choose_pair(cands((5.0, "same", 3), (1.0, "other", 3), (3.0, "same", 3)))
    assert (d.chosen, d.rejected, d.chosen_score) == (0, 1, 4.0)
    assert choose_pair(cands((5.0, "x", 1), (1.0, "x", 1))).reason == "empty_candidates"  # one distinct text


def test_length_control_prefers_short_chosen_and_long_rejected():
    specs = ((5.0, "long best", 50), (4.5, "short near-best", 10), (1.0, "short worst", 5), (1.5, "long bad", 40))
    plain = choose_pair(cands(*specs))
    assert (plain.chosen, plain.rejected) == (0, 2)
    lc = choose_pair(cands(*specs), PairRules(length_control=True, tolerance=0.5))
    assert (lc.chosen, lc.rejected, lc.gap) == (1, 3, 3.0)
    strict = choose_pair(cands(*specs), PairRules(length_control=True, tolerance=0.0))
    assert (strict.chosen, strict.rejected) == (0, 2)
    # a tolerance wide enough to overlap never pairs a candidate with one scored as high
    wide = PairRules(length_control=True, tolerance=5.0)
    assert choose_pair(cands((3.0, "a", 9), (2.0, "b", 1)), wide).reason == "tie"


def test_length_ratio_drops_length_biased_pairs():
    specs = ((5.0, "long", 100), (1.0, "short", 10))
    assert choose_pair(cands(*specs), PairRules(max_length_ratio=3.0)).reason == "length_ratio"
    assert choose_pair(cands(*specs), PairRules(max_length_ratio=20.0)).reason == "ok"


# ---------------------------------------------------------------------------------------------------------------
# templates, pairs table, prompt pools


def test_templates_fill_once_and_validate(tmp_path):
    from congrad_ray.selfreward.templates import fill, resolve_template, template_problems

    text = fill("Q ({language}, {lang}): {prompt}\nA: {response}", "say {response}", "{prompt}!", "fr")
    assert text == "Q (French, fr): say {response}\nA: {prompt}!"
    assert "{prompt}" in resolve_template("builtin:additive-5") and "Score:" in resolve_template("builtin:short-5")
    (tmp_path / "fr.txt").write_text("Évalue : {prompt} / {response}. Score: ")
    assert template_problems("builtin:additive-5", {"fr": "file:fr.txt"}, tmp_path) == []
    problems = template_problems("builtin:nope", {"de": "Bewerte {prompt}", "sw": "file:missing.txt"}, tmp_path)
    assert len(problems) == 3 and "lacks {response}" in problems[1] and "not found" in problems[2]


def test_build_pairs_contract_and_dropped_reasons():
    from congrad_ray.config import FilterConfig  # noqa: F401  (the contract: columns the filter reads)
    from congrad_ray.selfreward.config import PairsSection
    from congrad_ray.selfreward.pairing import build_pairs

    def cand(pid, lang, i, text):
        return {"prompt_id": pid, "lang": lang, "instruction": f"q {pid}", "prompt": f"<u>q {pid}</u>",
                "candidate_index": i, "text": text, "n_tokens": len(text)}  # fmt: skip

    candidates = [cand("a", "en", i, t) for i, t in enumerate(["good", "bad", "ok"])]
    candidates += [cand("b", "fr", i, t) for i, t in enumerate(["x", "y"])]
    candidates += [cand("c", "de", i, t) for i, t in enumerate(["u", "v"])]
    scores = {("a", 0): [5, 4], ("a", 1): [1, None], ("a", 2): [3, 3], ("b", 0): [2, 2], ("b", 1): [2, 2],
              ("c", 0): [None, None], ("c", 1): [None, None]}  # fmt: skip
    judgements = [{"prompt_id": p, "candidate_index": i, "score": s} for (p, i), ss in scores.items() for s in ss]
    pairs, dropped, stats = build_pairs(3, candidates, judgements, PairsSection(min_gap=1.0), min_valid=1)
    row = pairs.to_pylist()[0]
    assert pairs.num_rows == 1 and row["id"] == "r03-a-c0-r1"
    assert (row["chosen"], row["rejected"], row["lang"], row["prompt"]) == ("good", "bad", "en", "<u>q a</u>")
    assert row["candidate_scores"] == [4.5, 1.0, 3.0] and row["candidate_judgements"] == [2, 1, 2]
    assert {"id", "prompt", "chosen", "rejected", "lang"} <= set(pairs.column_names)
    assert "reason" not in pairs.column_names and "score" not in pairs.column_names  # the filter adds those
    assert dict(zip(dropped.column("prompt_id").to_pylist(), dropped.column("pair_reason").to_pylist())) == {
        "b": "tie",
        "c": "all_judgements_failed",
    }
    assert stats["reasons"] == {"all_judgements_failed": 1, "ok": 1, "tie": 1} and stats["mean_gap"] == 3.5


def test_round_prompts_rotate_per_language():
    from congrad_ray.selfreward.prompts import round_prompts

    pool = [{"prompt_id": f"{lang}{i}", "lang": lang} for lang in ("en", "fr") for i in range(5)]
    r1, r2, r3 = (round_prompts(pool, t, 2, seed=0) for t in (1, 2, 3))
    for r in (r1, r2, r3):
        assert sorted(p["lang"] for p in r) == ["en", "en", "fr", "fr"]
    ids = [{p["prompt_id"] for p in r} for r in (r1, r2)]
    assert not ids[0] & ids[1]  # consecutive rounds draw new prompts while the pool lasts
    assert round_prompts(pool, 1, 2, seed=0) == r1 and round_prompts(pool, 1, None, 0) == sorted(
        pool, key=lambda p: (p["lang"], p["prompt_id"])
    )


def test_demo_pools(tmp_path, monkeypatch):
    from congrad_ray.selfreward import prompts

    counting = prompts.demo_pool("counting", ["en", "fr", "xx"], 3, 200, seed=0).to_pylist()
    assert [r["lang"] for r in counting] == ["en"] * 3 + ["fr"] * 3 and counting[0]["source"] == "counting"
    assert prompts.demo_pool("counting", ["en"], 3, 200, 0) == prompts.demo_pool("counting", ["en"], 3, 200, 0)
    # prose from a dataset-build-like tree (the real package is optional)
    data = tmp_path / "data" / "fra"
    data.mkdir(parents=True)
    body = "Voici le texte demandé, comme convenu.\n\n### Titre\n\n" + "\n\n".join(
        f"Paragraphe {i}. " + "Une phrase assez longue pour compter comme de la prose française. " * 3 for i in range(6)
    )
    (data / "fra.txt").write_text(body)
    monkeypatch.setattr(prompts, "prose_corpus_dir", lambda: tmp_path / "data")
    prose = prompts.demo_pool("prose", ["fr", "de"], 4, 120, seed=1).to_pylist()
    assert len(prose) == 4 and {r["lang"] for r in prose} == {"fr"}
    assert all(r["prompt"].startswith("Résume le texte suivant") and "Voici" not in r["prompt"] for r in prose)
    assert all(len(r["prompt"].split("\n\n", 1)[1]) <= 120 for r in prose)
    mixed = prompts.demo_pool("auto", ["fr"], 2, 120, seed=1)
    assert set(mixed.column("source").to_pylist()) == {"counting", "prose"}


def test_parquet_pool_reads_prompt_and_lang_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from congrad_ray.errors import InputError
    from congrad_ray.selfreward.prompts import derived_prompt_id, parquet_pool

    pq.write_table(
        pa.table({"text": ["Hi?", "", "Salut ?", "Hi?"], "language": ["en", "en", "fr", "en"]}), tmp_path / "p.parquet"
    )
    pool, skipped = parquet_pool([str(tmp_path)], "text", "language", "id")
    assert pool.column("prompt").to_pylist() == ["Hi?", "Salut ?"] and skipped == 2  # empty + duplicate
    assert pool.column("prompt_id").to_pylist()[0] == derived_prompt_id("en", "Hi?")
    with pytest.raises(InputError, match="lacks column"):
        parquet_pool([str(tmp_path)], "prompt", "lang", "id")
