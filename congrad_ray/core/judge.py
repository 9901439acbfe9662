"""LLM-as-a-judge scores as values: parse a judge's text into a score, average k judgements. No I/O, no Ray.

The judge is asked (additive 5-point prompt, Yuan et al. 2024) to justify briefly and conclude with
``Score: <total points>``. :func:`parse_score` reads that verdict robustly and never guesses: a text it cannot read
unambiguously gets ``score=None`` and a status saying why. The rules, applied in order to a normalised text:

1. **Normalise**: Unicode NFKC (full-width digits and colons become ASCII), every Unicode decimal digit
   (Arabic-Indic, Devanagari, ...) becomes its ASCII digit, Markdown emphasis (``*``, ``_``, backticks) is removed,
   ``,`` between digits reads as a decimal point (``3,5`` = 3.5).
2. **Labelled verdict**: ``<label> [(...)] [:|=|-] <number> [/ <max> | out of <max>] [points]`` where ``<label>``
   is "score" or its equivalent in the judge's language (:data:`SCORE_LABELS`). When several appear, the **last**
   one is the verdict (the prompt asks the judge to conclude with it; per-criterion remarks come before).
   A denominator other than the scale's maximum gives ``wrong_scale``; a value outside the scale gives
   ``out_of_range``.
3. **Fraction**: without a label, ``<number>/<max>`` (or ``<number> out of <max>``, and the same in a few
   languages): all such fractions must agree (else ``ambiguous``); fractions over another denominator only give
   ``wrong_scale``.
4. **Bare number**: a text that is just one number (``"4"``, ``"4."``) is that number.
5. Anything else: ``no_score`` (no number at all, or numbers with no label: "3 or 4", "criteria 1 and 2").

An empty text is ``empty``. Statuses: ``ok``, ``empty``, ``no_score``, ``ambiguous``, ``out_of_range``,
``wrong_scale``.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

STATUSES = ("ok", "empty", "no_score", "ambiguous", "out_of_range", "wrong_scale")

# "score" in the judge's language; matched case-insensitively as a whole word (or a CJK run).
SCORE_LABELS = (
    "total score",
    "final score",
    "overall score",
    "score",
    "rating",
    "note finale",
    "punktzahl",
    "gesamtpunktzahl",
    "bewertung",
    "puntuación",
    "puntuacion",
    "calificación",
    "pontuação",
    "pontuacao",
    "punteggio",
    "итоговая оценка",
    "оценка",
    "балл",
    "баллы",
    "alama",
    "điểm",
    "स्कोर",
    "अंक",
    "الدرجة",
    "النتيجة",
    "التقييم",
    "总分",
    "得分",
    "分数",
    "评分",
    "スコア",
    "点数",
    "評価",
    "점수",
)
_OUT_OF = r"(?:/|out\s+of|sur|von|de|su|из|trên|kati\s+ya|من)"
_NUM = r"(\d+(?:\.\d+)?)"
_CJK = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff\uac00-\ud7af]")


def _label_pattern(labels: tuple[str, ...]) -> str:
    """Words of spaced scripts must start a word; CJK labels may follow other characters directly."""
    ordered = sorted(labels, key=len, reverse=True)
    words = "|".join(re.escape(x) for x in ordered if not _CJK.match(x))
    cjk = "|".join(re.escape(x) for x in ordered if _CJK.match(x))
    return rf"(?:(?<![^\W\d_])(?:{words})|(?:{cjk}))"


_LABELLED = re.compile(
    rf"{_label_pattern(SCORE_LABELS)}\s*(?:\([^)]*\)\s*)?(?:\s(?:of|is)\s)?\s*[:=\-–—]?\s*{_NUM}"
    rf"(?:\s*{_OUT_OF}\s*{_NUM})?",
    re.IGNORECASE,
)
_FRACTION = re.compile(rf"{_NUM}\s*{_OUT_OF}\s*{_NUM}", re.IGNORECASE)
_BARE = re.compile(rf"^\s*{_NUM}\s*(?:points?|pts?)?\s*[.!]?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class ParsedScore:
    """One judgement: ``score`` is None unless ``status == "ok"``."""

    score: float | None
    status: str


@dataclass(frozen=True)
class ScoreSummary:
    """k judgements of one candidate: the mean of the readable ones (None when fewer than ``min_valid``)."""

    mean: float | None
    n_valid: int
    n_failed: int


def normalize(text: str) -> str:
    """Rule 1 of the module docstring."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(str(unicodedata.decimal(ch)) if ch.isdecimal() and not ch.isascii() else ch for ch in text)
    text = re.sub(r"[*_`]+", "", text)
    return re.sub(r"(?<=\d),(?=\d)", ".", text)


def _in_scale(value: float, low: float, high: float) -> ParsedScore:
    if low <= value <= high:
        return ParsedScore(value, "ok")
    return ParsedScore(None, "out_of_range")


def parse_score(text: str | None, low: float = 0, high: float = 5) -> ParsedScore:
    """Read the judge's verdict on the scale ``[low, high]`` (rules in the module docstring)."""
    if text is None or not text.strip():
        return ParsedScore(None, "empty")
    norm = normalize(text)
    labelled = list(_LABELLED.finditer(norm))
    if labelled:
        value, denominator = labelled[-1].group(1), labelled[-1].group(2)
        if denominator is not None and float(denominator) != high:
            return ParsedScore(None, "wrong_scale")
        return _in_scale(float(value), low, high)
    fractions = [(float(a), float(b)) for a, b in _FRACTION.findall(norm)]
    if fractions:
        on_scale = {a for a, b in fractions if b == high}
        if not on_scale:
            return ParsedScore(None, "wrong_scale")
        if len(on_scale) > 1:
            return ParsedScore(None, "ambiguous")
        return _in_scale(on_scale.pop(), low, high)
    bare = _BARE.match(norm)
    if bare:
        return _in_scale(float(bare.group(1)), low, high)
    return ParsedScore(None, "no_score")


def summarize_scores(scores: Sequence[float | None], min_valid: int = 1) -> ScoreSummary:
    """Average the readable judgements of one candidate; a failed one is left out, never replaced by a guess.

    ``mean`` is None when fewer than ``min_valid`` (>= 1) judgements were readable.
    """
    valid = [float(s) for s in scores if s is not None and math.isfinite(s)]
    n_failed = len(scores) - len(valid)
    if len(valid) < max(1, min_valid):
        return ScoreSummary(None, len(valid), n_failed)
    return ScoreSummary(sum(valid) / len(valid), len(valid), n_failed)
