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
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .languages import TEMPLATES

SCHEMA_VERSION = 1
COLUMNS = ("id", "lang", "split", "prompt", "chosen", "rejected", "is_flipped", "conflict", "corruption")
CONFLICT_KINDS = ("none", "noisy_flip", "systematic")
CORRUPTIONS = ("descending", "skip", "repeat", "swap", "overshoot")
SPLITS = ("train", "heldout")


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
