"""Row validity, shared by the filter and the DPO step: every row gets an id and either passes or gets a reason;
nothing raises.

Reasons, in the order they are checked: ``invalid_utf8_<col>`` (a string that is not UTF-8; pyarrow does not
validate strings on read), ``null_<col>``, ``empty_<col>``, ``wrong_type_<col>``, ``mixed_formats`` (a string
prompt with message-list completions or the reverse), ``chosen_equals_rejected``, ``missing_lang``,
``wrong_type_lang``, ``unknown_lang``, ``invalid_ref_logps``, ``null_id``; after tokenisation
(:func:`check_tokens`) ``empty_completion`` and ``prompt_too_long``; in the filter's sketch stage ``duplicate_id``.

Language codes are canonicalised (:func:`canonical_lang`) before anything else looks at them, so ``"EN"``,
``" en "`` and ``"en"`` are one language.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import pyarrow as pa


@dataclass(frozen=True)
class RowRules:
    id_column: str
    lang_column: str
    known_langs: frozenset[str] | None  # canonical codes; None: infer (any non-empty language is accepted)
    ref_columns: tuple[str, str] | None  # validated when the run reads reference log-probs from columns


def canonical_lang(code: str) -> str:
    """A language code in BCP 47 case: trimmed, ``_`` read as ``-``, the language subtag lower-case, a script
    (4 letters) title-case, a region (2 letters or 3 digits) upper-case, anything else lower-case, and everything
    after a singleton (``x-``, ``u-``, ...) lower-case: ``" EN_us "`` -> ``"en-US"``, ``"ZH-hant-tw"`` ->
    ``"zh-Hant-TW"``."""
    first, *rest = code.strip().replace("_", "-").split("-")
    out = [first.lower()]
    extension = len(first) == 1
    for part in rest:
        extension = extension or len(part) == 1
        if extension:
            out.append(part.lower())
        elif len(part) == 4 and part.isalpha():
            out.append(part.title())
        elif (len(part) == 2 and part.isalpha()) or (len(part) == 3 and part.isdigit()):
            out.append(part.upper())
        else:
            out.append(part.lower())
    return "-".join(out)


def derived_id(lang: str, prompt: Any, chosen: Any, rejected: Any) -> str:
    """A stable id from the row's content (used when the input has no id column)."""
    canon = json.dumps([lang, prompt, chosen, rejected], ensure_ascii=False, sort_keys=True, default=str)
    return hashlib.sha256(canon.encode()).hexdigest()[:24]


def bucket_of(sample_id: str, buckets: int) -> int:
    """The id-hash bucket: fixed by the id alone, so work units do not depend on the input layout."""
    return int.from_bytes(hashlib.blake2b(sample_id.encode(), digest_size=8).digest(), "little") % buckets


def decode_rows(table: pa.Table) -> tuple[list[dict[str, Any] | None], list[str | None]]:
    """The table's rows as Python values, and per row ``invalid_utf8_<col>`` when one of its strings (in any column,
    nested ones included) is not UTF-8; such a row is ``None``. Columns are validated whole first, so the per-row
    search only runs on a column that holds a bad string."""
    bad: dict[int, str] = {}
    for name, column in zip(table.column_names, table.columns):
        try:
            column.validate(full=True)
            continue
        except pa.ArrowInvalid:
            pass
        for i in range(len(column)):
            if i not in bad:
                try:
                    column.slice(i, 1).validate(full=True)
                except pa.ArrowInvalid:
                    bad[i] = f"invalid_utf8_{name}"
    if not bad:
        return table.to_pylist(), [None] * table.num_rows
    good = iter(table.filter(pa.array([i not in bad for i in range(table.num_rows)])).to_pylist())
    rows = [None if i in bad else next(good) for i in range(table.num_rows)]
    return rows, [bad.get(i) for i in range(table.num_rows)]


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
    """``(id, lang, reason)`` with ``lang`` canonical; ``reason`` is None when the row is valid."""
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
    lang = canonical_lang(lang)
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


def check_tokens(
    prompt_len: int, chosen_len: int, rejected_len: int, max_length: int | None, truncation: str
) -> str | None:
    """The reason a tokenised pair cannot be trained on, or None: ``empty_completion`` when a completion has no
    token (e.g. a chat template that renders no assistant turn), ``prompt_too_long`` when ``keep_start`` truncation
    to ``max_length`` would leave no completion token (TRL drops such rows)."""
    if not chosen_len or not rejected_len:
        return "empty_completion"
    if max_length is not None and truncation == "keep_start" and prompt_len >= max_length:
        return "prompt_too_long"
    return None
