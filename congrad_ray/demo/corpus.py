"""A seeded, offline, multilingual preference (DPO) benchmark with known conflicts.

One learnable task is phrased in every language: the prompt asks (in language ``l``, one of five paraphrase
templates) to count from ``a`` to ``b``; the answer the task prefers is the ascending sequence of Western digits,
written the same way in every language (``" 3 4 5 6 7"``), so what a small model learns by DPO on some languages
transfers to the others. The dispreferred answer is a corruption of it:

* ``descending``: the sequence reversed (``" 7 6 5 4 3"``);
* ``skip``: one interior number left out (``" 3 4 6 7"``);
* ``repeat``: one number written twice (``" 3 4 4 5 6 7"``);
* ``swap``: two neighbours exchanged (``" 3 5 4 6 7"``);
* ``overshoot``: one number past the end (``" 3 4 5 6 7 8"``).

Known conflicts (ground truth recorded per row; the filter must never read these columns):

* ``noisy_flip``: in the languages of ``CorpusSpec.flip_rate``, exactly ``round(rate * n)`` train pairs have
  chosen/rejected swapped (a noisy judge);
* ``systematic``: in ``CorpusSpec.systematic_language`` every train pair is (descending, ascending) with the
  descending answer chosen, a coherent preference that contradicts the shared task.

Rows (``generate_pairs``) are plain dicts with the columns of ``SCHEMA``: ``id``, ``lang`` (ISO 639-1), ``split``
(``train`` | ``heldout``), ``prompt``, ``chosen``, ``rejected`` (plain strings with no EOS; TRL appends it),
``is_flipped`` (the pair goes against the shared task), ``conflict`` (``none`` | ``noisy_flip`` | ``systematic``)
and ``corruption`` (how the non-task answer of the pair is corrupted, whichever side it is on).

Train pairs exist for the seen languages only. Held-out pairs exist for every language (seen and unseen) and are
always clean. Held-out prompts use number ranges ``(a, b)`` that no train prompt of any language uses, so the
held-out set is disjoint from train by id, by prompt and by (prompt, chosen).

Determinism: row ``i`` of language ``l`` in split ``s`` is a function of ``(seed, l, s, i)`` and the range/template
options only (not of the other languages, nor of the sizes): growing ``pairs_per_language`` appends rows and keeps
the earlier ones. Which train rows are flipped is drawn per language from ``(seed, l)`` and depends on the size.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
COLUMNS = ("id", "lang", "split", "prompt", "chosen", "rejected", "is_flipped", "conflict", "corruption")
CONFLICT_KINDS = ("none", "noisy_flip", "systematic")
CORRUPTIONS = ("descending", "skip", "repeat", "swap", "overshoot")
SPLITS = ("train", "heldout")


@dataclass(frozen=True)
class LanguageInfo:
    """Metadata of a demo language: ISO 639-1 code, English and native names, script and writing direction."""

    code: str
    name: str
    native_name: str
    script: str
    direction: str = "ltr"


DEMO_LANGUAGES: dict[str, LanguageInfo] = {
    info.code: info
    for info in (
        LanguageInfo("en", "English", "English", "Latin"),
        LanguageInfo("fr", "French", "français", "Latin"),
        LanguageInfo("de", "German", "Deutsch", "Latin"),
        LanguageInfo("es", "Spanish", "español", "Latin"),
        LanguageInfo("it", "Italian", "italiano", "Latin"),
        LanguageInfo("pt", "Portuguese", "português", "Latin"),
        LanguageInfo("vi", "Vietnamese", "Tiếng Việt", "Latin"),
        LanguageInfo("sw", "Swahili", "Kiswahili", "Latin"),
        LanguageInfo("ru", "Russian", "русский", "Cyrillic"),
        LanguageInfo("zh", "Chinese (Simplified)", "中文", "Han"),
        LanguageInfo("ja", "Japanese", "日本語", "Japanese"),
        LanguageInfo("ko", "Korean", "한국어", "Hangul"),
        LanguageInfo("ar", "Arabic", "العربية", "Arabic", "rtl"),
        LanguageInfo("hi", "Hindi", "हिन्दी", "Devanagari"),
    )
}

# Five paraphrases per language of "count from {a} to {b}", written natively (not translated word by word). The
# numbers are Western digits in every language (the shared answer tokens); Arabic and Hindi text use them widely.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "en": (
        "Count from {a} to {b}:",
        "List the numbers from {a} to {b} in order:",
        "Write all the whole numbers from {a} up to {b}:",
        "Please count up from {a} to {b}:",
        "Write {a} to {b} in increasing order:",
    ),
    "fr": (
        "Compte de {a} à {b} :",
        "Écris les nombres de {a} à {b} dans l'ordre :",
        "Énumère tous les entiers de {a} à {b} :",
        "Compte jusqu'à {b} en partant de {a} :",
        "Les nombres de {a} à {b}, par ordre croissant :",
    ),
    "de": (
        "Zähle von {a} bis {b}:",
        "Schreibe die Zahlen von {a} bis {b} der Reihe nach:",
        "Nenne alle ganzen Zahlen von {a} bis {b}:",
        "Zähle bitte von {a} aufwärts bis {b}:",
        "Die Zahlen von {a} bis {b}, aufsteigend:",
    ),
    "es": (
        "Cuenta del {a} al {b}:",
        "Escribe los números del {a} al {b} en orden:",
        "Enumera todos los números enteros del {a} al {b}:",
        "Por favor, cuenta desde el {a} hasta el {b}:",
        "Los números del {a} al {b}, en orden creciente:",
    ),
    "it": (
        "Conta da {a} a {b}:",
        "Scrivi i numeri da {a} a {b} in ordine:",
        "Elenca tutti i numeri interi da {a} a {b}:",
        "Per favore, conta da {a} fino a {b}:",
        "I numeri da {a} a {b}, in ordine crescente:",
    ),
    "pt": (
        "Conte de {a} a {b}:",
        "Escreva os números de {a} a {b} em ordem:",
        "Liste todos os números inteiros de {a} a {b}:",
        "Por favor, conte de {a} até {b}:",
        "Os números de {a} a {b}, em ordem crescente:",
    ),
    "vi": (
        "Đếm từ {a} đến {b}:",
        "Liệt kê các số từ {a} đến {b} theo thứ tự:",
        "Viết tất cả các số nguyên từ {a} đến {b}:",
        "Hãy đếm từ {a} đến {b}:",
        "Các số từ {a} đến {b}, theo thứ tự tăng dần:",
    ),
    "sw": (
        "Hesabu kutoka {a} hadi {b}:",
        "Orodhesha namba kutoka {a} hadi {b} kwa mpangilio:",
        "Andika namba zote kamili kutoka {a} hadi {b}:",
        "Tafadhali hesabu kuanzia {a} mpaka {b}:",
        "Taja namba kutoka {a} hadi {b} kwa mpangilio wa kupanda:",
    ),
    "ru": (
        "Посчитай от {a} до {b}:",
        "Перечисли числа от {a} до {b} по порядку:",
        "Напиши все целые числа от {a} до {b}:",
        "Пожалуйста, сосчитай от {a} до {b}:",
        "Числа от {a} до {b} по возрастанию:",
    ),
    "zh": (
        "从{a}数到{b}：",
        "请按顺序列出从{a}到{b}的数字：",
        "写出从{a}到{b}的所有整数：",
        "请从{a}开始数到{b}：",
        "从小到大写出{a}到{b}：",
    ),
    "ja": (
        "{a}から{b}まで数えてください：",
        "{a}から{b}までの数字を順番に書いてください：",
        "{a}から{b}までの整数をすべて挙げてください：",
        "{a}から{b}まで数えて：",
        "{a}から{b}までの数を小さい順に並べてください：",
    ),
    "ko": (
        "{a}부터 {b}까지 세어 보세요:",
        "{a}부터 {b}까지의 숫자를 순서대로 쓰세요:",
        "{a}부터 {b}까지의 정수를 모두 나열하세요:",
        "{a}에서 {b}까지 세어 주세요:",
        "{a}부터 {b}까지 작은 수부터 차례로 쓰세요:",
    ),
    "ar": (
        "عد من {a} إلى {b}:",
        "اكتب الأعداد من {a} إلى {b} بالترتيب:",
        "اذكر جميع الأعداد الصحيحة من {a} إلى {b}:",
        "من فضلك، عد من {a} حتى {b}:",
        "الأعداد من {a} إلى {b} تصاعديًا:",
    ),
    "hi": (
        "{a} से {b} तक गिनती करो:",
        "{a} से {b} तक की संख्याएँ क्रम से लिखो:",
        "{a} से {b} तक के सभी पूर्णांक बताओ:",
        "कृपया {a} से {b} तक गिनिए:",
        "{a} से {b} तक बढ़ते क्रम में लिखो:",
    ),
}


def _default_flip_rate() -> dict[str, float]:
    return {"de": 0.15, "ru": 0.15}


@dataclass(frozen=True)
class CorpusSpec:
    """What ``generate_pairs`` builds. The defaults are the README demo (``default_demo_spec()``).

    * ``seed``: every random choice derives from it (0).
    * ``seen_languages``: languages with train pairs: en fr de es ru zh ar sw (8 languages, 4 scripts).
    * ``unseen_languages``: held-out only, no train data: hi ja (2 languages, 2 further scripts).
    * ``pairs_per_language``: train pairs per seen language (400, so 3,200 train pairs).
    * ``heldout_per_language``: clean held-out pairs per language, seen and unseen (50, so 500).
    * ``flip_rate``: language -> fraction of its train pairs whose labels are swapped ({"de": 0.15, "ru": 0.15});
      the count flipped is exactly ``round(rate * pairs_per_language)``.
    * ``systematic_language``: the seen language whose judge always prefers descending order ("sw"; None for none).
    * ``max_number``: prompts count within 0..``max_number`` (99: one- and two-digit numbers).
    * ``sequence_lengths``: how many numbers an answer has ((3, 4, 5): completions stay <= 16 tiny-BPE tokens).
    * ``heldout_range_fraction``: fraction of the (a, b) ranges reserved for held-out prompts (0.2).
    * ``corruptions``: the corruption kinds drawn (uniformly) for rejected answers (all of ``CORRUPTIONS``).
    """

    seed: int = 0
    seen_languages: tuple[str, ...] = ("en", "fr", "de", "es", "ru", "zh", "ar", "sw")
    unseen_languages: tuple[str, ...] = ("hi", "ja")
    pairs_per_language: int = 400
    heldout_per_language: int = 50
    flip_rate: dict[str, float] = field(default_factory=_default_flip_rate)
    systematic_language: str | None = "sw"
    max_number: int = 99
    sequence_lengths: tuple[int, ...] = (3, 4, 5)
    heldout_range_fraction: float = 0.2
    corruptions: tuple[str, ...] = CORRUPTIONS

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "seen_languages", tuple(self.seen_languages))
        set_(self, "unseen_languages", tuple(self.unseen_languages))
        set_(self, "sequence_lengths", tuple(sorted(set(int(n) for n in self.sequence_lengths))))
        set_(self, "corruptions", tuple(self.corruptions))
        set_(self, "flip_rate", {str(k): float(v) for k, v in sorted(dict(self.flip_rate).items())})
        languages = self.seen_languages + self.unseen_languages
        unknown = [lang for lang in languages if lang not in TEMPLATES]
        if unknown:
            raise ValueError(f"unknown languages {unknown}: use codes from {sorted(TEMPLATES)}")
        if len(set(languages)) != len(languages):
            raise ValueError("a language is listed twice (seen and unseen languages must be disjoint)")
        if not self.seen_languages:
            raise ValueError("at least one seen language is needed")
        if self.pairs_per_language < 0 or self.heldout_per_language < 0:
            raise ValueError("pairs_per_language and heldout_per_language must be >= 0")
        for lang, rate in self.flip_rate.items():
            if lang not in self.seen_languages:
                raise ValueError(f"flip_rate names {lang!r}, which is not a seen language")
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"flip_rate[{lang!r}] = {rate} is outside [0, 1]")
        if self.systematic_language is not None:
            if self.systematic_language not in self.seen_languages:
                raise ValueError(f"systematic_language {self.systematic_language!r} is not a seen language")
            if self.systematic_language in self.flip_rate:
                raise ValueError("the systematic language cannot also have a flip_rate (all its pairs are flipped)")
        if not self.sequence_lengths or self.sequence_lengths[0] < 3:
            raise ValueError("sequence_lengths must be >= 3 (shorter answers cannot carry every corruption)")
        if self.max_number + 1 < self.sequence_lengths[-1] or self.max_number > 9999:
            raise ValueError("max_number must leave room for the longest sequence and stay <= 9999")
        if not 0.0 < self.heldout_range_fraction < 1.0:
            raise ValueError("heldout_range_fraction must be in (0, 1)")
        bad = [c for c in self.corruptions if c not in CORRUPTIONS]
        if bad or not self.corruptions or len(set(self.corruptions)) != len(self.corruptions):
            raise ValueError(f"corruptions must be distinct names from {CORRUPTIONS}, got {self.corruptions}")

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    @property
    def languages(self) -> tuple[str, ...]:
        """Seen languages, then unseen ones."""
        return self.seen_languages + self.unseen_languages

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples become lists); ``CorpusSpec.from_dict`` inverts it."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CorpusSpec:
        return cls(**dict(data))


def default_demo_spec(seed: int = 0) -> CorpusSpec:
    """The README demo: 8 seen languages x 400 train pairs (3,200), 2 unseen, 10 x 50 held-out pairs (500);
    German and Russian have 15 % label flips, Swahili prefers descending order throughout."""
    return CorpusSpec(seed=seed)


# ---------------------------------------------------------------------------------------------------------------
# generation


def _derive(*parts: object) -> int:
    """A 64-bit integer from the parts (sha256 of their repr), stable across processes and Python versions."""
    digest = hashlib.sha256(repr(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def _rng(*parts: object) -> random.Random:
    return random.Random(_derive("congrad-demo", *parts))


def _ranges(spec: CorpusSpec) -> dict[str, list[tuple[int, int]]]:
    """All (a, b) ranges, split into train and held-out ranges (shared by all languages)."""
    ranges = [(a, a + n - 1) for n in spec.sequence_lengths for a in range(0, spec.max_number - n + 2)]
    ranked = sorted(ranges, key=lambda r: (_derive(spec.seed, "range", r[0], r[1]), r))
    n_heldout = min(len(ranked) - 1, max(1, round(spec.heldout_range_fraction * len(ranked))))
    held = sorted(ranked[:n_heldout])
    train = sorted(ranked[n_heldout:])
    return {"train": train, "heldout": held}


def _prompt_stream(spec: CorpusSpec, lang: str, split: str, ranges: Sequence[tuple[int, int]]) -> Iterable[tuple]:
    """(template index, a, b) without repetition until the universe is used up, then another shuffled pass."""
    universe = [(t, a, b) for (a, b) in ranges for t in range(len(TEMPLATES[lang]))]
    epoch = 0
    while True:
        order = list(universe)
        _rng(spec.seed, lang, split, "prompts", epoch).shuffle(order)
        yield from order
        epoch += 1


def _corrupt(seq: list[int], kind: str, rng: random.Random) -> list[int]:
    if kind == "descending":
        return seq[::-1]
    if kind == "skip":
        i = rng.randrange(1, len(seq) - 1)
        return seq[:i] + seq[i + 1 :]
    if kind == "repeat":
        i = rng.randrange(len(seq))
        return seq[: i + 1] + seq[i:]
    if kind == "swap":
        i = rng.randrange(len(seq) - 1)
        return seq[:i] + [seq[i + 1], seq[i]] + seq[i + 2 :]
    if kind == "overshoot":
        return seq + [seq[-1] + 1]
    raise ValueError(f"unknown corruption {kind!r}")


def render_sequence(numbers: Sequence[int]) -> str:
    """The completion text of a sequence: a leading space, then the numbers separated by spaces."""
    return " " + " ".join(str(n) for n in numbers)


def make_id(seed: int, lang: str, split: str, index: int) -> str:
    """The stable id of row ``index`` of ``lang`` in ``split`` for generator seed ``seed``."""
    return f"s{seed}-{lang}-{split}-{index:05d}"


def _rows(spec: CorpusSpec, lang: str, split: str, n: int, ranges: Sequence[tuple[int, int]]) -> list[dict]:
    rows = []
    for index, (t, a, b) in zip(range(n), _prompt_stream(spec, lang, split, ranges)):
        rng = _rng(spec.seed, lang, split, "row", index)
        kind = spec.corruptions[rng.randrange(len(spec.corruptions))]
        good = list(range(a, b + 1))
        bad = _corrupt(good, kind, rng)
        rows.append(
            {
                "id": make_id(spec.seed, lang, split, index),
                "lang": lang,
                "split": split,
                "prompt": TEMPLATES[lang][t].format(a=a, b=b),
                "chosen": render_sequence(good),
                "rejected": render_sequence(bad),
                "is_flipped": False,
                "conflict": "none",
                "corruption": kind,
            }
        )
    return rows


def _apply_conflicts(spec: CorpusSpec, lang: str, rows: list[dict]) -> None:
    """In place: the systematic language prefers descending order; noisy languages flip an exact fraction."""
    if lang == spec.systematic_language:
        for row in rows:
            ascending = row["chosen"]
            descending = render_sequence([int(x) for x in ascending.split()][::-1])
            row.update(
                chosen=descending, rejected=ascending, is_flipped=True, conflict="systematic", corruption="descending"
            )
        return
    rate = spec.flip_rate.get(lang, 0.0)
    n_flip = min(len(rows), round(rate * len(rows)))
    if n_flip == 0:
        return
    picked = _rng(spec.seed, lang, "flips").sample(range(len(rows)), n_flip)
    for i in picked:
        row = rows[i]
        row.update(chosen=row["rejected"], rejected=row["chosen"], is_flipped=True, conflict="noisy_flip")


def generate_pairs(spec: CorpusSpec | None = None) -> list[dict]:
    """All rows of the corpus (pure and deterministic): the train rows of each seen language (in spec order,
    index ascending), then the held-out rows of every language (seen, then unseen)."""
    spec = spec or default_demo_spec()
    ranges = _ranges(spec)
    out: list[dict] = []
    for lang in spec.seen_languages:
        rows = _rows(spec, lang, "train", spec.pairs_per_language, ranges["train"])
        _apply_conflicts(spec, lang, rows)
        out.extend(rows)
    for lang in spec.languages:
        out.extend(_rows(spec, lang, "heldout", spec.heldout_per_language, ranges["heldout"]))
    return out


def demo_tokenizer_corpus(spec: CorpusSpec | None = None, per_template: int = 4) -> list[str]:
    """Text lines covering every template and answer shape, to train a tokenizer that knows the demo's scripts
    (e.g. ``build_tiny_tokenizer(SEED_CORPUS + demo_tokenizer_corpus())``); deterministic."""
    spec = spec or default_demo_spec()
    rng = _rng(spec.seed, "tokenizer-corpus")
    ranges = _ranges(spec)["train"]
    lines = []
    for lang in sorted(TEMPLATES):
        for template in TEMPLATES[lang]:
            for _ in range(per_template):
                a, b = ranges[rng.randrange(len(ranges))]
                lines.append(template.format(a=a, b=b) + render_sequence(range(a, b + 1)))
    return lines


# ---------------------------------------------------------------------------------------------------------------
# summary and writing


def fingerprint(rows: Iterable[Mapping[str, Any]]) -> str:
    """sha256 of the rows' columns in a canonical order (independent of row order)."""
    lines = sorted(json.dumps([row[c] for c in COLUMNS], ensure_ascii=False) for row in rows)
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def summarize(spec: CorpusSpec, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Ground truth: counts per language, split and conflict kind, flipped fractions, and the rows' fingerprint."""
    languages: dict[str, Any] = {}
    for lang in spec.languages:
        info = DEMO_LANGUAGES[lang]
        entry: dict[str, Any] = {
            "name": info.name,
            "script": info.script,
            "role": "seen" if lang in spec.seen_languages else "unseen",
            "expected_conflict": (
                "systematic"
                if lang == spec.systematic_language
                else ("noisy_flip" if spec.flip_rate.get(lang, 0.0) > 0 else "none")
            ),
        }
        for split in SPLITS:
            mine = [r for r in rows if r["lang"] == lang and r["split"] == split]
            counts = {kind: sum(r["conflict"] == kind for r in mine) for kind in CONFLICT_KINDS}
            flipped = sum(bool(r["is_flipped"]) for r in mine)
            entry[split] = {
                "total": len(mine),
                **counts,
                "flipped": flipped,
                "flipped_fraction": flipped / len(mine) if mine else 0.0,
                "corruptions": {c: sum(r["corruption"] == c for r in mine) for c in CORRUPTIONS},
            }
        languages[lang] = entry
    return {
        "schema_version": SCHEMA_VERSION,
        "spec": spec.to_dict(),
        "columns": list(COLUMNS),
        "n_rows": len(rows),
        "n_train": sum(r["split"] == "train" for r in rows),
        "n_heldout": sum(r["split"] == "heldout" for r in rows),
        "n_flipped_train": sum(bool(r["is_flipped"]) for r in rows if r["split"] == "train"),
        "languages": languages,
        "fingerprint": fingerprint(rows),
    }


def arrow_schema() -> Any:
    import pyarrow as pa

    types = {"is_flipped": pa.bool_()}
    return pa.schema([pa.field(c, types.get(c, pa.string()), nullable=False) for c in COLUMNS])


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _atomic_write_parquet(table: Any, path: Path) -> None:
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex}")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_shards(rows: Sequence[Mapping[str, Any]], directory: Path, shards: int) -> list[dict[str, Any]]:
    import pyarrow as pa

    directory.mkdir(parents=True, exist_ok=True)
    n_shards = max(1, min(shards, len(rows)))
    schema = arrow_schema()
    written = []
    for k in range(n_shards):
        lo, hi = k * len(rows) // n_shards, (k + 1) * len(rows) // n_shards
        chunk = rows[lo:hi]
        table = pa.Table.from_pydict({c: [r[c] for r in chunk] for c in COLUMNS}, schema=schema)
        path = directory / f"part-{k:05d}.parquet"
        _atomic_write_parquet(table, path)
        written.append({"path": f"{directory.name}/{path.name}", "rows": len(chunk)})
    # Shards left over from an earlier write with more shards would otherwise be read as data.
    for stale in directory.glob("part-*.parquet"):
        index = stale.name[len("part-") : -len(".parquet")]
        if index.isdigit() and int(index) >= n_shards:
            stale.unlink()
    return written


def write_corpus(
    spec: CorpusSpec | None = None, out_dir: str | os.PathLike = "demo_data", shards: int = 4, heldout_shards: int = 1
) -> dict[str, Any]:
    """Write ``out_dir/train/part-*.parquet`` (train pairs of the seen languages, shuffled with the seed, then cut
    into ``shards`` contiguous shards), ``out_dir/heldout/part-*.parquet`` (clean held-out pairs of all languages)
    and, last, ``out_dir/ground_truth.json`` (``summarize``, plus the files written). Every file is written to a
    temporary name and renamed, so readers never see a partial file; ``ground_truth.json`` marks completion.
    Returns the summary."""
    spec = spec or default_demo_spec()
    if shards < 1 or heldout_shards < 1:
        raise ValueError("shards and heldout_shards must be >= 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = generate_pairs(spec)
    train = [r for r in rows if r["split"] == "train"]
    heldout = [r for r in rows if r["split"] == "heldout"]
    _rng(spec.seed, "shard-order").shuffle(train)
    summary = summarize(spec, rows)
    summary["files"] = {
        "train": _write_shards(train, out / "train", shards),
        "heldout": _write_shards(heldout, out / "heldout", heldout_shards),
    }
    text = json.dumps(summary, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
    _atomic_write_bytes(out / "ground_truth.json", text.encode("utf-8"))
    return summary
