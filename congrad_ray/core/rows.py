"""Row validation: every row gets an id and either passes or gets a reason; nothing raises.

Reasons: ``null_<col>``, ``empty_<col>``, ``wrong_type_<col>``, ``mixed_formats`` (string prompt with message-list
completions or the reverse), ``chosen_equals_rejected``, ``missing_lang``, ``unknown_lang``, ``null_id``,
``invalid_ref_logps``; after tokenisation ``prompt_too_long``; in the sketch stage ``duplicate_id``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RowRules:
    id_column: str
    lang_column: str
    known_langs: frozenset[str] | None  # None: infer (any non-empty language is accepted)
    ref_columns: tuple[str, str] | None  # validated when the run reads reference log-probs from columns


def derived_id(lang: str, prompt: Any, chosen: Any, rejected: Any) -> str:
    """A stable id from the row's content (used when the input has no id column)."""
    canon = json.dumps([lang, prompt, chosen, rejected], ensure_ascii=False, sort_keys=True, default=str)
    return hashlib.sha256(canon.encode()).hexdigest()[:24]


def bucket_of(sample_id: str, buckets: int) -> int:
    """The id-hash bucket: fixed by the id alone, so work units do not depend on the input layout."""
    return int.from_bytes(hashlib.blake2b(sample_id.encode(), digest_size=8).digest(), "little") % buckets


def _text_kind(value: Any) -> str:
    """'text', 'messages', 'null', 'empty' or 'wrong'."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return "text" if value.strip() else "empty"
    if isinstance(value, list | tuple):
        if not value:
            return "empty"
        ok = all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
        )
        return "messages" if ok else "wrong"
    return "wrong"


def check_row(row: dict[str, Any], rules: RowRules) -> tuple[str | None, str | None, str | None]:
    """``(id, lang, reason)``; ``reason`` is None when the row is valid."""
    kinds = {}
    for col in ("prompt", "chosen", "rejected"):
        kinds[col] = _text_kind(row.get(col))
        if kinds[col] in ("null", "empty"):
            return None, None, f"{kinds[col]}_{col}"
        if kinds[col] == "wrong":
            return None, None, f"wrong_type_{col}"
    if len(set(kinds.values())) > 1:
        return None, None, "mixed_formats"
    if row["chosen"] == row["rejected"]:
        return None, None, "chosen_equals_rejected"
    lang = row.get(rules.lang_column)
    if lang is None or (isinstance(lang, str) and not lang.strip()):
        return None, None, "missing_lang"
    if not isinstance(lang, str):
        return None, None, "wrong_type_lang"
    lang = lang.strip()
    if rules.known_langs is not None and lang not in rules.known_langs:
        return None, lang, "unknown_lang"
    if rules.ref_columns is not None:
        for col in rules.ref_columns:
            v = row.get(col)
            if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
                return None, lang, "invalid_ref_logps"
    if rules.id_column in row:
        raw_id = row[rules.id_column]
        if raw_id is None:
            return None, lang, "null_id"
        return str(raw_id), lang, None
    return derived_id(lang, row["prompt"], row["chosen"], row["rejected"]), lang, None
